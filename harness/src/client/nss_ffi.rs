//! The few NSS/NSPR calls the NSS stack needs, bound by hand: no maintained crate binds
//! NSS's TLS over TCP. Runs only inside the NSS worker processes (see `nss.rs`), because NSS
//! keeps one process-wide certificate database: a worker opens the attempt's database, runs
//! the attempt, and shuts NSS down completely before the next one.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::IntoRawFd;
use std::sync::Mutex;

type SecStatus = c_int;
const SEC_SUCCESS: SecStatus = 0;
const SEC_FAILURE: SecStatus = -1;
type PrBool = c_int;

#[repr(C)]
pub struct PrFileDesc {
    _private: [u8; 0],
}
#[repr(C)]
struct CertCertificate {
    _private: [u8; 0],
}
#[repr(C)]
struct SecItem {
    kind: c_int,
    data: *mut u8,
    len: u32,
}
#[repr(C)]
struct VersionRange {
    min: u16,
    max: u16,
}

type AuthHook = extern "C" fn(*mut c_void, *mut PrFileDesc, PrBool, PrBool) -> SecStatus;
type PasswordFunc = extern "C" fn(*mut c_void, PrBool, *mut c_void) -> *mut c_char;

#[link(name = "nss3")]
extern "C" {
    fn NSS_GetVersion() -> *const c_char;
    fn NSS_IsInitialized() -> c_int;
    fn NSS_InitContext(
        dir: *const c_char,
        cert_prefix: *const c_char,
        key_prefix: *const c_char,
        secmod: *const c_char,
        params: *mut c_void,
        flags: u32,
    ) -> *mut c_void;
    fn NSS_ShutdownContext(ctx: *mut c_void) -> SecStatus;
    fn PK11_SetPasswordFunc(f: PasswordFunc);
    fn PORT_Strdup(s: *const c_char) -> *mut c_char;
    fn CERT_GetDefaultCertDB() -> *mut c_void;
    fn CERT_VerifyCertificateNow(
        db: *mut c_void,
        cert: *mut CertCertificate,
        check_sig: PrBool,
        required_usages: i64,
        wincx: *mut c_void,
        returned_usages: *mut i64,
    ) -> SecStatus;
    fn CERT_VerifyCertName(cert: *const CertCertificate, hostname: *const c_char) -> SecStatus;
    fn CERT_DestroyCertificate(cert: *mut CertCertificate);
}

#[link(name = "ssl3")]
extern "C" {
    fn NSS_SetDomesticPolicy() -> SecStatus;
    fn SSL_ImportFD(model: *mut PrFileDesc, fd: *mut PrFileDesc) -> *mut PrFileDesc;
    fn SSL_OptionSet(fd: *mut PrFileDesc, option: c_int, on: PrBool) -> SecStatus;
    fn SSL_VersionRangeSet(fd: *mut PrFileDesc, range: *const VersionRange) -> SecStatus;
    fn SSL_SetURL(fd: *mut PrFileDesc, url: *const c_char) -> SecStatus;
    fn SSL_AuthCertificateHook(fd: *mut PrFileDesc, f: AuthHook, arg: *mut c_void) -> SecStatus;
    fn SSL_GetClientAuthDataHook(
        fd: *mut PrFileDesc,
        f: *const c_void,
        arg: *mut c_void,
    ) -> SecStatus;
    fn NSS_GetClientAuthData(
        arg: *mut c_void,
        fd: *mut PrFileDesc,
        ca_names: *mut c_void,
        cert: *mut *mut c_void,
        key: *mut *mut c_void,
    ) -> SecStatus;
    fn SSL_ResetHandshake(fd: *mut PrFileDesc, as_server: PrBool) -> SecStatus;
    fn SSL_ForceHandshake(fd: *mut PrFileDesc) -> SecStatus;
    fn SSL_PeerCertificate(fd: *mut PrFileDesc) -> *mut CertCertificate;
    fn SSL_ClearSessionCache();
}

#[link(name = "nspr4")]
extern "C" {
    fn PR_ImportTCPSocket(osfd: c_int) -> *mut PrFileDesc;
    fn PR_Close(fd: *mut PrFileDesc) -> c_int;
    fn PR_Read(fd: *mut PrFileDesc, buf: *mut c_void, amount: i32) -> i32;
    fn PR_Write(fd: *mut PrFileDesc, buf: *const c_void, amount: i32) -> i32;
    fn PR_GetError() -> i32;
    fn PR_ErrorToName(code: i32) -> *const c_char;
    fn PR_ErrorToString(code: i32, language: u32) -> *const c_char;
}

const SSL_SECURITY: c_int = 1;
const SSL_HANDSHAKE_AS_CLIENT: c_int = 5;
const SSL_NO_CACHE: c_int = 9;
/// `certificateUsageSSLServer` (certt.h), a bit of `SECCertificateUsage`.
const CERTIFICATE_USAGE_SSL_SERVER: i64 = 0x0002;
const NSS_INIT_READONLY: u32 = 0x1;
/// Offset of `derCert` in `CERTCertificate` (arena, subjectName, issuerName, signatureWrap),
/// identical on every 64-bit NSS 3.x; checked against cert.h on this machine.
const DER_CERT_OFFSET: usize = 120;

/// How much of the server certificate to check (libpq's sslmode semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// The open database's password (each attempt's own).
static PASSWORD: Mutex<Option<CString>> = Mutex::new(None);

extern "C" fn password(_slot: *mut c_void, retry: PrBool, _arg: *mut c_void) -> *mut c_char {
    // A wrong password is not retried: NSS would ask forever.
    let pw = PASSWORD.lock().ok().and_then(|p| p.clone());
    match pw {
        Some(pw) if retry == 0 => unsafe { PORT_Strdup(pw.as_ptr()) },
        _ => std::ptr::null_mut(),
    }
}

/// The NSS error that is pending, as `NAME: text`.
pub fn last_error() -> String {
    unsafe {
        let code = PR_GetError();
        let name = PR_ErrorToName(code);
        let text = PR_ErrorToString(code, 0);
        let s = |p: *const c_char| {
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let name = if name.is_null() {
            format!("NSS error {code}")
        } else {
            s(name)
        };
        format!("{name}: {}", s(text))
    }
}

/// Keeps NSS's PKCS #11 module (softoken) and its crypto library (freebl) loaded for the life
/// of this process. NSS loads both when it opens a database and unloads them when it shuts
/// down, and freebl runs its power-up self-tests (RSA, ECDSA, DH, hashes...) each time it is
/// loaded: an NSS worker opening a database per attempt paid that on every attempt. Loaded
/// with RTLD_NODELETE, later loads by NSS find them in place; their state is still reset by
/// the module's own finalize and initialize.
pub fn pin_modules() {
    for lib in [c"libfreeblpriv3.so", c"libsoftokn3.so"] {
        // SAFETY: dlopen of a library NSS itself loads; the handle is deliberately leaked.
        unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_NODELETE) };
    }
}

/// NSS opened on one database; [`Context::shutdown`] closes it again.
pub struct Context(*mut c_void);

/// Opens the attempt's database (read-only) for this process.
pub fn init(db: &str, db_password: Option<&str>) -> Result<Context, String> {
    let pw = db_password
        .map(CString::new)
        .transpose()
        .map_err(|e| e.to_string())?;
    *PASSWORD.lock().map_err(|e| e.to_string())? = pw;
    let dir = CString::new(db).map_err(|e| e.to_string())?;
    let empty = c"";
    unsafe {
        PK11_SetPasswordFunc(password);
        let ctx = NSS_InitContext(
            dir.as_ptr(),
            empty.as_ptr(),
            empty.as_ptr(),
            empty.as_ptr(),
            std::ptr::null_mut(),
            NSS_INIT_READONLY,
        );
        if ctx.is_null() {
            return Err(format!("NSS_InitContext({db}): {}", last_error()));
        }
        if NSS_SetDomesticPolicy() != SEC_SUCCESS {
            let e = format!("NSS_SetDomesticPolicy: {}", last_error());
            NSS_ShutdownContext(ctx);
            return Err(e);
        }
        Ok(Context(ctx))
    }
}

impl Context {
    /// Shuts NSS down: the database, its certificate cache (certificates servers sent) and
    /// sessions all go, so the next attempt starts as in a new process. Fails (NSS is then
    /// unusable here) while something still holds an NSS object.
    pub fn shutdown(self) -> Result<(), String> {
        unsafe {
            SSL_ClearSessionCache();
            if NSS_ShutdownContext(self.0) != SEC_SUCCESS {
                return Err(format!("NSS_ShutdownContext: {}", last_error()));
            }
        }
        *PASSWORD.lock().map_err(|e| e.to_string())? = None;
        Ok(())
    }
}

/// A TLS connection NSS owns; closed when dropped.
pub struct Conn {
    fd: *mut PrFileDesc,
    /// The socket under it, to wake a thread blocked reading it ([`Conn::shutdown`]).
    osfd: c_int,
}

impl Drop for Conn {
    fn drop(&mut self) {
        unsafe { PR_Close(self.fd) };
    }
}

// The NSS socket is used by one reader thread and one writer thread; NSS's SSL layer locks
// its send and receive sides separately for exactly this.
unsafe impl Send for Conn {}
unsafe impl Sync for Conn {}

impl Conn {
    pub fn read(&self, buf: &mut [u8]) -> Result<usize, String> {
        let n = unsafe { PR_Read(self.fd, buf.as_mut_ptr().cast(), buf.len() as i32) };
        if n < 0 {
            Err(last_error())
        } else {
            Ok(n as usize)
        }
    }

    pub fn write_all(&self, mut buf: &[u8]) -> Result<(), String> {
        while !buf.is_empty() {
            let n = unsafe { PR_Write(self.fd, buf.as_ptr().cast(), buf.len() as i32) };
            if n <= 0 {
                return Err(last_error());
            }
            buf = &buf[n as usize..];
        }
        Ok(())
    }

    /// Ends the connection in both directions at the socket, so that a thread blocked in
    /// [`Conn::read`] returns (NSS's own shutdown would wait for that thread's lock).
    pub fn shutdown(&self) {
        unsafe { libc::shutdown(self.osfd, libc::SHUT_RDWR) };
    }

    /// The server certificate's DER encoding.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        unsafe {
            let cert = SSL_PeerCertificate(self.fd);
            if cert.is_null() {
                return None;
            }
            let item = &*(cert.cast::<u8>().add(DER_CERT_OFFSET) as *const SecItem);
            let der = std::slice::from_raw_parts(item.data, item.len as usize).to_vec();
            CERT_DestroyCertificate(cert);
            Some(der)
        }
    }
}

struct AuthCtx {
    verify: Verify,
    host: CString,
}

/// The check PostgreSQL's NSS support makes (`pg_cert_auth_handler`): the chain with
/// `CERT_VerifyCertificateNow` (trust flags and CRLs in the database, SSL server usage), then
/// for verify-full the name with `CERT_VerifyCertName`. Not `SSL_AuthCertificate`: it cannot
/// leave the name out, and it builds the chain otherwise (with the certificates the server
/// sent, where NSS 3.110's `CERT_VerifyCertificateNow` does not).
extern "C" fn auth_certificate(
    arg: *mut c_void,
    fd: *mut PrFileDesc,
    check_sig: PrBool,
    _is_server: PrBool,
) -> SecStatus {
    let ctx = unsafe { &*(arg as *const AuthCtx) };
    if ctx.verify == Verify::Nothing {
        return SEC_SUCCESS;
    }
    unsafe {
        let cert = SSL_PeerCertificate(fd);
        if cert.is_null() {
            return SEC_FAILURE;
        }
        let mut rv = CERT_VerifyCertificateNow(
            CERT_GetDefaultCertDB(),
            cert,
            check_sig,
            CERTIFICATE_USAGE_SSL_SERVER,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        if rv == SEC_SUCCESS && ctx.verify == Verify::ChainAndName {
            rv = CERT_VerifyCertName(cert, ctx.host.as_ptr());
        }
        CERT_DestroyCertificate(cert);
        rv
    }
}

/// TLS versions as NSS numbers them.
pub fn version_number(name: &str) -> Option<u16> {
    Some(match name.to_ascii_lowercase().as_str() {
        "tlsv1" => 0x0301,
        "tlsv1.1" => 0x0302,
        "tlsv1.2" => 0x0303,
        "tlsv1.3" => 0x0304,
        _ => return None,
    })
}

/// Whether NSS is initialised in this process (a context some connection left open).
pub fn is_initialized() -> bool {
    // SAFETY: a plain query of NSS's global state.
    unsafe { NSS_IsInitialized() != 0 }
}

/// The version of the libnss3 this process loaded, as `3.87.1` (needs no initialisation).
pub fn version() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    let v = unsafe { NSS_GetVersion() };
    if v.is_null() {
        return "unknown".into();
    }
    // SAFETY: non-null, static, NUL-terminated.
    let v = unsafe { std::ffi::CStr::from_ptr(v) }.to_string_lossy();
    // "3.87.1" possibly followed by a suffix such as " Basic ECC".
    v.split_whitespace().next().unwrap_or("unknown").to_string()
}

/// Runs an NSS client handshake over an already connected socket (after SSLRequest).
pub fn handshake(
    socket: std::net::TcpStream,
    host: &str,
    verify: Verify,
    nickname: Option<&str>,
    versions: (u16, u16),
) -> Result<Conn, String> {
    let host = CString::new(host).map_err(|e| e.to_string())?;
    // Leaked on purpose (a few bytes per attempt): NSS may call the hooks until the socket
    // closes, which can be after this function returns.
    let ctx: &'static AuthCtx = Box::leak(Box::new(AuthCtx {
        verify,
        host: host.clone(),
    }));
    let nickname: *mut c_char = match nickname {
        Some(n) => CString::new(n).map_err(|e| e.to_string())?.into_raw(),
        None => std::ptr::null_mut(),
    };
    unsafe {
        let osfd = socket.into_raw_fd();
        let tcp = PR_ImportTCPSocket(osfd);
        if tcp.is_null() {
            libc::close(osfd);
            return Err(format!("PR_ImportTCPSocket: {}", last_error()));
        }
        let fd = SSL_ImportFD(std::ptr::null_mut(), tcp);
        if fd.is_null() {
            PR_Close(tcp);
            return Err(format!("SSL_ImportFD: {}", last_error()));
        }
        // From here `conn` owns the descriptor: every return closes it.
        let conn = Conn { fd, osfd };
        let range = VersionRange {
            min: versions.0,
            max: versions.1,
        };
        // No session resumption: every attempt verifies the server afresh.
        let ok = SSL_OptionSet(fd, SSL_SECURITY, 1) == SEC_SUCCESS
            && SSL_OptionSet(fd, SSL_HANDSHAKE_AS_CLIENT, 1) == SEC_SUCCESS
            && SSL_OptionSet(fd, SSL_NO_CACHE, 1) == SEC_SUCCESS
            && SSL_VersionRangeSet(fd, &range) == SEC_SUCCESS
            && SSL_SetURL(fd, host.as_ptr()) == SEC_SUCCESS
            && SSL_AuthCertificateHook(fd, auth_certificate, ctx as *const AuthCtx as *mut c_void)
                == SEC_SUCCESS
            && SSL_GetClientAuthDataHook(
                fd,
                NSS_GetClientAuthData as *const c_void,
                nickname.cast(),
            ) == SEC_SUCCESS
            && SSL_ResetHandshake(fd, 0) == SEC_SUCCESS;
        if !ok {
            return Err(format!("configuring the NSS socket: {}", last_error()));
        }
        if SSL_ForceHandshake(fd) != SEC_SUCCESS {
            return Err(last_error());
        }
        Ok(conn)
    }
}

//! libpq, in-process through pq-sys: the reference client. Non-blocking connect with poll(2)
//! so every attempt is bounded by its deadline without a thread per wait.

use super::error_table::ErrorTable;
use super::{server_messages, ClientStack, ConnectRequest};
use crate::error_class::ErrorClass;
use crate::facts::ClientFacts;
use crate::outcome::{Outcome, Session};
use futures_util::future::BoxFuture;
use pq_sys as pq;
use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::sync::Arc;
use std::time::Instant;

/// The libpq client stack.
pub struct Libpq {
    facts: ClientFacts,
    errors: Arc<ErrorTable>,
    /// The connection keywords the loaded libpq knows.
    options: Vec<String>,
    /// Set when the loaded libpq is built with NSS: it takes trust anchors, CRLs and the
    /// client certificate only from an NSS database, derived here from the PEM options.
    nss: Option<super::nss::NssDbs>,
}

thread_local! {
    /// sslpassword of the attempt running on this thread, for the key passphrase hook.
    static KEY_PASSWORD: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Replaces libpq's default hook, which would prompt on the terminal when no sslpassword is
/// given: here the answer is the attempt's sslpassword or nothing.
unsafe extern "C" fn key_password_hook(
    buf: *mut c_char,
    size: c_int,
    _conn: *mut pq::PGconn,
) -> c_int {
    KEY_PASSWORD.with(|p| match p.borrow().as_ref() {
        Some(pw) => {
            let bytes = pw.as_bytes();
            if bytes.len() + 1 > size as usize {
                return 0;
            }
            // SAFETY: buf has `size` bytes; we write len+1 <= size.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, buf, bytes.len());
                *buf.add(bytes.len()) = 0;
            }
            bytes.len() as c_int
        }
        None => 0,
    })
}

impl Libpq {
    /// `errors`: the stack's `errors.toml`. Fails only when a libpq built with NSS is loaded
    /// and its database cache cannot be created.
    pub fn new(errors: ErrorTable) -> anyhow::Result<Self> {
        // SAFETY: plain getters and a process-wide hook set before any connection exists.
        let (version, library) = unsafe {
            pq::PQsetSSLKeyPassHook_OpenSSL(Some(key_password_hook));
            let v = pq::PQlibVersion();
            let lib = pq::PQsslAttribute(std::ptr::null_mut(), c"library".as_ptr());
            let lib = if lib.is_null() {
                None
            } else {
                Some(CStr::from_ptr(lib).to_string_lossy().to_lowercase())
            };
            (v, lib)
        };
        let options = conninfo_keywords();
        // Before 15, and in the NSS build, libpq names its library only on a connection; the
        // NSS build is the one that knows `ssldatabase`.
        let nss_build = options.iter().any(|o| o == "ssldatabase");
        let library = match library {
            Some(l) => l,
            None if nss_build => "nss".into(),
            None => "openssl".into(),
        };
        let (tls_version, nss) = if library == "nss" {
            (super::nss_ffi::version(), Some(super::nss::NssDbs::new()?))
        } else {
            (super::openssl_version(), None)
        };
        let libpq_version = if version >= 100000 {
            format!("{}.{}", version / 10000, version % 10000)
        } else {
            format!(
                "{}.{}.{}",
                version / 10000,
                (version / 100) % 100,
                version % 100
            )
        };
        Ok(Libpq {
            errors: Arc::new(errors),
            facts: ClientFacts {
                name: "libpq".into(),
                tls_library: library,
                tls_version,
                libpq_version,
            },
            options,
            nss,
        })
    }
}

/// The keywords of `PQconndefaults`.
fn conninfo_keywords() -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: PQconndefaults returns an array ended by a NULL keyword, freed once below.
    unsafe {
        let defaults = pq::PQconndefaults();
        if defaults.is_null() {
            return out;
        }
        let mut opt = defaults;
        while !(*opt).keyword.is_null() {
            out.push(
                CStr::from_ptr((*opt).keyword)
                    .to_string_lossy()
                    .into_owned(),
            );
            opt = opt.add(1);
        }
        pq::PQconninfoFree(defaults);
    }
    out
}

impl ClientStack for Libpq {
    fn facts(&self) -> &ClientFacts {
        &self.facts
    }

    fn options(&self) -> Vec<String> {
        self.options.clone()
    }

    /// NSS keeps one certificate store per process: a database opened by one connection
    /// (its tokens all named `postgres`, its trust) is still there for the next when NSS
    /// could not shut down in between.
    fn one_attempt_at_a_time(&self) -> bool {
        self.nss.is_some()
    }

    fn tainted(&self) -> bool {
        self.nss.is_some() && super::nss_ffi::is_initialized()
    }

    fn connect(&self, request: ConnectRequest) -> BoxFuture<'static, Outcome> {
        let (errors, nss) = (self.errors.clone(), self.nss.clone());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || connect_blocking(&request, errors, nss.as_ref()))
                .await
                .unwrap_or_else(|e| {
                    Outcome::failed(
                        ErrorClass::Unclassified,
                        format!("libpq attempt panicked: {e}"),
                    )
                })
        })
    }
}

/// Owns a PGconn and finishes it on every path; classifies its errors.
struct Conn(*mut pq::PGconn, Arc<ErrorTable>);

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: pointer came from PQconnectStartParams and is finished exactly once.
        unsafe { pq::PQfinish(self.0) }
    }
}

impl Conn {
    fn failed(&self, msg: &str) -> Outcome {
        classify(&self.1, msg)
    }

    fn error(&self) -> String {
        // SAFETY: valid conn; libpq returns a NUL-terminated string owned by the conn.
        unsafe {
            CStr::from_ptr(pq::PQerrorMessage(self.0))
                .to_string_lossy()
                .into_owned()
        }
    }

    /// Waits until the socket is ready for `write` or read, or the deadline passes.
    fn wait(&self, write: bool, deadline: Instant) -> Result<(), Outcome> {
        // SAFETY: valid conn.
        let fd = unsafe { pq::PQsocket(self.0) };
        if fd < 0 {
            return Err(self.failed(&self.error()));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Outcome::failed(
                    ErrorClass::Timeout,
                    "deadline passed while waiting for the server",
                ));
            }
            let mut pfd = libc::pollfd {
                fd,
                events: if write { libc::POLLOUT } else { libc::POLLIN },
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc =
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
            if rc > 0 {
                return Ok(());
            }
            if rc < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return Err(Outcome::failed(
                    ErrorClass::IoError,
                    std::io::Error::last_os_error().to_string(),
                ));
            }
        }
    }
}

/// libpq would otherwise read ~/.postgresql/{postgresql.crt,postgresql.key,root.crt,root.crl},
/// ~/.pgpass and try GSSAPI first: pin all of that down unless the case sets it.
const ISOLATION_DEFAULTS: &[(&str, &str)] = &[
    (
        "sslcert",
        "/nonexistent/pgssl-home/.postgresql/postgresql.crt",
    ),
    (
        "sslkey",
        "/nonexistent/pgssl-home/.postgresql/postgresql.key",
    ),
    (
        "sslrootcert",
        "/nonexistent/pgssl-home/.postgresql/root.crt",
    ),
    ("sslcrl", "/nonexistent/pgssl-home/.postgresql/root.crl"),
    ("passfile", "/nonexistent/pgssl-home/.pgpass"),
    ("gssencmode", "disable"),
];

/// What a libpq built with NSS reads of [`ISOLATION_DEFAULTS`]: it takes no PEM files.
const NON_FILE_DEFAULTS: &[(&str, &str)] = &[
    ("passfile", "/nonexistent/pgssl-home/.pgpass"),
    ("gssencmode", "disable"),
];

/// Adds [`ISOLATION_DEFAULTS`] the case does not set: every libpq stack pgssl drives itself
/// (in process, and psql in a server build's image) connects with them.
pub(crate) fn isolate(request: &mut ConnectRequest) {
    isolate_from(request, ISOLATION_DEFAULTS)
}

fn isolate_from(request: &mut ConnectRequest, defaults: &[(&str, &str)]) {
    for (k, v) in defaults {
        // libpq hands file and directory to OpenSSL together; a missing file would disable
        // the directory as well, so no CRL file default when the case names a directory.
        let crl_dir_given = *k == "sslcrl" && request.get("sslcrldir").is_some();
        if request.get(k).is_none() && !crl_dir_given {
            request.params.push((k.to_string(), v.to_string()));
        }
    }
}

fn connect_blocking(
    request: &ConnectRequest,
    errors: Arc<ErrorTable>,
    nss: Option<&super::nss::NssDbs>,
) -> Outcome {
    let mut request = request.clone();
    match nss {
        Some(dbs) => {
            request.params = match dbs.libpq_params(&request) {
                Ok(p) => p,
                Err(outcome) => return outcome,
            };
            isolate_from(&mut request, NON_FILE_DEFAULTS);
        }
        None => isolate(&mut request),
    }
    let request = &request;
    let deadline = Instant::now() + request.timeout;
    let keys: Vec<CString> = request
        .params
        .iter()
        .map(|(k, _)| CString::new(k.as_str()).unwrap_or_default())
        .collect();
    let values: Vec<CString> = request
        .params
        .iter()
        .map(|(_, v)| CString::new(v.as_str()).unwrap_or_default())
        .collect();
    let mut kp: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
    let mut vp: Vec<*const c_char> = values.iter().map(|v| v.as_ptr()).collect();
    kp.push(std::ptr::null());
    vp.push(std::ptr::null());
    KEY_PASSWORD.with(|p| {
        *p.borrow_mut() = request
            .get("sslpassword")
            .and_then(|s| CString::new(s).ok())
    });

    // SAFETY: NULL-terminated arrays of NUL-terminated strings that outlive the call.
    let raw = unsafe { pq::PQconnectStartParams(kp.as_ptr(), vp.as_ptr(), 0) };
    if raw.is_null() {
        return Outcome::failed(
            ErrorClass::Unclassified,
            "PQconnectStartParams returned NULL",
        );
    }
    let conn = Conn(raw, errors);
    // SAFETY: valid conn.
    if unsafe { pq::PQstatus(conn.0) } == pq::ConnStatusType::CONNECTION_BAD {
        return conn.failed(&conn.error());
    }
    let mut write = true;
    loop {
        if let Err(o) = conn.wait(write, deadline) {
            return o;
        }
        // SAFETY: valid conn.
        match unsafe { pq::PQconnectPoll(conn.0) } {
            pq::PostgresPollingStatusType::PGRES_POLLING_OK => break,
            pq::PostgresPollingStatusType::PGRES_POLLING_FAILED => {
                return conn.failed(&conn.error())
            }
            pq::PostgresPollingStatusType::PGRES_POLLING_READING => write = false,
            _ => write = true,
        }
    }
    match session(&conn, &request.session_sql(), deadline) {
        Ok(s) => Outcome::Connected(Box::new(s)),
        Err(o) => o,
    }
}

fn session(conn: &Conn, sql: &str, deadline: Instant) -> Result<Session, Outcome> {
    let sql =
        CString::new(sql).map_err(|e| Outcome::failed(ErrorClass::Unclassified, e.to_string()))?;
    // SAFETY: valid conn and query string.
    if unsafe { pq::PQsendQuery(conn.0, sql.as_ptr()) } == 0 {
        return Err(conn.failed(&conn.error()));
    }
    let mut row = None;
    loop {
        // SAFETY: valid conn.
        while unsafe { pq::PQisBusy(conn.0) } == 1 {
            conn.wait(false, deadline)?;
            if unsafe { pq::PQconsumeInput(conn.0) } == 0 {
                return Err(conn.failed(&conn.error()));
            }
        }
        // SAFETY: valid conn; each result is cleared.
        let res = unsafe { pq::PQgetResult(conn.0) };
        if res.is_null() {
            break;
        }
        unsafe {
            if pq::PQresultStatus(res) == pq::ExecStatusType::PGRES_TUPLES_OK
                && pq::PQntuples(res) == 1
            {
                let cols: Vec<String> = (0..pq::PQnfields(res))
                    .map(|i| {
                        CStr::from_ptr(pq::PQgetvalue(res, 0, i))
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect();
                row = Some(cols);
            } else if pq::PQresultStatus(res) != pq::ExecStatusType::PGRES_TUPLES_OK {
                let msg = CStr::from_ptr(pq::PQresultErrorMessage(res))
                    .to_string_lossy()
                    .into_owned();
                pq::PQclear(res);
                return Err(conn.failed(&msg));
            }
            pq::PQclear(res);
        }
    }
    let cols = row.ok_or_else(|| {
        Outcome::failed(ErrorClass::Unclassified, "session query returned no row")
    })?;
    Session::from_row(&cols).map_err(|e| Outcome::failed(ErrorClass::Unclassified, e))
}

/// Maps a libpq error message to an outcome: the server's own texts first, then the stack's
/// `errors.toml` (`stacks/libpq/errors.toml`, shared with the in-container libpq).
pub(crate) fn classify(errors: &ErrorTable, msg: &str) -> Outcome {
    let class = server_messages::classify(msg).unwrap_or_else(|| errors.class_of(msg, None));
    Outcome::failed(class, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(msg: &str) -> ErrorClass {
        let table = ErrorTable::load(
            &crate::client::registry::source_stacks_dir().join("libpq/errors.toml"),
        )
        .unwrap();
        match classify(&table, msg) {
            Outcome::Failed { class, .. } => class,
            other => panic!("a failure, not {other:?}"),
        }
    }

    #[test]
    fn issue_12_texts_are_classified() {
        let at = "connection to server at \"127.0.0.1\", port 5432 failed: ";
        for (alert, want) in [
            ("bad certificate", ErrorClass::ClientCertUntrusted),
            ("unsupported certificate", ErrorClass::ClientCertUntrusted),
            ("certificate unknown", ErrorClass::ClientCertUntrusted),
            ("decrypt error", ErrorClass::ClientCertUntrusted),
        ] {
            assert_eq!(
                class(&format!("{at}SSL error: ssl/tls alert {alert}")),
                want
            );
        }
        assert_eq!(
            class(&format!(
                "{at}could not read certificate file \"x\": ca md too weak"
            )),
            ErrorClass::ClientKeyInvalid
        );
        assert_eq!(
            class("could not match 2 host names to 3 hostaddr values"),
            ErrorClass::InvalidOption
        );
        assert_eq!(
            class(&format!(
                "{at}host name must be specified for a verified SSL connection"
            )),
            ErrorClass::InvalidOption
        );
        assert_eq!(
            class(&format!(
                "{at}SSL certificate's name contains embedded null"
            )),
            ErrorClass::HostnameMismatch
        );
        assert_eq!(class("something never seen"), ErrorClass::Unclassified);
    }
}

//! NSS as the TLS library, with libpq's connection semantics (sslmode, sslrootcert, sslcert,
//! sslkey, sslpassword, sslcrl, sslcrldir), as PostgreSQL's NSS support maps them: the
//! options become an NSS database (trust anchors `CT,C,C`, the client certificate and key
//! under a nickname, the CRLs; protected by sslpassword when one is given), built with NSS's
//! tools (`pki::nss`) once per distinct set of options.
//!
//! NSS keeps one certificate database per process and merges trust across every database
//! opened in it, so the stack runs in processes of its own (`pgssl stack-shim nss`, behind
//! the attempt protocol like every shim), each taking one attempt at a time: it opens only
//! that attempt's database, connects, performs the SSLRequest, runs the NSS handshake
//! (`nss_ffi.rs`) and then the PostgreSQL session with tokio-postgres over the NSS stream,
//! and shuts NSS down; a process whose NSS did not shut down cleanly retires.

use super::nss_ffi::{self, Verify};
use super::{server_messages, ClientStack, ConnectRequest};
use crate::error_class::ErrorClass;
use crate::facts::ClientFacts;
use crate::outcome::{Outcome, Session};
use crate::pki::nss::{digest, write_once, DbPlan};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// Built databases by what went into them; a build that failed keeps its outcome (building
/// again into the half-made directory would hang on the tools' prompts).
type DbCache = Mutex<HashMap<DbPlan, Arc<Mutex<Option<Result<PathBuf, Outcome>>>>>>;

/// The NSS databases of one stack: derived from each attempt's libpq options, built once per
/// distinct set of options. They live in the PKI cache (`nss-client/`), named by a digest of
/// what went into them (the derived certificate and key files are named by their content), so
/// a later run reuses them as it reuses the PKI. `nss:<build>` runs this same code in its
/// image, with a cache of its own (`in-image/<build>/`) built by the image's tools.
#[derive(Clone)]
pub(crate) struct NssDbs {
    dbs: Arc<DbCache>,
    dir: Arc<PathBuf>,
}

impl NssDbs {
    pub(crate) fn new() -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let dir = crate::pki::cache_root().join("nss-client");
        std::fs::create_dir_all(&dir).with_context(|| {
            format!(
                "creating the NSS database cache {} (set PGSSL_CACHE_DIR to a writable directory)",
                dir.display()
            )
        })?;
        Ok(NssDbs {
            dbs: Arc::default(),
            dir: Arc::new(dir),
        })
    }

    /// The attempt's options as a libpq built with NSS takes them: the PEM files become the
    /// database named by `ssldatabase` (when they put anything in it) and the client
    /// certificate its nickname in `sslcert`; sslpassword unlocks the database. A database the
    /// case names itself is used as it is. Blocking: builds the database on first use.
    pub(crate) fn libpq_params(
        &self,
        request: &ConnectRequest,
    ) -> Result<Vec<(String, String)>, Outcome> {
        if request.get("ssldatabase").is_some() {
            return Ok(request.params.clone());
        }
        let child = prepare(request, &self.dbs, &self.dir)?;
        let mut params: Vec<(String, String)> = request
            .params
            .iter()
            .filter(|(k, _)| !PEM_OPTIONS.contains(&k.as_str()))
            .cloned()
            .collect();
        if !child.empty_db {
            params.push(("ssldatabase".into(), child.db.display().to_string()));
        }
        if let Some(nickname) = child.nickname {
            params.push(("sslcert".into(), nickname));
        }
        Ok(params)
    }

    /// The attempt's database (built on first use, off the async threads) and request.
    pub(crate) async fn prepare(&self, request: &ConnectRequest) -> Result<ChildRequest, Outcome> {
        let (this, request) = (self.clone(), request.clone());
        tokio::task::spawn_blocking(move || prepare(&request, &this.dbs, &this.dir))
            .await
            .unwrap_or_else(|e| Err(Outcome::failed(ErrorClass::Unclassified, e.to_string())))
    }
}

/// The stack inside its own process (see the module's documentation).
pub struct Nss {
    facts: ClientFacts,
    dbs: NssDbs,
    /// NSS shut down cleanly after the last attempt.
    clean: Arc<std::sync::atomic::AtomicBool>,
    /// Attempts this process made.
    attempts: Arc<std::sync::atomic::AtomicUsize>,
}

impl Nss {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Nss {
            facts: ClientFacts {
                name: "nss".into(),
                tls_library: "nss".into(),
                tls_version: nss_version(),
                libpq_version: String::new(),
            },
            dbs: NssDbs::new()?,
            clean: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            attempts: Arc::default(),
        })
    }
}

/// The version of the libnss3 this process loaded.
fn nss_version() -> String {
    nss_ffi::version()
}

/// Attempts a process makes before it retires. NSS 3.110 and 3.132 (trixie's, sid's) fail
/// a once-only initialisation after many init/shutdown cycles in one process (some 50 to
/// 150 attempts in a matrix run), and every later failed verification in it then reports
/// PR_CALL_ONCE_ERROR instead of its reason; 3.61 and 3.87 do not. Fresh processes never
/// get there.
const ATTEMPTS_PER_PROCESS: usize = 25;

/// The libpq options naming PEM files, which an NSS database replaces.
pub(crate) const PEM_OPTIONS: &[&str] =
    &["sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir"];

/// What the child needs for one attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildRequest {
    pub params: Vec<(String, String)>,
    pub db: PathBuf,
    pub db_password: Option<String>,
    pub nickname: Option<String>,
    /// Nothing went into the database: the options name no certificate, key or CRL.
    #[serde(default)]
    pub empty_db: bool,
    /// The database holds a trust anchor (a root the options named, or a database named
    /// outright): the NSS build of libpq then verifies in require and prefer too.
    #[serde(default)]
    pub has_anchor: bool,
    /// The session SQL to run once connected.
    pub sql: String,
    /// The case's environment, for stacks that start their own tool processes.
    #[serde(default)]
    pub env: Vec<(String, String)>,
}

/// What the child reports.
#[derive(Debug, Serialize, Deserialize)]
pub enum ChildResult {
    Row(Vec<String>),
    Failed {
        class: ErrorClass,
        raw: String,
    },
    /// TLS failed after a completed handshake (a TLS 1.3 alert, a reset) without the server's
    /// ErrorResponse: libpq's prefer does not retry in plaintext then.
    FailedAfterHandshake {
        class: ErrorClass,
        raw: String,
    },
}

impl ClientStack for Nss {
    fn facts(&self) -> &ClientFacts {
        &self.facts
    }

    fn connect(&self, request: ConnectRequest) -> BoxFuture<'static, Outcome> {
        let (dbs, clean) = (self.dbs.clone(), self.clean.clone());
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move {
            let child_request = match dbs.prepare(&request).await {
                Ok(c) => c,
                Err(outcome) => return outcome,
            };
            let attempt = tokio::task::spawn_blocking(move || child(&child_request)).await;
            match attempt {
                Ok((result, shut_down)) => {
                    clean.store(shut_down, std::sync::atomic::Ordering::SeqCst);
                    result.into_outcome()
                }
                Err(e) => {
                    clean.store(false, std::sync::atomic::Ordering::SeqCst);
                    Outcome::failed(ErrorClass::Unclassified, format!("NSS attempt: {e}"))
                }
            }
        })
    }

    /// One NSS database per attempt and process: attempts run one at a time.
    fn one_attempt_at_a_time(&self) -> bool {
        true
    }

    fn tainted(&self) -> bool {
        !self.clean.load(std::sync::atomic::Ordering::SeqCst)
            || self.attempts.load(std::sync::atomic::Ordering::SeqCst) >= ATTEMPTS_PER_PROCESS
    }
}

impl ChildResult {
    /// The core's outcome: a row becomes the session it describes.
    pub(crate) fn into_outcome(self) -> Outcome {
        match self {
            ChildResult::Row(row) => match Session::from_row(&row) {
                Ok(s) => Outcome::Connected(Box::new(s)),
                Err(e) => Outcome::failed(ErrorClass::Unclassified, e),
            },
            ChildResult::Failed { class, raw }
            | ChildResult::FailedAfterHandshake { class, raw } => Outcome::failed(class, raw),
        }
    }

    /// Marks a failure as one after the handshake (see [`ChildResult::FailedAfterHandshake`]).
    pub(crate) fn after_handshake(self) -> ChildResult {
        match self {
            ChildResult::Failed { class, raw } => ChildResult::FailedAfterHandshake { class, raw },
            other => other,
        }
    }
}

fn key_invalid(msg: String) -> Outcome {
    Outcome::failed(ErrorClass::ClientKeyInvalid, msg)
}

/// The database for this attempt's options (built on first use) and the child's request.
fn prepare(request: &ConnectRequest, dbs: &DbCache, dir: &Path) -> Result<ChildRequest, Outcome> {
    use openssl::x509::{X509Crl, X509};
    // A database named outright is used as it is: its trust, its CRLs, and its keys, of which
    // NSS chooses the client certificate itself (no nickname), unlocked with sslpassword.
    if let Some(db) = request.get("ssldatabase") {
        return Ok(ChildRequest {
            params: request.params.clone(),
            db: PathBuf::from(db),
            db_password: request.get("sslpassword").map(str::to_string),
            nickname: None,
            empty_db: false,
            has_anchor: true,
            sql: request.session_sql(),
            env: request.env.clone(),
        });
    }
    let mut plan = DbPlan {
        password: request
            .get("sslpassword")
            .filter(|p| !p.is_empty())
            .map(str::to_string),
        ..Default::default()
    };
    let files = dir.join("files");
    std::fs::create_dir_all(&files)
        .map_err(|e| Outcome::failed(ErrorClass::IoError, e.to_string()))?;
    let mut subjects = Vec::new();
    // Every certificate of sslrootcert is a trust anchor (one nickname each).
    if let Some(root) = request.get("sslrootcert").filter(|r| *r != "system") {
        if let Ok(pem) = std::fs::read(root) {
            let certs = X509::stack_from_pem(&pem).map_err(|e| {
                Outcome::failed(ErrorClass::RootCertInvalid, format!("{root}: {e}"))
            })?;
            for (i, c) in certs.iter().enumerate() {
                let path = files.join(format!("{}-root{i}.pem", digest(&pem)));
                write_once(&path, &c.to_pem().unwrap_or_default());
                subjects.push(c.subject_name().to_der().unwrap_or_default());
                plan.certs.push((format!("root{i}"), path, "CT,C,C".into()));
            }
        }
    }
    let mut nickname = None;
    // As libpq: a client certificate file that does not exist means sending none.
    if let Some(cert) = request.get("sslcert").filter(|c| Path::new(c).exists()) {
        let pem = std::fs::read(cert).map_err(|e| key_invalid(format!("{cert}: {e}")))?;
        let chain = X509::stack_from_pem(&pem).map_err(|e| key_invalid(format!("{cert}: {e}")))?;
        // A file without a certificate (a key given as sslcert) has nothing to import.
        if chain.is_empty() {
            return Err(key_invalid(format!("{cert}: no certificate in the file")));
        }
        let key = request
            .get("sslkey")
            .ok_or_else(|| key_invalid("sslcert without sslkey".into()))?;
        let key_pem = crate::pki::nss::read_key(Path::new(key), request.get("sslpassword"))
            .and_then(|k| Ok(k.private_key_to_pem_pkcs8()?))
            .map_err(|e| key_invalid(format!("{key}: {e:#}")))?;
        let tag = digest(&[pem.as_slice(), key_pem.as_slice()].concat());
        let (cert_path, key_path) = (
            files.join(format!("{tag}.crt")),
            files.join(format!("{tag}.key")),
        );
        write_once(&cert_path, &chain[0].to_pem().unwrap_or_default());
        write_once(&key_path, &key_pem);
        plan.keys.push(("client".into(), cert_path, key_path));
        // Intermediates sent along with the leaf: present, not trusted. One that is also a
        // trust anchor is already there; importing it again would take its trust away.
        let anchors: Vec<Vec<u8>> = plan
            .certs
            .iter()
            .filter_map(|(_, p, _)| std::fs::read(p).ok())
            .filter_map(|pem| X509::from_pem(&pem).and_then(|c| c.to_der()).ok())
            .collect();
        for (i, c) in chain.iter().enumerate().skip(1) {
            if c.to_der().is_ok_and(|der| anchors.contains(&der)) {
                continue;
            }
            let path = files.join(format!("{tag}-chain{i}.pem"));
            write_once(&path, &c.to_pem().unwrap_or_default());
            subjects.push(c.subject_name().to_der().unwrap_or_default());
            plan.certs.push((format!("chain{i}"), path, ",,".into()));
        }
        nickname = Some("client".to_string());
    }
    // CRLs: crlutil refuses a list whose issuer is not in the database, as any NSS user finds.
    let mut crl_files: Vec<PathBuf> = request
        .get("sslcrl")
        .map(PathBuf::from)
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    if let Some(d) = request.get("sslcrldir") {
        if let Ok(rd) = std::fs::read_dir(d) {
            let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            v.sort();
            crl_files.extend(v);
        }
    }
    for f in crl_files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        const END: &str = "-----END X509 CRL-----";
        for (i, block) in text
            .split_inclusive(END)
            .filter(|b| b.contains(END))
            .enumerate()
        {
            let Ok(crl) = X509Crl::from_pem(block.trim_start().as_bytes()) else {
                continue;
            };
            let issuer = crl.issuer_name().to_der().unwrap_or_default();
            if subjects.contains(&issuer) {
                let path = files.join(format!("{}-crl{i}.pem", digest(block.as_bytes())));
                write_once(&path, block.trim_start().as_bytes());
                plan.crls.push(path);
            }
        }
    }
    // One lock per database: attempts with the same options wait for one build, different
    // databases build in parallel.
    let slot = dbs
        .lock()
        .expect("nss dbs")
        .entry(plan.clone())
        .or_default()
        .clone();
    let mut slot = slot.lock().expect("nss db slot");
    let db = match slot.as_ref() {
        Some(built) => built.clone()?,
        None => {
            let built = crate::pki::nss::cached(dir, &plan).map_err(|e| {
                let raw = format!("building the NSS database: {e:#}");
                Outcome::failed(db_build_class(&raw), raw)
            });
            *slot = Some(built.clone());
            built?
        }
    };
    drop(slot);
    Ok(ChildRequest {
        params: request.params.clone(),
        db,
        empty_db: plan.certs.is_empty() && plan.keys.is_empty() && plan.crls.is_empty(),
        has_anchor: plan
            .certs
            .iter()
            .any(|(_, _, trust)| trust.starts_with("CT")),
        db_password: plan.password,
        nickname,
        sql: request.session_sql(),
        env: request.env.clone(),
    })
}

/// The class of a database the options could not become: NSS's tools refuse what NSS would.
fn db_build_class(raw: &str) -> ErrorClass {
    const TABLE: &[(&str, ErrorClass)] = &[
        // pk12util (or the PKCS#12 step) with a key that is not its certificate's.
        ("key values mismatch", ErrorClass::ClientKeyInvalid),
        ("key type mismatch", ErrorClass::ClientKeyInvalid),
        ("pk12util", ErrorClass::ClientKeyInvalid),
        // crlutil verifies a list on import; one it refuses leaves the server unverifiable.
        ("crlutil", ErrorClass::ServerCertUntrusted),
    ];
    super::classify_text(raw, &[TABLE])
}

// ------------------------------------------------------------------------------------------
// One attempt: its own database and a fresh NSS.

pub(crate) fn failed(class: ErrorClass, raw: impl Into<String>) -> ChildResult {
    ChildResult::Failed {
        class,
        raw: raw.into(),
    }
}

pub(crate) fn get<'a>(req: &'a ChildRequest, key: &str) -> Option<&'a str> {
    req.params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// One attempt: NSS opened on its database, the attempt, NSS shut down again. Returns the
/// result and whether NSS is clean for another attempt in this process.
fn child(req: &ChildRequest) -> (ChildResult, bool) {
    let ctx = match nss_ffi::init(
        &crate::pki::nss::db_arg(&req.db),
        req.db_password.as_deref(),
    ) {
        Ok(ctx) => ctx,
        Err(e) => return (failed(ErrorClass::Unclassified, e), false),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return (failed(ErrorClass::Unclassified, e.to_string()), false),
    };
    let result = rt.block_on(by_mode(req));
    // The driver's connection task ends with the runtime; the relay threads then see their
    // sockets close and drop the NSS connection.
    drop(rt);
    let clean = RELAYS.wait_idle(Duration::from_secs(2)) && ctx.shutdown().is_ok();
    (result, clean)
}

/// Relay threads still running in this process (they hold NSS connections).
static RELAYS: Relays = Relays(Mutex::new(0), std::sync::Condvar::new());

struct Relays(Mutex<usize>, std::sync::Condvar);

impl Relays {
    fn enter(&self) {
        if let Ok(mut n) = self.0.lock() {
            *n += 1;
        }
    }

    fn leave(&self) {
        if let Ok(mut n) = self.0.lock() {
            *n -= 1;
            self.1.notify_all();
        }
    }

    /// Whether every relay thread ended within `limit`.
    fn wait_idle(&self, limit: Duration) -> bool {
        let Ok(n) = self.0.lock() else { return false };
        self.1
            .wait_timeout_while(n, limit, |n| *n > 0)
            .is_ok_and(|(n, _)| *n == 0)
    }
}

/// libpq's host lists: `host`, `hostaddr` and `port` may each list several comma-separated
/// values, tried in order, each with [`by_mode_one`]. As libpq (15 here), only a host that
/// cannot be reached moves on to the next; a TLS or server verdict ends the attempt.
async fn by_mode(req: &ChildRequest) -> ChildResult {
    let list = |k: &str| -> Vec<String> {
        get(req, k)
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (hosts, addrs, ports) = (list("host"), list("hostaddr"), list("port"));
    let n = hosts.len().max(addrs.len());
    if n <= 1 && ports.len() <= 1 {
        return by_mode_one(req).await;
    }
    let fits = |v: &Vec<String>| v.is_empty() || v.len() == n;
    if !fits(&hosts) || !fits(&addrs) || !(ports.len() <= 1 || ports.len() == n) {
        return failed(
            ErrorClass::InvalidOption,
            format!(
                "could not match {} host names to {} hostaddr values and {} port numbers",
                hosts.len(),
                addrs.len(),
                ports.len()
            ),
        );
    }
    let mut last = failed(ErrorClass::InvalidOption, "empty host list");
    for i in 0..n {
        let mut one = req.clone();
        for (key, values) in [("host", &hosts), ("hostaddr", &addrs), ("port", &ports)] {
            let Some(v) = values.get(i).or(values.first()) else {
                continue;
            };
            for (k, val) in one.params.iter_mut() {
                if k == key {
                    *val = v.clone();
                }
            }
        }
        last = by_mode_one(&one).await;
        let next_host = matches!(
            &last,
            ChildResult::Failed {
                class: ErrorClass::IoError | ErrorClass::Timeout,
                ..
            }
        );
        if !next_host {
            break;
        }
    }
    last
}

/// libpq's sslmode semantics around a stack's TLS path: option checks, plaintext for
/// disable, allow's and prefer's second tries.
async fn by_mode_one(req: &ChildRequest) -> ChildResult {
    // As libpq, the version bounds are checked whatever the mode.
    for key in ["ssl_min_protocol_version", "ssl_max_protocol_version"] {
        if let Some(v) = get(req, key).filter(|v| !v.is_empty()) {
            if nss_ffi::version_number(v).is_none() {
                return failed(
                    ErrorClass::InvalidOption,
                    format!("invalid {key} value: \"{v}\""),
                );
            }
        }
    }
    let mode = get(req, "sslmode").unwrap_or("prefer");
    if get(req, "sslnegotiation") == Some("direct") {
        // libpq's option check comes first: direct TLS cannot fall back to plaintext.
        if matches!(mode, "disable" | "allow" | "prefer") {
            return failed(
                ErrorClass::InvalidOption,
                format!("weak sslmode \"{mode}\" may not be used with sslnegotiation=direct"),
            );
        }
        return failed(
            ErrorClass::Unsupported,
            "the NSS stack performs the SSLRequest itself; direct TLS negotiation is not implemented",
        );
    }
    // As libpq: TLS is never negotiated over a Unix socket, whatever sslmode says.
    let unix_socket =
        get(req, "host").is_some_and(|h| h.starts_with('/')) && get(req, "hostaddr").is_none();
    match mode {
        "disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full" if unix_socket => {
            plain(req).await
        }
        "disable" => plain(req).await,
        // libpq's allow: plaintext first, TLS when the server turns plaintext away.
        "allow" => match plain(req).await {
            ChildResult::Failed {
                class: ErrorClass::SslRequired | ErrorClass::HbaRejected,
                ..
            } => host_tls(req, mode).await,
            other => other,
        },
        // libpq's prefer: TLS first, plaintext again when the handshake fails or the server
        // answers with an error; not after TLS failed past a completed handshake.
        "prefer" => match host_tls(req, mode).await {
            r @ (ChildResult::Row(_) | ChildResult::FailedAfterHandshake { .. }) => r,
            r @ ChildResult::Failed {
                class: ErrorClass::Timeout,
                ..
            } => r,
            _ => plain(req).await,
        },
        "require" | "verify-ca" | "verify-full" => host_tls(req, mode).await,
        other => failed(
            ErrorClass::InvalidOption,
            format!("invalid sslmode value: \"{other}\""),
        ),
    }
}

/// Options handed to tokio-postgres: everything but the TLS ones, which NSS handles.
fn driver_config(req: &ChildRequest, sslmode: &str) -> Result<tokio_postgres::Config, ChildResult> {
    const OURS: &[&str] = &[
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcrl",
        "sslcrldir",
        "ssldatabase",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
    ];
    super::tokio_postgres_config(&req.params, OURS, sslmode).map_err(|e| classify_driver(&e))
}

async fn plain(req: &ChildRequest) -> ChildResult {
    let config = match driver_config(req, "disable") {
        Ok(c) => c,
        Err(r) => return r,
    };
    match config.connect(tokio_postgres::NoTls).await {
        Ok((client, conn)) => session(&req.sql, client, conn)
            .await
            .unwrap_or_else(|e| classify_driver(&e)),
        Err(e) => classify_driver(&e),
    }
}

async fn session<S, T>(
    sql: &str,
    client: tokio_postgres::Client,
    conn: tokio_postgres::Connection<S, T>,
) -> Result<ChildResult, tokio_postgres::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let driver = tokio::spawn(conn);
    let rows = client.simple_query(sql).await;
    driver.abort();
    Ok(rows?
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(ChildResult::Row(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect(),
            )),
            _ => None,
        })
        .unwrap_or_else(|| failed(ErrorClass::Unclassified, "session query returned no row")))
}

/// What every TLS path starts from: the server has answered the SSLRequest with `S`.
pub(crate) struct TlsStart {
    /// The socket to the server, right after the `S`.
    pub tcp: tokio::net::TcpStream,
    /// The options for tokio-postgres (TLS ones removed).
    pub config: tokio_postgres::Config,
    /// The host name the certificate is checked against (SNI and SSL_SetURL).
    pub host: String,
    /// How much of the server certificate to check.
    pub verify: Verify,
    /// ssl_min/max_protocol_version as NSS numbers them.
    pub versions: (u16, u16),
}

/// The shared start of the TLS path: version range, TCP, SSLRequest, and libpq's rule for
/// what sslmode and a root file ask of the server certificate.
pub(crate) async fn tls_start(req: &ChildRequest, mode: &str) -> Result<TlsStart, ChildResult> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = driver_config(req, "require")?;
    let lo = get(req, "ssl_min_protocol_version")
        .filter(|v| !v.is_empty())
        .unwrap_or("TLSv1.2");
    let hi = get(req, "ssl_max_protocol_version")
        .filter(|v| !v.is_empty())
        .unwrap_or("TLSv1.3");
    let (Some(lo_n), Some(hi_n)) = (nss_ffi::version_number(lo), nss_ffi::version_number(hi))
    else {
        return Err(failed(
            ErrorClass::InvalidOption,
            format!("invalid TLS protocol version {lo:?}..{hi:?}"),
        ));
    };
    if lo_n > hi_n {
        return Err(failed(
            ErrorClass::ProtocolVersion,
            format!("invalid SSL protocol version range {lo}..{hi}"),
        ));
    }
    let host = get(req, "host").unwrap_or("localhost");
    let addr = get(req, "hostaddr").unwrap_or(host);
    let port: u16 = get(req, "port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(5432);
    let secs: u64 = get(req, "connect_timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(10);
    let sockaddr = format!("{addr}:{port}")
        .parse::<std::net::SocketAddr>()
        .or_else(|_| format!("[{addr}]:{port}").parse())
        .map_err(|e| failed(ErrorClass::InvalidOption, format!("hostaddr {addr:?}: {e}")))?;
    let mut tcp = match tokio::time::timeout(
        Duration::from_secs(secs),
        tokio::net::TcpStream::connect(sockaddr),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(failed(
                ErrorClass::IoError,
                format!("connecting to {sockaddr}: {e}"),
            ))
        }
        Err(_) => {
            return Err(failed(
                ErrorClass::Timeout,
                format!("connecting to {sockaddr}: no answer within {secs} s"),
            ))
        }
    };
    // SSLRequest: length 8, code 80877103.
    let mut answer = [0u8; 1];
    let exchange = async {
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
        tcp.read_exact(&mut answer).await
    };
    if let Err(e) = exchange.await {
        return Err(failed(ErrorClass::IoError, format!("SSLRequest: {e}")));
    }
    if answer[0] != b'S' {
        return Err(failed(
            ErrorClass::SslNotSupported,
            "server does not support SSL, but SSL was required",
        ));
    }
    // As the NSS build of libpq: it reads no root file. verify-ca and verify-full verify
    // against whatever anchors the database holds (none when no option put one there; that
    // libpq then loads NSS's built-in roots module, which holds no test CA either, so the
    // outcome is the same untrusted issuer); require and prefer verify only when the
    // database holds an anchor.
    // Whether a root file exists does not matter to it, only what reached the database: a
    // file without certificates, or `system` (a file name to libpq 15), gives no anchor.
    let verify = match mode {
        "verify-full" => Verify::ChainAndName,
        "verify-ca" => Verify::Chain,
        _ if req.has_anchor => Verify::Chain,
        _ => Verify::Nothing,
    };
    Ok(TlsStart {
        tcp,
        config,
        host: host.to_string(),
        verify,
        versions: (lo_n, hi_n),
    })
}

/// The PostgreSQL session over the plaintext side of a TLS path: tokio-postgres on the
/// driver's end of a socket pair whose other end is relayed to the TLS stream (the relay
/// answers the driver's own SSLRequest with `S`). Errors stay raw: a stack may know better.
pub(crate) async fn finish(
    config: tokio_postgres::Config,
    stream: tokio::net::UnixStream,
    binding: Option<Vec<u8>>,
    sql: &str,
) -> Result<ChildResult, tokio_postgres::Error> {
    let (client, conn) = config.connect_raw(stream, Bridge { binding }).await?;
    session(sql, client, conn).await
}

/// tls-server-end-point (RFC 5929): the certificate hashed with the hash of its signature,
/// SHA-256 for MD5 and SHA-1 and where the algorithm names none (RSA-PSS keeps it in its
/// parameters), as PostgreSQL's NSS support and its server compute it.
fn end_point_hash(der: &[u8]) -> Vec<u8> {
    use openssl::hash::{hash, MessageDigest};
    use openssl::nid::Nid;
    let digest = openssl::x509::X509::from_der(der)
        .ok()
        .and_then(|c| {
            c.signature_algorithm()
                .object()
                .nid()
                .signature_algorithms()
        })
        .map(|algs| algs.digest)
        .filter(|d| ![Nid::MD5, Nid::SHA1].contains(d))
        .and_then(MessageDigest::from_nid)
        .unwrap_or_else(MessageDigest::sha256);
    hash(digest, der).map(|d| d.to_vec()).unwrap_or_default()
}

/// TCP, SSLRequest, NSS handshake, then the session over the NSS stream.
async fn host_tls(req: &ChildRequest, mode: &str) -> ChildResult {
    let start = match tls_start(req, mode).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let tcp = match start.tcp.into_std() {
        Ok(t) => t,
        Err(e) => return failed(ErrorClass::IoError, e.to_string()),
    };
    if let Err(e) = tcp.set_nonblocking(false) {
        return failed(ErrorClass::IoError, e.to_string());
    }
    // The child does one attempt: blocking this thread during the handshake stalls nothing.
    let conn = match nss_ffi::handshake(
        tcp,
        &start.host,
        start.verify,
        req.nickname.as_deref(),
        start.versions,
    ) {
        Ok(c) => Arc::new(c),
        Err(raw) => return classify_nss(raw),
    };
    let binding = conn.peer_certificate().map(|der| end_point_hash(&der));
    let (ours, theirs) = match std::os::unix::net::UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return failed(ErrorClass::IoError, e.to_string()),
    };
    let errors = RelayErrors::default();
    relay(conn, ours, errors.clone());
    if let Err(e) = theirs.set_nonblocking(true) {
        return failed(ErrorClass::IoError, e.to_string());
    }
    let stream = match tokio::net::UnixStream::from_std(theirs) {
        Ok(s) => s,
        Err(e) => return failed(ErrorClass::IoError, e.to_string()),
    };
    match finish(start.config, stream, binding, &req.sql).await {
        Ok(r) => r,
        // The server's ErrorResponse wins; otherwise the driver saw only the relay end, and
        // NSS's own error (a TLS 1.3 alert after the handshake, a reset) says why.
        Err(e) if e.as_db_error().is_some() => classify_driver(&e),
        Err(e) => match errors.first() {
            Some(raw) => classify_nss(raw),
            None => classify_driver(&e),
        }
        .after_handshake(),
    }
}

/// NSS's errors on the relay's two directions. The read side's wins: it carries the server's
/// alert, while the write side sees only the reset that followed it (as libpq, which reads
/// before it reports a failed write).
/// Closed once the driver is done; later errors are the relay's own shutdown.
#[derive(Clone, Default)]
struct RelayErrors(Arc<std::sync::Mutex<(bool, [Option<String>; 2])>>);

impl RelayErrors {
    fn set(&self, side: usize, raw: String) {
        let mut e = self.0.lock().expect("relay errors");
        if !e.0 {
            e.1[side].get_or_insert(raw);
        }
    }
    fn close(&self) {
        self.0.lock().expect("relay errors").0 = true;
    }
    fn first(&self) -> Option<String> {
        let e = self.0.lock().expect("relay errors");
        e.1[0].clone().or_else(|| e.1[1].clone())
    }
}

/// Copies plaintext between the NSS connection and the driver's end of a socket pair. The
/// driver starts with its own SSLRequest, which the real server already answered: the bridge
/// answers it with `S` and then relays.
fn relay(conn: Arc<nss_ffi::Conn>, local: std::os::unix::net::UnixStream, errors: RelayErrors) {
    let (mut up, mut down) = match local.try_clone() {
        Ok(c) => (local, c),
        Err(_) => return,
    };
    let reader = conn.clone();
    let read_errors = errors.clone();
    RELAYS.enter();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16384];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if down.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                // Recorded before the driver can see the end of its stream.
                Err(raw) => {
                    read_errors.set(0, raw);
                    break;
                }
            }
        }
        let _ = down.shutdown(std::net::Shutdown::Write);
        drop(reader);
        RELAYS.leave();
    });
    RELAYS.enter();
    std::thread::spawn(move || {
        let mut request = [0u8; 8];
        if up.read_exact(&mut request).is_ok() && up.write_all(b"S").is_ok() {
            let mut buf = vec![0u8; 16384];
            // After a failed write the driver's bytes are dropped, as libpq does, and what the
            // reader gets from the server decides (a TLS 1.3 alert before the reset).
            let mut write_failed = false;
            loop {
                match up.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if write_failed => {}
                    Ok(n) => {
                        if let Err(raw) = conn.write_all(&buf[..n]) {
                            errors.set(1, raw);
                            write_failed = true;
                        }
                    }
                }
            }
        }
        // The driver is done: wake the reader, which may wait on a server with more to say
        // (what it reads from now on is our own shutdown, not the server's).
        errors.close();
        conn.shutdown();
        drop(conn);
        RELAYS.leave();
    });
}

/// The driver's view of the bridge: a stream that is already "TLS", with channel binding
/// data (tls-server-end-point, [`end_point_hash`] of the server certificate).
struct Bridge {
    binding: Option<Vec<u8>>,
}

struct BridgeStream {
    inner: tokio::net::UnixStream,
    binding: Option<Vec<u8>>,
}

impl tokio_postgres::tls::TlsConnect<tokio::net::UnixStream> for Bridge {
    type Stream = BridgeStream;
    type Error = std::io::Error;
    type Future = futures_util::future::Ready<Result<BridgeStream, std::io::Error>>;

    fn connect(self, inner: tokio::net::UnixStream) -> Self::Future {
        futures_util::future::ready(Ok(BridgeStream {
            inner,
            binding: self.binding,
        }))
    }
}

impl tokio_postgres::tls::TlsStream for BridgeStream {
    fn channel_binding(&self) -> tokio_postgres::tls::ChannelBinding {
        match &self.binding {
            Some(b) => tokio_postgres::tls::ChannelBinding::tls_server_end_point(b.clone()),
            None => tokio_postgres::tls::ChannelBinding::none(),
        }
    }
}

impl tokio::io::AsyncRead for BridgeStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for BridgeStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// NSS error names to classes. The name is the first NSS error name in `raw` (the FFI puts
/// it first; NSS's tools after their own words).
pub(crate) fn classify_nss(raw: String) -> ChildResult {
    const TABLE: &[(&str, ErrorClass)] = &[
        ("SSL_ERROR_BAD_CERT_DOMAIN", ErrorClass::HostnameMismatch),
        (
            "SEC_ERROR_REVOKED_CERTIFICATE",
            ErrorClass::ServerCertRevoked,
        ),
        (
            "SEC_ERROR_EXPIRED_CERTIFICATE",
            ErrorClass::ServerCertExpired,
        ),
        (
            "SEC_ERROR_EXPIRED_ISSUER_CERTIFICATE",
            ErrorClass::ServerCertExpired,
        ),
        ("SEC_ERROR_UNKNOWN_ISSUER", ErrorClass::ServerCertUntrusted),
        (
            "SEC_ERROR_UNTRUSTED_ISSUER",
            ErrorClass::ServerCertUntrusted,
        ),
        ("SEC_ERROR_UNTRUSTED_CERT", ErrorClass::ServerCertUntrusted),
        ("SEC_ERROR_CA_CERT_INVALID", ErrorClass::ServerCertUntrusted),
        (
            "SEC_ERROR_INADEQUATE_CERT_TYPE",
            ErrorClass::ServerCertUntrusted,
        ),
        (
            "SEC_ERROR_INADEQUATE_KEY_USAGE",
            ErrorClass::ServerCertUntrusted,
        ),
        ("SEC_ERROR_BAD_SIGNATURE", ErrorClass::ServerCertUntrusted),
        ("SEC_ERROR_CRL_EXPIRED", ErrorClass::ServerCertUntrusted),
        // CA constraints and extensions (issue 12's X.509 edge cases).
        (
            "SEC_ERROR_PATH_LEN_CONSTRAINT_INVALID",
            ErrorClass::ServerCertUntrusted,
        ),
        (
            "SEC_ERROR_CERT_NOT_IN_NAME_SPACE",
            ErrorClass::ServerCertUntrusted,
        ),
        (
            "SEC_ERROR_UNKNOWN_CRITICAL_EXTENSION",
            ErrorClass::ServerCertUntrusted,
        ),
        (
            "SEC_ERROR_CERT_SIGNATURE_ALGORITHM_DISABLED",
            ErrorClass::ServerCertUntrusted,
        ),
        (
            "SEC_ERROR_CRL_BAD_SIGNATURE",
            ErrorClass::ServerCertUntrusted,
        ),
        ("SEC_ERROR_CRL_INVALID", ErrorClass::ServerCertUntrusted),
        (
            "SEC_ERROR_CRL_NOT_YET_VALID",
            ErrorClass::ServerCertUntrusted,
        ),
        (
            "SSL_ERROR_UNKNOWN_CA_ALERT",
            ErrorClass::ClientCertUntrusted,
        ),
        ("SSL_ERROR_BAD_CERT_ALERT", ErrorClass::ClientCertUntrusted),
        (
            "SSL_ERROR_EXPIRED_CERT_ALERT",
            ErrorClass::ClientCertUntrusted,
        ),
        (
            "SSL_ERROR_CERTIFICATE_UNKNOWN_ALERT",
            ErrorClass::ClientCertUntrusted,
        ),
        (
            "SSL_ERROR_UNSUPPORTED_CERT_ALERT",
            ErrorClass::ClientCertUntrusted,
        ),
        (
            "SSL_ERROR_REVOKED_CERT_ALERT",
            ErrorClass::ClientCertRevoked,
        ),
        (
            "SSL_ERROR_RX_CERTIFICATE_REQUIRED_ALERT",
            ErrorClass::ClientCertRequired,
        ),
        (
            "SSL_ERROR_HANDSHAKE_FAILURE_ALERT",
            ErrorClass::ClientCertRequired,
        ),
        (
            "SSL_ERROR_PROTOCOL_VERSION_ALERT",
            ErrorClass::ProtocolVersion,
        ),
        ("SSL_ERROR_UNSUPPORTED_VERSION", ErrorClass::ProtocolVersion),
        ("SSL_ERROR_NO_CYPHER_OVERLAP", ErrorClass::ProtocolVersion),
        ("PR_END_OF_FILE_ERROR", ErrorClass::IoError),
        ("PR_CONNECT_RESET_ERROR", ErrorClass::IoError),
        ("PR_IO_TIMEOUT_ERROR", ErrorClass::Timeout),
    ];
    let class = nss_error_name(&raw)
        .and_then(|n| TABLE.iter().find(|(name, _)| *name == n))
        .map_or(ErrorClass::Unclassified, |(_, c)| *c);
    failed(class, raw)
}

/// The first word of `text` that is an NSS/NSPR error name (`SEC_ERROR_*`, `SSL_ERROR_*`,
/// `PR_*_ERROR`).
pub(crate) fn nss_error_name(text: &str) -> Option<&str> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .find(|w| {
            w.starts_with("SEC_ERROR_")
                || w.starts_with("SSL_ERROR_")
                || (w.starts_with("PR_") && w.ends_with("_ERROR"))
        })
}

/// tokio-postgres errors (after the handshake, or without TLS) to classes.
pub(crate) fn classify_driver(e: &tokio_postgres::Error) -> ChildResult {
    let raw = super::error_chain(e);
    if let Some(db) = e.as_db_error() {
        if let Some(class) = server_messages::classify(db.message()) {
            return failed(class, raw);
        }
    }
    let class = super::classify_text(&raw, &[super::DRIVER_ERRORS]);
    failed(class, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options of a libpq built with NSS: the PEM files become one database (the root
    /// file's certificates trusted, the client's certificate and key under the nickname
    /// `sslcert` names, the lists whose issuer it holds); options that put nothing in a
    /// database name none.
    #[test]
    fn pem_options_become_the_nss_librarys_database() {
        let tmp = tempfile::tempdir().unwrap();
        let spec_path = tmp.path().join("pki.toml");
        std::fs::write(
            &spec_path,
            "[ca.root_ca]\nsubject = \"/CN=root\"\n\n[cert.client]\nissuer = \"root_ca\"\n\
             subject = \"/CN=client\"\n\n[crl.root]\nissuer = \"root_ca\"\n",
        )
        .unwrap();
        let pki = crate::pki::PkiSpec::load(&spec_path)
            .unwrap()
            .materialize(&tmp.path().join("cache"))
            .unwrap();
        let dbs = NssDbs {
            dbs: Arc::default(),
            dir: Arc::new(tmp.path().join("nss-client")),
        };
        let path = |n: &str| pki.path(n).display().to_string();
        let request = |params: Vec<(&str, String)>| ConnectRequest {
            params: params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            timeout: Duration::from_secs(5),
            queries: Vec::new(),
            env: Vec::new(),
            pki_dir: None,
        };
        let params = dbs
            .libpq_params(&request(vec![
                ("sslmode", "verify-ca".into()),
                ("sslrootcert", path("root_ca.crt")),
                ("sslcert", path("client.crt")),
                ("sslkey", path("client.key")),
                ("sslcrl", path("root.crl")),
            ]))
            .unwrap();
        let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
        assert_eq!(get("sslmode").as_deref(), Some("verify-ca"));
        assert_eq!(get("sslcert").as_deref(), Some("client"));
        for pem in ["sslrootcert", "sslkey", "sslcrl", "sslcrldir"] {
            assert_eq!(get(pem), None, "{pem}");
        }
        let db = get("ssldatabase").expect("a database");
        let listing = crate::pki::nss::list(Path::new(&db)).unwrap();
        assert_eq!(
            listing.certs.get("root0").map(String::as_str),
            Some("CT,C,C")
        );
        assert_eq!(
            listing.certs.get("client").map(String::as_str),
            Some("u,u,u")
        );
        assert_eq!(listing.crl_issuers, vec!["root0".to_string()]);
        // A missing root file and no client certificate put nothing in a database.
        let params = dbs
            .libpq_params(&request(vec![
                ("sslmode", "verify-full".into()),
                ("sslrootcert", path("absent.crt")),
            ]))
            .unwrap();
        assert_eq!(
            params,
            vec![("sslmode".to_string(), "verify-full".to_string())]
        );
    }

    #[test]
    fn constraint_errors_and_database_builds_are_classified() {
        for name in [
            "SEC_ERROR_PATH_LEN_CONSTRAINT_INVALID",
            "SEC_ERROR_CERT_NOT_IN_NAME_SPACE",
            "SEC_ERROR_UNKNOWN_CRITICAL_EXTENSION",
            "SEC_ERROR_CRL_BAD_SIGNATURE",
        ] {
            let ChildResult::Failed { class, .. } = classify_nss(format!("{name}: text")) else {
                panic!("a failure")
            };
            assert_eq!(class, ErrorClass::ServerCertUntrusted, "{name}");
        }
        assert_eq!(
            db_build_class(
                "building the NSS database: crlutil -I failed: crlutil: unable to import CRL"
            ),
            ErrorClass::ServerCertUntrusted
        );
        assert_eq!(
            db_build_class("building the NSS database: key values mismatch"),
            ErrorClass::ClientKeyInvalid
        );
        assert_eq!(
            db_build_class("building the NSS database: certutil -N failed: x"),
            ErrorClass::Unclassified
        );
    }

    #[test]
    fn the_relays_read_error_wins_over_its_write_error() {
        let e = RelayErrors::default();
        assert_eq!(e.first(), None);
        e.set(
            1,
            "PR_CONNECT_RESET_ERROR: TCP connection reset by peer".into(),
        );
        e.set(
            0,
            "SSL_ERROR_UNKNOWN_CA_ALERT: Peer does not recognize".into(),
        );
        e.set(0, "PR_END_OF_FILE_ERROR: a later error".into());
        let raw = e.first().unwrap();
        assert!(raw.starts_with("SSL_ERROR_UNKNOWN_CA_ALERT"));
        match classify_nss(raw) {
            ChildResult::Failed { class, .. } => assert_eq!(class, ErrorClass::ClientCertUntrusted),
            _ => panic!("a failure"),
        }
    }

    #[test]
    fn nss_error_names_are_found_after_a_tools_own_words() {
        let tstclnt = "tstclnt: read from socket failed: SSL_ERROR_BAD_CERT_DOMAIN: Unable to communicate securely with peer: requested domain name does not match the server's certificate.";
        assert_eq!(nss_error_name(tstclnt), Some("SSL_ERROR_BAD_CERT_DOMAIN"));
        assert_eq!(
            nss_error_name("PR_END_OF_FILE_ERROR: Encountered end of file"),
            Some("PR_END_OF_FILE_ERROR")
        );
        assert_eq!(nss_error_name("Bad server certificate: -12276, text"), None);
        let ChildResult::Failed { class, .. } = classify_nss(tstclnt.into()) else {
            panic!("a failure")
        };
        assert_eq!(class, ErrorClass::HostnameMismatch);
        let ChildResult::Failed { class, .. } = classify_nss("SEC_ERROR_SOMETHING_NEW: x".into())
        else {
            panic!("a failure")
        };
        assert_eq!(class, ErrorClass::Unclassified);
    }
}

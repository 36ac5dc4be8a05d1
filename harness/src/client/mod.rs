//! Client stacks: the code that connects. One trait, one file per stack. The core resolves
//! options, bounds every attempt by a deadline and judges the outcome; an adapter only
//! connects, runs [`crate::outcome::SESSION_QUERY`] and maps its native errors to classes.

mod container_libpq;
mod container_nss;
mod container_shim;
pub mod error_table;
mod helper_process;
mod last_words;
mod libpq;
mod native_tls;
mod nss;
mod nss_ffi;
mod openssl_first_use;
pub mod protocol;
pub mod registry;
mod rustls;
pub mod self_shim;
pub mod server_messages;
pub mod shim;
pub mod shim_transport;

pub use libpq::Libpq;
pub use native_tls::NativeTls;
pub use nss::Nss;
pub use registry::Stacks;
pub use rustls::Rustls;
pub use shim::Shim;

use crate::error_class::ErrorClass;
use crate::facts::ClientFacts;
use crate::outcome::Outcome;
use futures_util::future::BoxFuture;
use std::time::Duration;

/// One resolved connection attempt: libpq keywords with PKI names already turned into paths.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ConnectRequest {
    /// Keyword/value pairs, in a stable order.
    pub params: Vec<(String, String)>,
    /// The whole attempt (connect, handshake, auth, session query) must end by then.
    pub timeout: Duration,
    /// The case's own SQL, run in the session after connecting (see [`Self::session_sql`]).
    pub queries: Vec<String>,
    /// Environment variables the client process must see (e.g. `SSL_CERT_FILE`). In-process
    /// stacks then run the attempt in a child process of their own ([`self_shim`]).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The directory of the scenario's PKI, where every file the request names lives.
    #[serde(default)]
    pub pki_dir: Option<std::path::PathBuf>,
}

impl ConnectRequest {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The SQL a connected attempt runs: the session query plus the case's queries.
    pub fn session_sql(&self) -> String {
        crate::outcome::session_sql(&self.queries)
    }
}

/// A client stack under test.
pub trait ClientStack: Send + Sync {
    /// Facts detected about this stack (name, TLS library and version, libpq version).
    fn facts(&self) -> &ClientFacts;

    /// Makes one attempt. Adapters need not enforce `timeout` themselves: the core also wraps
    /// the future in it; blocking adapters must still return by themselves eventually.
    fn connect(&self, request: ConnectRequest) -> BoxFuture<'static, Outcome>;

    /// Whether the stack runs in the harness's own process, which shares one environment
    /// across attempts. Stacks that start a process per attempt apply `request.env` themselves.
    fn in_process(&self) -> bool {
        true
    }

    /// libpq keywords the stack understands (a shim's `hello` reports them).
    fn options(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether attempts in one process would see each other's state (a libpq built with NSS):
    /// in a shim, each process then takes one attempt at a time.
    fn one_attempt_at_a_time(&self) -> bool {
        false
    }

    /// After an attempt of such a stack: whether this process kept state the next attempt
    /// would see, so that it must not take another.
    fn tainted(&self) -> bool {
        false
    }

    /// Like [`Self::connect`], but a broken stack (a shim that crashed or spoke garbage) is a
    /// harness error (`Err`, naming the stack), not an outcome.
    fn try_connect(&self, request: ConnectRequest) -> BoxFuture<'static, Result<Outcome, String>> {
        let attempt = self.connect(request);
        Box::pin(async move { Ok(attempt.await) })
    }

    /// Whether the stack bounds each attempt by `request.timeout` itself, counting from when the
    /// attempt really starts (a shim queues attempts beyond what it takes at once).
    fn owns_deadline(&self) -> bool {
        false
    }
}

/// Runs an attempt under the core's deadline; a hang becomes a `timeout` outcome. `Err` is a
/// harness error: the stack itself is broken.
pub async fn attempt(client: &dyn ClientStack, request: ConnectRequest) -> Result<Outcome, String> {
    let limit = request.timeout + Duration::from_secs(1);
    if let (true, Some(dir)) = (
        client.in_process() && client.facts().tls_library == "openssl",
        request.pki_dir.clone(),
    ) {
        let _ = tokio::task::spawn_blocking(move || openssl_first_use::prime(&dir)).await;
    }
    if client.owns_deadline() {
        return client.try_connect(request).await;
    }
    let attempt: BoxFuture<'static, Result<Outcome, String>> =
        if !request.env.is_empty() && client.in_process() {
            let name = client.facts().name.clone();
            Box::pin(async move { Ok(self_shim::attempt_with_env(name, request).await) })
        } else {
            client.try_connect(request)
        };
    match tokio::time::timeout(limit, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Ok(Outcome::failed(
            ErrorClass::Timeout,
            format!("no result within {limit:?}"),
        )),
    }
}

/// The OpenSSL this process loaded, as `3.0.17`.
pub fn openssl_version() -> String {
    // "OpenSSL 3.0.17 1 Jul 2025"
    openssl::version::version()
        .split_whitespace()
        .nth(1)
        .unwrap_or("unknown")
        .to_string()
}

/// The tokio-postgres `Config` of a request for the stacks built on tokio-postgres: every
/// option but sslmode and `taken` (what the stack applies to its TLS itself), quoted as a
/// conninfo string, with `sslmode` the mode the driver itself knows.
pub(crate) fn tokio_postgres_config(
    params: &[(String, String)],
    taken: &[&str],
    sslmode: &str,
) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut conninfo: Vec<String> = params
        .iter()
        .filter(|(k, _)| k != "sslmode" && !taken.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect();
    conninfo.push(format!("sslmode={}", quote(sslmode)));
    conninfo.join(" ").parse()
}

/// Runs the session SQL ([`ConnectRequest::session_sql`]) over an established tokio-postgres
/// session, then closes it: the shared tail of every stack built on tokio-postgres.
pub(crate) async fn tokio_postgres_session<R: Send + 'static>(
    sql: &str,
    client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<R>,
    classify: impl Fn(&tokio_postgres::Error) -> Outcome,
) -> Result<crate::outcome::Session, Outcome> {
    let rows = client.simple_query(sql).await.map_err(|e| classify(&e));
    drop(client);
    driver.abort();
    let row = rows?
        .into_iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("").to_string())
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        })
        .ok_or_else(|| {
            Outcome::failed(ErrorClass::Unclassified, "session query returned no row")
        })?;
    crate::outcome::Session::from_row(&row)
        .map_err(|e| Outcome::failed(ErrorClass::Unclassified, e))
}

/// A tokio-postgres error's whole chain as one line, as a user would see it logged.
pub(crate) fn error_chain(e: &tokio_postgres::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        src = s.source();
    }
    text
}

/// What tokio-postgres itself reports, whichever TLS stack sits under it.
pub(crate) const DRIVER_ERRORS: &[(&str, ErrorClass)] = &[
    ("channel binding", ErrorClass::ChannelBinding),
    ("invalid connection string", ErrorClass::InvalidOption),
    ("invalid configuration", ErrorClass::InvalidOption),
    ("unknown option", ErrorClass::InvalidOption),
    ("invalid value for option", ErrorClass::InvalidOption),
    // Its own check that direct TLS negotiation has no plaintext fallback (as libpq 17).
    (
        "may not be used with sslnegotiation=direct",
        ErrorClass::InvalidOption,
    ),
    ("password missing", ErrorClass::AuthFailed),
    ("timeout", ErrorClass::Timeout),
    ("connection refused", ErrorClass::IoError),
    ("connection closed", ErrorClass::IoError),
    ("connection reset by peer", ErrorClass::IoError),
    ("unexpected EOF", ErrorClass::IoError),
];

/// OpenSSL's words (native-tls) for the server's alerts about our certificate and for its own
/// refusals of a host name or a client certificate. libpq passes the same words on; its rows
/// are in `stacks/libpq/errors.toml`.
pub(crate) const OPENSSL_ALERTS: &[(&str, ErrorClass)] = &[
    ("alert bad certificate", ErrorClass::ClientCertUntrusted),
    (
        "alert unsupported certificate",
        ErrorClass::ClientCertUntrusted,
    ),
    ("alert certificate unknown", ErrorClass::ClientCertUntrusted),
    // The server could not verify our CertificateVerify signature.
    ("alert decrypt error", ErrorClass::ClientCertUntrusted),
    // OpenSSL refuses a host name it cannot send as SNI (e.g. with a trailing dot).
    ("ssl3 ext invalid servername", ErrorClass::InvalidOption),
    ("ee key too small", ErrorClass::ClientKeyInvalid),
    ("ca md too weak", ErrorClass::ClientKeyInvalid),
    // No signature scheme or cipher in common (a server that cannot use its own key, e.g.
    // the NSS backend with an RSA-PSS certificate), as rustls and NSS classify it.
    ("alert handshake failure", ErrorClass::ProtocolVersion),
];

/// The class of the first needle (from the tables, in order) found in `raw`, ignoring case:
/// libraries change the case of their reasons between versions. `unclassified` otherwise.
pub(crate) fn classify_text(raw: &str, tables: &[&[(&str, ErrorClass)]]) -> ErrorClass {
    let lower = raw.to_lowercase();
    tables
        .iter()
        .flat_map(|t| t.iter())
        .find(|(needle, _)| lower.contains(&needle.to_lowercase()))
        .map_or(ErrorClass::Unclassified, |(_, c)| *c)
}

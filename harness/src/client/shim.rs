//! A client stack outside pgssl: a long-lived shim process speaking the attempt protocol
//! ([`super::protocol`]). One process per stack, started once; up to `max_in_flight` attempts
//! at once, replies matched by id. The harness owns the deadline: an attempt without a reply in
//! time is `timeout`, and the process is killed and started again (attempts it still had are
//! sent again to the new one). A process that exits or prints anything but a protocol line is
//! a harness error naming the stack and the tail of its stderr, for that attempt and every
//! later one. Cases that set environment variables get a process of their own.
//!
//! Where the process runs is a [`Transport`] (shim_transport.rs): a child of pgssl for the
//! driver stacks, an exec in a server build's container for `libpq:<build>`; everything
//! here is the same for both.
//!
//! Plain threads do the pipe I/O, so a stack can be started before any tokio runtime exists
//! and its process outlives none of them.

use super::error_table::ErrorTable;
use super::protocol::{AttemptResult, Hello, Line, Request, PROTOCOL_VERSION};
use super::registry::Fact;
use super::shim_transport::{LocalProcess, Running, Transport};
use super::{server_messages, ClientStack, ConnectRequest};
use crate::error_class::ErrorClass;
use crate::facts::ClientFacts;
use crate::outcome::{Outcome, Session};
use anyhow::bail;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

/// How long a shim may take to say `hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at once of a stack whose processes take one attempt at a time (so as many
/// processes side by side).
const POOL_SIZE: usize = 12;
/// How much of a shim's stderr a harness error quotes.
const STDERR_TAIL: usize = 2000;

/// What `stack.toml` says about a shim.
#[derive(Debug, Clone)]
pub struct ShimSpec {
    pub name: String,
    pub dir: PathBuf,
    pub command: Vec<String>,
    pub install: String,
    pub facts: Vec<Fact>,
    pub max_in_flight: usize,
    /// Classes a reply may name itself (`stack.toml` `shim_classes`).
    pub shim_classes: Vec<ErrorClass>,
    pub errors: ErrorTable,
    /// Environment every process of the stack gets, before a case's own.
    pub env: Vec<(String, String)>,
}

impl ShimSpec {
    /// The command with `./` and `../` arguments resolved against the stack's folder.
    pub(super) fn command(&self) -> Command {
        let resolve = |a: &String| {
            if a.starts_with("./") || a.starts_with("../") {
                self.dir.join(a).display().to_string()
            } else {
                a.clone()
            }
        };
        let mut cmd = Command::new(resolve(&self.command[0]));
        cmd.args(self.command[1..].iter().map(resolve));
        cmd
    }
}

/// A client stack behind a shim process.
pub struct Shim {
    spec: Arc<ShimSpec>,
    transport: Arc<dyn Transport>,
    facts: ClientFacts,
    slots: Arc<Semaphore>,
    current: Arc<Mutex<Option<Arc<Process>>>>,
    /// Set once a process crashed or spoke garbage: every later attempt is that harness error.
    broken: Arc<Mutex<Option<String>>>,
    next_id: Arc<AtomicU64>,
    /// The hello asked for one attempt at a time per process: processes between attempts.
    idle: Option<Arc<Mutex<Vec<Arc<Process>>>>>,
}

impl Shim {
    /// Starts the stack's process as a child of pgssl and reads its `hello`; the facts come
    /// from it.
    pub fn start(spec: ShimSpec) -> anyhow::Result<Self> {
        Self::start_with(spec, Arc::new(LocalProcess))
    }

    /// Starts the stack's process through `transport` and reads its `hello`.
    pub fn start_with(spec: ShimSpec, transport: Arc<dyn Transport>) -> anyhow::Result<Self> {
        let spec = Arc::new(spec);
        let (process, hello) = Process::spawn(&spec, &transport, &[])?;
        let mut missing = Vec::new();
        for fact in &spec.facts {
            let (label, value) = match fact {
                Fact::TlsLibrary => ("tls_library", hello.tls_library.as_str()),
                Fact::TlsVersion => ("tls_version", hello.tls_version.as_str()),
                Fact::LibpqVersion => (
                    "libpq_version",
                    hello.libpq_version.as_deref().unwrap_or(""),
                ),
            };
            if value.is_empty() {
                missing.push(label);
            }
        }
        if !missing.is_empty() {
            bail!(
                "client stack {}: its hello lacks {} (stack.toml promises them)",
                spec.name,
                missing.join(", ")
            );
        }
        let pooled = hello.one_attempt_at_a_time;
        let in_flight = if pooled {
            spec.max_in_flight.max(POOL_SIZE)
        } else {
            spec.max_in_flight
        };
        let process = Arc::new(process);
        Ok(Shim {
            idle: pooled.then(|| Arc::new(Mutex::new(vec![process.clone()]))),
            facts: ClientFacts {
                name: spec.name.clone(),
                tls_library: hello.tls_library.to_lowercase(),
                tls_version: hello.tls_version,
                libpq_version: hello.libpq_version.unwrap_or_default(),
            },
            slots: Arc::new(Semaphore::new(in_flight)),
            current: Arc::new(Mutex::new((!pooled).then_some(process))),
            broken: Arc::new(Mutex::new(None)),
            next_id: Arc::new(AtomicU64::new(1)),
            spec,
            transport,
        })
    }

    /// The pid of the running shim process, if one runs (for tests).
    pub fn pid(&self) -> Option<i32> {
        self.current.lock().ok()?.as_ref().map(|p| p.running.pid())
    }
}

impl ClientStack for Shim {
    fn facts(&self) -> &ClientFacts {
        &self.facts
    }

    fn connect(&self, request: ConnectRequest) -> BoxFuture<'static, Outcome> {
        let attempt = self.try_connect(request);
        Box::pin(async move {
            attempt
                .await
                .unwrap_or_else(|e| Outcome::failed(ErrorClass::Unclassified, e))
        })
    }

    fn try_connect(&self, request: ConnectRequest) -> BoxFuture<'static, Result<Outcome, String>> {
        let idle = self.idle.clone();
        let (spec, transport, slots, current, broken, next_id) = (
            self.spec.clone(),
            self.transport.clone(),
            self.slots.clone(),
            self.current.clone(),
            self.broken.clone(),
            self.next_id.clone(),
        );
        Box::pin(async move {
            let _slot = slots.acquire_owned().await.map_err(|e| e.to_string())?;
            let deadline = request.timeout;
            let line = |id: u64| Request {
                id,
                params: request.params.clone(),
                env: request.env.clone(),
                session_query: request.session_sql(),
                queries: request.queries.clone(),
                deadline_ms: deadline.as_millis() as u64,
                pki_dir: request.pki_dir.as_ref().map(|d| d.display().to_string()),
            };
            // A case's environment needs a process of its own, started with it.
            if !request.env.is_empty() {
                let (spec2, transport2, env) =
                    (spec.clone(), transport.clone(), request.env.clone());
                let (process, _) =
                    tokio::task::spawn_blocking(move || Process::spawn(&spec2, &transport2, &env))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| format!("{e:#}"))?;
                let process = Arc::new(process);
                let reply = process.call(line(1), deadline).await;
                process.kill();
                return finish(&spec, reply);
            }
            if let Some(idle) = idle {
                return pooled_call(
                    &spec,
                    &transport,
                    &idle,
                    line(next_id.fetch_add(1, Ordering::Relaxed)),
                    deadline,
                )
                .await;
            }
            // Sent again at most once when the process was killed for another attempt.
            for _ in 0..2 {
                if let Some(why) = broken.lock().map_err(|e| e.to_string())?.clone() {
                    return Err(why);
                }
                let process = running(&spec, &transport, &current).await?;
                let id = next_id.fetch_add(1, Ordering::Relaxed);
                match process.call(line(id), deadline).await {
                    Ended::Killed => continue,
                    Ended::TimedOut => {
                        replace(&current, &process);
                        return Ok(Outcome::failed(
                            ErrorClass::Timeout,
                            format!(
                                "client stack {} gave no reply within {deadline:?}; its process was restarted",
                                spec.name
                            ),
                        ));
                    }
                    Ended::Crashed(why) => {
                        *broken.lock().map_err(|e| e.to_string())? = Some(why.clone());
                        return Err(why);
                    }
                    done @ Ended::Replied(..) => return finish(&spec, done),
                }
            }
            Err(format!(
                "client stack {}: its process was restarted twice during one attempt",
                spec.name
            ))
        })
    }

    fn owns_deadline(&self) -> bool {
        true
    }

    fn in_process(&self) -> bool {
        false
    }
}

/// One attempt in an idle process of the pool (or a new one), which goes back to the pool
/// unless its reply retires it or the attempt timed out.
async fn pooled_call(
    spec: &Arc<ShimSpec>,
    transport: &Arc<dyn Transport>,
    idle: &Mutex<Vec<Arc<Process>>>,
    request: Request,
    deadline: Duration,
) -> Result<Outcome, String> {
    let ready = {
        let mut idle = idle.lock().map_err(|e| e.to_string())?;
        std::iter::from_fn(|| idle.pop()).find(|p| p.alive())
    };
    let process = match ready {
        Some(p) => p,
        None => {
            let (spec2, transport2) = (spec.clone(), transport.clone());
            let (fresh, _) =
                tokio::task::spawn_blocking(move || Process::spawn(&spec2, &transport2, &[]))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("{e:#}"))?;
            Arc::new(fresh)
        }
    };
    match process.call(request, deadline).await {
        Ended::Replied(result, retire) => {
            if retire {
                process.kill();
            } else if let Ok(mut idle) = idle.lock() {
                idle.push(process);
            }
            finish(spec, Ended::Replied(result, retire))
        }
        Ended::TimedOut => {
            process.kill();
            Ok(Outcome::failed(
                ErrorClass::Timeout,
                format!(
                    "client stack {} gave no reply within {deadline:?}; its process was ended",
                    spec.name
                ),
            ))
        }
        other => finish(spec, other),
    }
}

/// The running process, started anew if the last one was killed.
async fn running(
    spec: &Arc<ShimSpec>,
    transport: &Arc<dyn Transport>,
    current: &Arc<Mutex<Option<Arc<Process>>>>,
) -> Result<Arc<Process>, String> {
    if let Some(p) = current.lock().map_err(|e| e.to_string())?.clone() {
        if !p.killed.load(Ordering::SeqCst) {
            return Ok(p);
        }
    }
    let (spec2, transport2) = (spec.clone(), transport.clone());
    let (fresh, _) = tokio::task::spawn_blocking(move || Process::spawn(&spec2, &transport2, &[]))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("{e:#}"))?;
    let fresh = Arc::new(fresh);
    let mut slot = current.lock().map_err(|e| e.to_string())?;
    // Another attempt may have started one meanwhile: use that, drop ours.
    match slot.as_ref() {
        Some(p) if !p.killed.load(Ordering::SeqCst) => Ok(p.clone()),
        _ => Ok(slot.insert(fresh).clone()),
    }
}

/// Kills `stale` (after a timeout) and forgets it, unless another attempt already did.
fn replace(current: &Mutex<Option<Arc<Process>>>, stale: &Arc<Process>) {
    if let Ok(mut slot) = current.lock() {
        if slot.as_ref().is_some_and(|p| Arc::ptr_eq(p, stale)) {
            *slot = None;
        }
    }
    stale.kill();
}

fn finish(spec: &ShimSpec, ended: Ended) -> Result<Outcome, String> {
    match ended {
        Ended::Replied(AttemptResult::Connected(c), _) => Ok(Session::from_row(&c.columns)
            .map(|s| Outcome::Connected(Box::new(s)))
            .unwrap_or_else(|e| Outcome::failed(ErrorClass::Unclassified, e))),
        Ended::Replied(AttemptResult::Failed(f), _) => {
            if let Some(c) = f.class.filter(|c| !spec.shim_classes.contains(c)) {
                return Err(format!(
                    "client stack {}: its reply names class `{c}`, which its stack.toml does not list in shim_classes",
                    spec.name
                ));
            }
            let class = f
                .class
                .or_else(|| server_messages::classify(&f.message))
                .unwrap_or_else(|| spec.errors.class_of(&f.message, f.code.as_deref()));
            Ok(Outcome::failed(class, f.message))
        }
        Ended::TimedOut => Ok(Outcome::failed(
            ErrorClass::Timeout,
            format!("client stack {} gave no reply in time", spec.name),
        )),
        Ended::Killed => Err(format!(
            "client stack {}: its process was killed",
            spec.name
        )),
        Ended::Crashed(why) => Err(why),
    }
}

/// How a call to the process ended.
#[derive(Debug, Clone)]
enum Ended {
    /// The reply, and whether it retires the process.
    Replied(AttemptResult, bool),
    TimedOut,
    /// The harness killed the process (for another attempt's timeout, or on drop).
    Killed,
    /// The process exited or printed garbage: a harness error, with its stderr.
    Crashed(String),
}

type Waiters = HashMap<u64, oneshot::Sender<Ended>>;

struct Pending {
    waiters: Waiters,
    /// Once set, the process takes no more requests.
    ended: Option<Ended>,
}

/// One shim process and the threads reading its pipes.
struct Process {
    running: Arc<dyn Running>,
    stdin: Mutex<Box<dyn Write + Send>>,
    pending: Arc<Mutex<Pending>>,
    killed: Arc<AtomicBool>,
}

impl Process {
    /// Starts one process through the transport and waits for its hello.
    fn spawn(
        spec: &Arc<ShimSpec>,
        transport: &Arc<dyn Transport>,
        env: &[(String, String)],
    ) -> anyhow::Result<(Self, Hello)> {
        let spawned = transport.spawn(spec, env)?;
        let (stdin, stdout, stderr) = (spawned.stdin, spawned.stdout, spawned.stderr);
        let tail = Arc::new(Mutex::new(String::new()));
        let stderr_thread = {
            let tail = tail.clone();
            std::thread::spawn(move || keep_tail(stderr, &tail))
        };
        let pending = Arc::new(Mutex::new(Pending {
            waiters: HashMap::new(),
            ended: None,
        }));
        let killed = Arc::new(AtomicBool::new(false));
        let (hello_tx, hello_rx) = std::sync::mpsc::channel();
        {
            let (pending, killed, name) = (pending.clone(), killed.clone(), spec.name.clone());
            let running = spawned.running.clone();
            std::thread::spawn(move || {
                read_replies(
                    &name,
                    running,
                    stdout,
                    stderr_thread,
                    &tail,
                    &pending,
                    &killed,
                    hello_tx,
                )
            });
        }
        let process = Process {
            running: spawned.running,
            stdin: Mutex::new(stdin),
            pending,
            killed,
        };
        let hello = match hello_rx.recv_timeout(HELLO_TIMEOUT) {
            Ok(Ok(h)) => h,
            Ok(Err(why)) => bail!("{why}"),
            Err(_) => bail!(
                "client stack {}: no hello within {HELLO_TIMEOUT:?}",
                spec.name
            ),
        };
        if hello.protocol != PROTOCOL_VERSION {
            bail!(
                "client stack {}: speaks attempt protocol {}, pgssl speaks {PROTOCOL_VERSION}",
                spec.name,
                hello.protocol
            );
        }
        Ok((process, hello))
    }

    /// Sends one request and waits for its reply, at most `deadline`.
    async fn call(&self, request: Request, deadline: Duration) -> Ended {
        let (tx, rx) = oneshot::channel();
        let id = request.id;
        {
            let Ok(mut pending) = self.pending.lock() else {
                return Ended::Killed;
            };
            if let Some(ended) = &pending.ended {
                return ended.clone();
            }
            pending.waiters.insert(id, tx);
        }
        let mut text = serde_json::to_string(&Line::Request(request)).expect("serialises");
        text.push('\n');
        // A failed write means the process is gone; the reader thread reports how.
        if let Ok(mut stdin) = self.stdin.lock() {
            let _ = stdin
                .write_all(text.as_bytes())
                .and_then(|()| stdin.flush());
        }
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(ended)) => ended,
            Ok(Err(_)) => Ended::Killed,
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.waiters.remove(&id);
                }
                Ended::TimedOut
            }
        }
    }

    /// Whether it can take a request: not killed, and its reader has not seen it end.
    fn alive(&self) -> bool {
        !self.killed.load(Ordering::SeqCst)
            && self
                .pending
                .lock()
                .map(|p| p.ended.is_none())
                .unwrap_or(false)
    }

    /// Kills the process group; waiting attempts learn `Killed` from the reader thread.
    fn kill(&self) {
        if !self.killed.swap(true, Ordering::SeqCst) {
            let ended = self
                .pending
                .lock()
                .map(|p| p.ended.is_some())
                .unwrap_or(true);
            // Once ended, the process is reaped and its id may be someone else's.
            if !ended {
                self.running.kill();
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Keeps the last [`STDERR_TAIL`] bytes of a stream.
fn keep_tail(mut stream: impl Read, tail: &Mutex<String>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        if let Ok(mut t) = tail.lock() {
            t.push_str(&String::from_utf8_lossy(&buf[..n]));
            if t.len() > STDERR_TAIL {
                let mut cut = t.len() - STDERR_TAIL;
                while !t.is_char_boundary(cut) {
                    cut += 1;
                }
                t.drain(..cut);
            }
        }
    }
}

/// The reader thread: the hello, then replies to their waiters. On EOF or garbage it kills the
/// process, reaps it and fails every waiter (with the stderr tail unless the harness killed it).
#[allow(clippy::too_many_arguments)]
fn read_replies(
    name: &str,
    running: Arc<dyn Running>,
    stdout: impl Read,
    stderr_thread: std::thread::JoinHandle<()>,
    tail: &Mutex<String>,
    pending: &Mutex<Pending>,
    killed: &AtomicBool,
    hello_tx: std::sync::mpsc::Sender<Result<Hello, String>>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let mut hello_tx = Some(hello_tx);
    let trouble: String = loop {
        let line = match lines.next() {
            None => break "exited".into(),
            Some(Err(e)) => break format!("stdout unreadable ({e})"),
            Some(Ok(l)) => l,
        };
        let parsed = serde_json::from_str::<Line>(&line);
        match (parsed, hello_tx.take()) {
            (Ok(Line::Hello(h)), Some(tx)) => {
                let _ = tx.send(Ok(h));
            }
            (Ok(Line::Reply(r)), None) => {
                let waiter = pending
                    .lock()
                    .ok()
                    .and_then(|mut p| p.waiters.remove(&r.id));
                if let Some(w) = waiter {
                    let _ = w.send(Ended::Replied(r.result, r.retire));
                }
                // No waiter: that attempt timed out already, and the process was killed for it.
            }
            (parsed, tx) => {
                hello_tx = tx;
                let what = match parsed {
                    Ok(_) => "a line out of turn",
                    Err(_) => "a line that is not the attempt protocol",
                };
                let mut shown: String = line.chars().take(200).collect();
                if shown.len() < line.len() {
                    shown.push('…');
                }
                break format!("printed {what}: {shown:?}");
            }
        }
    };
    // Whatever happened, the process goes, and with it its stderr.
    running.kill();
    let status = running.wait();
    let _ = stderr_thread.join();
    let ended = if killed.load(Ordering::SeqCst) {
        Ended::Killed
    } else {
        let stderr = tail
            .lock()
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        Ended::Crashed(format!(
            "client stack {name}: its shim {trouble} ({status}); its stderr ends: {}",
            if stderr.is_empty() {
                "(nothing)"
            } else {
                &stderr
            }
        ))
    };
    if let Some(tx) = hello_tx {
        let why = match &ended {
            Ended::Crashed(why) => why.clone(),
            _ => format!("client stack {name}: killed before its hello"),
        };
        let _ = tx.send(Err(why));
    }
    if let Ok(mut p) = pending.lock() {
        p.ended = Some(ended.clone());
        for (_, w) in p.waiters.drain() {
            let _ = w.send(ended.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::client::error_table::ErrorTable;
    use crate::client::registry::source_stacks_dir;
    use crate::error_class::ErrorClass;

    /// psycopg's tables: libpq's rows (included) first, then what psycopg words differently;
    /// psycopg-binary includes psycopg's.
    #[test]
    fn psycopg_tables_classify_libpq_and_their_own_texts() {
        for stack in ["psycopg", "psycopg-binary"] {
            let t = ErrorTable::load(&source_stacks_dir().join(stack).join("errors.toml")).unwrap();
            assert_eq!(
                t.class_of("connection is bad: \"REQUIRE\"", Some("OperationalError")),
                ErrorClass::InvalidOption,
                "{stack}"
            );
            assert_eq!(
                t.class_of(
                    "connection failed: SSL error: certificate verify failed",
                    Some("OperationalError")
                ),
                ErrorClass::ServerCertUntrusted,
                "{stack}"
            );
            assert_eq!(
                t.class_of("something never seen", Some("OperationalError")),
                ErrorClass::Unclassified,
                "{stack}"
            );
        }
    }

    /// The driver stacks' tables against texts their drivers really printed (the catalogue's
    /// runs): each class from its own wording, and a bare "connection closed" left unclassified.
    #[test]
    fn driver_tables_classify_their_drivers_texts() {
        let samples: &[(&str, &str, &str)] = &[
            ("asyncpg", "SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: certificate revoked (_ssl.c:992)", "server_cert_revoked"),
            ("asyncpg", "ConnectionDoesNotExistError: connection was closed in the middle of operation (while handling SSLError: [SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2546))", "client_cert_untrusted"),
            ("asyncpg", "ConnectionDoesNotExistError: connection was closed in the middle of operation (while handling SSLError: [SSL: SSLV3_ALERT_CERTIFICATE_REVOKED] sslv3 alert certificate revoked (_ssl.c:2546))", "client_cert_revoked"),
            ("asyncpg", "ConnectionDoesNotExistError: connection was closed in the middle of operation", "unclassified"),
            ("asyncpg", "SSLError: [SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version (_ssl.c:992)", "protocol_version"),
            ("asyncpg", "UndefinedObjectError: unrecognized configuration parameter \"sslcrldir\"", "invalid_option"),
            ("node-postgres", "Error: path length constraint exceeded", "server_cert_untrusted"),
            ("node-postgres", "Error: 80DC06E5BD7F0000:error:0A000414:SSL routines:ssl3_read_bytes:sslv3 alert certificate revoked:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 44", "client_cert_revoked"),
            ("node-postgres", "Error: Hostname/IP does not match certificate's altnames: Host: common-name.pg-ssltest.test. is not in the cert's altnames: DNS:dns1.alt-name.pg-ssltest.test", "hostname_mismatch"),
            ("node-postgres", "Error: The server does not support SSL connections", "ssl_not_supported"),
            ("pgjdbc", "org.postgresql.util.PSQLException: SSL error: PKIX path validation failed: java.security.cert.CertPathValidatorException: validity check failed / Caused by: java.security.cert.CertPathValidatorException: validity check failed / Caused by: java.security.cert.CertificateExpiredException: NotAfter: Mon Dec 01 18:38:19 UTC 2025", "server_cert_expired"),
            ("pgjdbc", "org.postgresql.util.PSQLException: The hostname otherhost.test could not be verified by hostnameverifier PgjdbcHostnameVerifier.", "hostname_mismatch"),
            ("pgjdbc", "org.postgresql.util.PSQLException: The server does not support SSL.", "ssl_not_supported"),
            ("pgx", "failed to connect to `host=common-name.pg-ssltest.test user=ssltestuser database=certdb`: failed to receive message (remote error: tls: revoked certificate)", "client_cert_revoked"),
            ("pgx", "failed to connect to `host=common-name.pg-ssltest.test user=ssltestuser database=trustdb`: failed to write startup message (x509: certificate relies on legacy Common Name field, use SANs instead)", "server_name_missing"),
            ("pgx", "failed to connect to `host=edge.pg-ssltest.test user=ssltestuser database=trustdb`: failed to write startup message (remote error: tls: handshake failure)", "protocol_version"),
            ("lib-pq", "x509: too many intermediates for path length constraint", "server_cert_untrusted"),
            ("lib-pq", "remote error: tls: bad certificate", "client_cert_untrusted"),
            ("lib-pq", "pq: SSL is not enabled on the server", "ssl_not_supported"),
        ];
        for (stack, message, class) in samples {
            let t = ErrorTable::load(&source_stacks_dir().join(stack).join("errors.toml")).unwrap();
            let want: ErrorClass = serde_json::from_str(&format!("\"{class}\"")).unwrap();
            assert_eq!(t.class_of(message, None), want, "{stack}: {message}");
        }
    }
}

//! NSS of a server build's image as a client stack (`nss:<build>`): NSS 3.61 (bullseye) up to
//! sid's, through NSS's own tools inside a container of the image, since the FFI helper is
//! built against this machine's glibc and cannot run there.
//!
//! The attempt's libpq options become an NSS database exactly as for the host stack
//! (`nss::NssDbs`, built on the host with certutil/pk12util/crlutil; the directory is
//! bind-mounted into the container at the same path). The harness performs the SSLRequest
//! and then relays the server socket to a loopback listener, to which `tstclnt` (started in
//! the stack's long-lived container by its launcher, one exec'd bash per stack)
//! connects and handshakes; tstclnt's stdin/stdout come back over another loopback
//! connection and carry the plaintext, on which tokio-postgres runs the session as for the
//! host stack (SCRAM, channel binding from the certificate tstclnt prints, the session query).
//!
//! Verification is the image's NSS: verify-full is tstclnt's own certificate authentication
//! (chain, trust, CRLs, the name given with `-a`); verify-ca and require/prefer with a root
//! file accept the handshake (`-o`) and verify the chain the server sent with the image's
//! `vfychain -u 1` (SSL server usage, no name) against the same database before any
//! plaintext is sent; no root file means no check (`-o`).

use super::nss::{
    by_mode, classify_driver, classify_nss, failed, finish, nss_error_name, tls_start,
    ChildRequest, ChildResult, NssDbs, TlsPath,
};
use super::nss_ffi::Verify;
use super::{ClientStack, ConnectRequest};
use crate::error_class::ErrorClass;
use crate::facts::ClientFacts;
use crate::outcome::Outcome;
use crate::runtime::docker;
use crate::runtime::docker_exec::{Exec, Stdin};
use anyhow::{Context, Result};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use testcontainers::{ContainerAsync, GenericImage};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Prefix of the stack's name: `nss:<build>`.
pub const PREFIX: &str = "nss:";

/// tstclnt's handshake callback prints its statistics last; this line ends them.
const HANDSHAKE_DONE: &str = "stateless resumes";
const CHAIN_START: &str = "==== certificate(s) sent by server: ====";
const CHAIN_LOCAL: &str = "==== locally found issuer certificate(s): ====";
const PEM_BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const PEM_END: &str = "-----END CERTIFICATE-----";

pub struct ContainerNss {
    facts: ClientFacts,
    /// Field order matters for drop: the container goes first (Drop), then the databases.
    container: Option<Arc<ContainerAsync<GenericImage>>>,
    launcher: Arc<Launcher>,
    dbs: NssDbs,
    _registration: crate::cleanup::Registration,
}

impl ContainerNss {
    /// Starts the client container of `build` and detects its NSS version.
    pub fn new(build: &str) -> Result<Self> {
        let image = docker::image_for(build)?;
        let pki_root = crate::pki::cache_root();
        std::fs::create_dir_all(&pki_root)?;
        let dbs = NssDbs::new()?;
        let req = docker::request(
            &image,
            vec!["sleep".into(), "infinity".into()],
            &[(pki_root.as_path(), true), (dbs.dir(), false)],
        );
        let (container, registration) = docker::start(req)?;
        let container = Arc::new(container);
        let id = container.id().to_string();
        let out = docker::exec_stdout(
            &container,
            &["dpkg-query", "-W", "-f", "${Version}", "libnss3"],
        )
        .context("detecting the container's NSS")?;
        let version = upstream_version(String::from_utf8_lossy(&out).trim());
        let launcher = Arc::new(Launcher::start(&id)?);
        Ok(ContainerNss {
            facts: ClientFacts {
                name: format!("{PREFIX}{build}"),
                tls_library: "nss".into(),
                tls_version: if version.is_empty() {
                    "unknown".into()
                } else {
                    version
                },
                libpq_version: String::new(),
            },
            container: Some(container),
            launcher,
            dbs,
            _registration: registration,
        })
    }
}

impl Drop for ContainerNss {
    fn drop(&mut self) {
        self.launcher.stop();
        if let Some(c) = self.container.take() {
            docker::remove_shared(c);
        }
    }
}

impl ClientStack for ContainerNss {
    fn facts(&self) -> &ClientFacts {
        &self.facts
    }

    /// tstclnt runs in the container, with the case's environment passed to it.
    fn in_process(&self) -> bool {
        false
    }

    fn connect(&self, request: ConnectRequest) -> BoxFuture<'static, Outcome> {
        let dbs = self.dbs.clone();
        let path = InContainer {
            launcher: self.launcher.clone(),
            dir: dbs.dir().to_path_buf(),
            secs: request.timeout.as_secs().max(1),
        };
        Box::pin(async move {
            let child = match dbs.prepare(&request).await {
                Ok(c) => c,
                Err(outcome) => return outcome,
            };
            // Dropping the attempt closes the relay's listeners and sockets, so tstclnt sees
            // its TLS socket and stdin end; `timeout` inside bounds it as well.
            match tokio::time::timeout(request.timeout, by_mode(&child, &path)).await {
                Ok(result) => result.into_outcome(),
                Err(_) => Outcome::failed(
                    ErrorClass::Timeout,
                    format!("no result within {:?}", request.timeout),
                ),
            }
        })
    }
}

/// Marks the exit status a tool's wrapper appends to its output.
const EXIT_MARK: &str = "pgssl-exit=";

/// One long-lived exec of bash in the container (stdin attached) that starts the tools of
/// every attempt: an exec per tool cost 0.3-0.5 s under the runner's concurrency (runc sets
/// up each exec), more than everything else in an attempt. Each attempt writes one command
/// line; bash runs it in the background, its stdio connected back to the harness's loopback
/// listeners through bash's `/dev/tcp` (the container shares the host's network namespace).
/// bash's own output is drained and dropped: every tool's goes to its attempt's listeners.
struct Launcher {
    proc: std::sync::Mutex<Option<(Exec, Stdin)>>,
}

impl Launcher {
    fn start(id: &str) -> Result<Self> {
        let cmd = [
            "bash",
            "-c",
            "while IFS= read -r line; do (eval \"$line\") & done",
        ];
        let (exec, streams) = Exec::start(id, cmd.map(String::from).to_vec(), Vec::new())
            .context("starting the tool launcher in the NSS container")?;
        Ok(Launcher {
            proc: std::sync::Mutex::new(Some((exec, streams.stdin))),
        })
    }

    /// Hands one command line to bash (whole lines under the lock, so none interleave).
    fn run(&self, line: &str) -> Result<(), String> {
        use std::io::Write;
        let mut guard = self.proc.lock().expect("launcher");
        let (_, stdin) = guard.as_mut().ok_or("the tool launcher has stopped")?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("the tool launcher: {e}"))
    }

    /// Ends bash (and with its group, tools still running); the container goes next.
    fn stop(&self) {
        if let Some((exec, stdin)) = self.proc.lock().expect("launcher").take() {
            drop(stdin);
            exec.kill();
        }
    }
}

/// `13.22-0+deb11u1` -> `13.22`; `1:3.0.17-1~deb12u2` -> `3.0.17`.
fn upstream_version(v: &str) -> String {
    let v = v.split_once(':').map_or(v, |(_, rest)| rest);
    v.split(['-', '+', '~']).next().unwrap_or(v).to_string()
}

/// A word for bash, single-quoted.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// One shell command line for a tool: the case's environment (`env K=V ...`, so it reaches
/// the tool as it would any program), then the quoted arguments.
fn command_line(env: &[(String, String)], args: &[String]) -> String {
    let env = env.iter().map(|(k, v)| sh_quote(&format!("{k}={v}")));
    std::iter::once("env".to_string())
        .chain(env)
        .chain(args.iter().map(|a| sh_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A loopback listener for one connection back from the container.
async fn listener() -> Result<(tokio::net::TcpListener, u16), ChildResult> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| failed(ErrorClass::IoError, format!("loopback listener: {e}")))?;
    let port = l
        .local_addr()
        .map_err(|e| failed(ErrorClass::IoError, e.to_string()))?
        .port();
    Ok((l, port))
}

/// The TLS path through tstclnt in the stack's container.
struct InContainer {
    launcher: Arc<Launcher>,
    /// The databases' directory (bind-mounted): peer certificates for vfychain go there.
    dir: std::path::PathBuf,
    /// Bound for every tool run inside.
    secs: u64,
}

impl TlsPath for InContainer {
    fn tls<'a>(&'a self, req: &'a ChildRequest, mode: &'a str) -> BoxFuture<'a, ChildResult> {
        Box::pin(self.attempt(req, mode))
    }
}

/// Aborts the relay tasks of an attempt when it ends, however it ends.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// `TLSv1.2` -> `tls1.2` (tstclnt's -V names).
fn tstclnt_version(v: u16) -> &'static str {
    match v {
        0x0301 => "tls1.0",
        0x0302 => "tls1.1",
        0x0303 => "tls1.2",
        _ => "tls1.3",
    }
}

/// What tstclnt printed on stderr so far, as it goes.
#[derive(Default)]
struct Stderr {
    text: String,
    /// PEM of the certificates the server sent, leaf first.
    sent: Vec<String>,
    handshake_done: bool,
}

impl Stderr {
    /// Feeds one line; returns whether the handshake has completed.
    fn line(&mut self, line: &str, state: &mut (bool, Option<String>)) -> bool {
        let l = line.trim_end();
        self.text.push_str(l);
        self.text.push('\n');
        let (in_sent, pem) = state;
        if l == CHAIN_START {
            *in_sent = true;
        } else if l == CHAIN_LOCAL || l.starts_with("==== end") {
            *in_sent = false;
        } else if *in_sent && l == PEM_BEGIN {
            *pem = Some(format!("{l}\n"));
        } else if let Some(p) = pem.as_mut() {
            p.push_str(l);
            p.push('\n');
            if l == PEM_END {
                self.sent.push(pem.take().unwrap_or_default());
            }
        }
        if l.ends_with(HANDSHAKE_DONE) {
            self.handshake_done = true;
        }
        self.handshake_done
    }

    /// tstclnt's own words, without the certificate dumps: what a failure is reported with.
    fn summary(&self) -> String {
        let lines: Vec<&str> = self
            .text
            .lines()
            .filter(|l| {
                nss_error_name(l).is_some()
                    || l.starts_with("tstclnt:")
                    || l.starts_with("Bad server certificate")
                    || l.contains("password")
                    || l.contains("Failed to load")
            })
            .collect();
        if lines.is_empty() {
            self.text
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .join(" | ")
        } else {
            lines.join(" | ")
        }
    }
}

/// NSS's SEC_ERROR codes that vfychain prints as numbers, by name (stable since NSS 3.0).
const SEC_ERROR_CODES: &[(i32, &str)] = &[
    (-8187, "SEC_ERROR_INVALID_ARGS"),
    (-8183, "SEC_ERROR_BAD_DER"),
    (-8182, "SEC_ERROR_BAD_SIGNATURE"),
    (-8181, "SEC_ERROR_EXPIRED_CERTIFICATE"),
    (-8180, "SEC_ERROR_REVOKED_CERTIFICATE"),
    (-8179, "SEC_ERROR_UNKNOWN_ISSUER"),
    (-8172, "SEC_ERROR_UNTRUSTED_ISSUER"),
    (-8171, "SEC_ERROR_UNTRUSTED_CERT"),
    (-8162, "SEC_ERROR_EXPIRED_ISSUER_CERTIFICATE"),
    (-8161, "SEC_ERROR_CRL_EXPIRED"),
    (-8160, "SEC_ERROR_CRL_BAD_SIGNATURE"),
    (-8159, "SEC_ERROR_CRL_INVALID"),
    (-8158, "SEC_ERROR_EXTENSION_VALUE_INVALID"),
    (-8156, "SEC_ERROR_CA_CERT_INVALID"),
    (-8155, "SEC_ERROR_PATH_LEN_CONSTRAINT_INVALID"),
    (-8154, "SEC_ERROR_CERT_USAGES_INVALID"),
    (-8151, "SEC_ERROR_UNKNOWN_CRITICAL_EXTENSION"),
    (-8131, "SEC_ERROR_REVOKED_KEY"),
    (-8102, "SEC_ERROR_INADEQUATE_KEY_USAGE"),
    (-8101, "SEC_ERROR_INADEQUATE_CERT_TYPE"),
    (-8080, "SEC_ERROR_CERT_NOT_IN_NAME_SPACE"),
    (-8078, "SEC_ERROR_CRL_NOT_YET_VALID"),
    (-8076, "SEC_ERROR_UNKNOWN_SIGNER"),
    (-8016, "SEC_ERROR_CERT_SIGNATURE_ALGORITHM_DISABLED"),
];

/// vfychain's verdict (`ERROR -8179: Peer's Certificate issuer is not recognized.`) with the
/// error's name put first, as the FFI reports it; unknown codes stay numeric (unclassified).
fn vfychain_error(out: &str) -> String {
    let problem = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("ERROR "))
        .and_then(|rest| rest.split_once(':'))
        .map(|(code, text)| (code.trim().parse::<i32>().ok(), text.trim().to_string()));
    let flat = out.split_whitespace().collect::<Vec<_>>().join(" ");
    match problem {
        Some((Some(code), text)) => match SEC_ERROR_CODES.iter().find(|(c, _)| *c == code) {
            Some((_, name)) => format!("{name}: {text} (vfychain: {flat})"),
            None => format!("NSS error {code}: {text} (vfychain: {flat})"),
        },
        _ => format!("vfychain: {flat}"),
    }
}

impl InContainer {
    async fn attempt(&self, req: &ChildRequest, mode: &str) -> ChildResult {
        let t0 = std::time::Instant::now();
        let trace = |what: &str| {
            if std::env::var_os("PGSSL_NSS_TRACE").is_some() {
                eprintln!("nss-trace {:>6} ms {what}", t0.elapsed().as_millis());
            }
        };
        let start = match tls_start(req, mode).await {
            Ok(s) => s,
            Err(r) => return r,
        };
        // tstclnt's TLS connection, its stdin/stdout (plaintext), its stderr.
        let ((tls_l, tls_port), (plain_l, plain_port), (err_l, err_port)) =
            match (listener().await, listener().await, listener().await) {
                (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
            };
        let mut args: Vec<String> = vec![
            "timeout".into(),
            "-k".into(),
            "1".into(),
            self.secs.to_string(),
            "tstclnt".into(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            tls_port.to_string(),
            // SNI and the name checked (SSL_SetURL) are the case's host, as for the FFI.
            "-a".into(),
            start.host.clone(),
            "-d".into(),
            crate::pki::nss::db_arg(&req.db),
            "-V".into(),
            format!(
                "{}:{}",
                tstclnt_version(start.versions.0),
                tstclnt_version(start.versions.1)
            ),
            // Synchronous certificate validation and client certificate selection: the
            // asynchronous default only resumes when the socket or stdin has news, which
            // never comes while the server waits for the handshake.
            "-O".into(),
            // The chain as PEM, printed during the handshake (channel binding, vfychain).
            "-C".into(),
            "-C".into(),
            "-C".into(),
        ];
        if start.verify != Verify::ChainAndName {
            args.push("-o".into());
        }
        if let Some(n) = &req.nickname {
            args.extend(["-n".into(), n.clone()]);
        }
        if let Some(pw) = &req.db_password {
            args.extend(["-w".into(), pw.clone()]);
        }
        let cmd = command_line(&req.env, &args);
        let line = format!(
            "{{ {cmd} 0<&3 1>&3 3>&-; echo \"{EXIT_MARK}$?\" >&2; }} \
             3<>/dev/tcp/127.0.0.1/{plain_port} 2>/dev/tcp/127.0.0.1/{err_port}"
        );
        if let Err(e) = self.launcher.run(&line) {
            return failed(ErrorClass::Unclassified, e);
        }
        trace("launched");
        let mut tasks = Tasks(Vec::new());
        // bash opens the stdio connection, then stderr's, then starts tstclnt, which
        // connects to the relay.
        let plain = match plain_l.accept().await {
            Ok((conn, _)) => conn,
            Err(e) => return failed(ErrorClass::IoError, format!("stdio accept: {e}")),
        };
        let mut lines = match err_l.accept().await {
            Ok((conn, _)) => tokio::io::BufReader::new(conn).lines(),
            Err(e) => return failed(ErrorClass::IoError, format!("stderr accept: {e}")),
        };
        let mut server = Some(start.tcp);
        let mut seen = Stderr::default();
        let mut state = (false, None);
        let mut tls_accept = std::pin::pin!(tls_l.accept());
        // Until the handshake completes (or tstclnt ends): relay TLS, collect stderr.
        loop {
            tokio::select! {
                a = &mut tls_accept, if server.is_some() => match a {
                    Ok((conn, _)) => {
                        trace("accepted");
                        let mut server = server.take().expect("one connection");
                        tasks.0.push(tokio::spawn(async move {
                            let mut conn = conn;
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut server).await;
                        }));
                    }
                    Err(e) => return failed(ErrorClass::IoError, format!("relay accept: {e}")),
                },
                l = lines.next_line() => match l {
                    Ok(Some(l)) => {
                        if seen.line(&l, &mut state) {
                            break;
                        }
                    }
                    // tstclnt ended before the handshake completed.
                    _ => return ended(&seen),
                }
            }
        }
        trace("handshake");
        // Keep collecting stderr (a later failure is reported there).
        let seen = Arc::new(std::sync::Mutex::new(seen));
        {
            let seen = seen.clone();
            tasks.0.push(tokio::spawn(async move {
                let mut state = (false, None);
                while let Ok(Some(l)) = lines.next_line().await {
                    seen.lock().expect("stderr").line(&l, &mut state);
                }
            }));
        }
        let sent = seen.lock().expect("stderr").sent.clone();
        let Some(leaf) = sent.first().and_then(|p| pem_der(p)) else {
            return failed(
                ErrorClass::Unclassified,
                format!(
                    "tstclnt printed no server certificate: {}",
                    seen.lock().expect("stderr").summary()
                ),
            );
        };
        if start.verify == Verify::Chain {
            if let Err(raw) = self.vfychain(req, &sent).await {
                // Newer vfychain (NSS 3.11x) reports a name outside a CA's name constraints as
                // invalid arguments against that CA: still its verdict on the chain.
                if raw.starts_with("SEC_ERROR_INVALID_ARGS")
                    && raw.contains("PROBLEM WITH THE CERT CHAIN")
                {
                    return failed(ErrorClass::ServerCertUntrusted, raw);
                }
                return classify_nss(raw);
            }
        }
        trace("verified");
        let binding = {
            use sha2::{Digest, Sha256};
            Some(Sha256::digest(&leaf).to_vec())
        };
        // The driver's end of a socket pair; the other end answers its SSLRequest with `S`
        // and then carries the plaintext to tstclnt's stdin and from its stdout.
        let (ours, theirs) = match tokio::net::UnixStream::pair() {
            Ok(p) => p,
            Err(e) => return failed(ErrorClass::IoError, e.to_string()),
        };
        tasks.0.push(tokio::spawn(async move {
            let (mut ours, mut plain) = (ours, plain);
            let mut request = [0u8; 8];
            if ours.read_exact(&mut request).await.is_err() || ours.write_all(b"S").await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut ours, &mut plain).await;
        }));
        let result = finish(start.config, theirs, binding, &req.sql).await;
        trace("session");
        match result {
            Ok(r) => r,
            // The server's own words win; otherwise NSS's reason, once tstclnt has said it.
            Err(e) if e.as_db_error().is_some() => classify_driver(&e),
            Err(e) => {
                for _ in 0..100 {
                    if seen.lock().expect("stderr").text.contains(EXIT_MARK) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let summary = seen.lock().expect("stderr").summary();
                if nss_error_name(&summary).is_some() {
                    classify_nss(format!("{summary} (driver: {})", super::error_chain(&e)))
                } else {
                    classify_driver(&e)
                }
                .after_handshake()
            }
        }
    }

    /// The image's `vfychain` on the chain the server sent (SSL server usage, no name),
    /// against the attempt's database: NSS's verdict for verify-ca.
    async fn vfychain(&self, req: &ChildRequest, sent: &[String]) -> Result<(), String> {
        let tag = format!(
            "peer-{}-{:x}",
            std::process::id(),
            rand_tag(sent.first().map(String::as_str).unwrap_or(""))
        );
        let mut files = Vec::new();
        for (i, pem) in sent.iter().enumerate() {
            let f = self.dir.join(format!("{tag}-{i}.pem"));
            std::fs::write(&f, pem).map_err(|e| format!("writing {}: {e}", f.display()))?;
            files.push(f);
        }
        let result = self.vfychain_run(req, &files).await;
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        result
    }

    async fn vfychain_run(
        &self,
        req: &ChildRequest,
        files: &[std::path::PathBuf],
    ) -> Result<(), String> {
        let (l, port) = listener()
            .await
            .map_err(|_| "vfychain: no loopback listener".to_string())?;
        let mut args: Vec<String> = vec![
            "timeout".into(),
            self.secs.to_string(),
            "vfychain".into(),
            "-d".into(),
            crate::pki::nss::db_arg(&req.db),
            "-u".into(),
            "1".into(),
        ];
        if let Some(pw) = &req.db_password {
            args.extend(["-w".into(), pw.clone()]);
        }
        for f in files {
            args.extend(["-a".into(), f.display().to_string()]);
        }
        let cmd = command_line(&req.env, &args);
        self.launcher.run(&format!(
            "{{ {cmd} </dev/null; echo \"{EXIT_MARK}$?\"; }} >/dev/tcp/127.0.0.1/{port} 2>&1"
        ))?;
        let (mut conn, _) = l.accept().await.map_err(|e| format!("vfychain: {e}"))?;
        let mut out = Vec::new();
        conn.read_to_end(&mut out)
            .await
            .map_err(|e| format!("vfychain: {e}"))?;
        let text = String::from_utf8_lossy(&out);
        let (text, code) = match text.trim_end().rsplit_once(EXIT_MARK) {
            Some((rest, code)) => (rest.to_string(), code.trim().parse::<i32>().ok()),
            None => (text.to_string(), None),
        };
        if code == Some(0) {
            Ok(())
        } else {
            Err(vfychain_error(&text))
        }
    }
}

/// tstclnt ended before the handshake completed: its stderr says why.
fn ended(seen: &Stderr) -> ChildResult {
    let summary = seen.summary();
    let code = seen
        .text
        .lines()
        .find_map(|l| l.strip_prefix(EXIT_MARK))
        .and_then(|c| c.trim().parse::<i32>().ok());
    match code {
        Some(124) | Some(137) => failed(
            ErrorClass::Timeout,
            format!("tstclnt ran out of time: {summary}"),
        ),
        _ if nss_error_name(&summary).is_some() => classify_nss(summary),
        _ => failed(
            ErrorClass::Unclassified,
            format!("tstclnt ended (exit {code:?}) without a handshake: {summary}"),
        ),
    }
}

/// A tag unique enough for concurrent attempts' files.
fn rand_tag(seed: &str) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(seed.as_bytes());
    h.finish()
}

/// The DER of one PEM certificate block.
fn pem_der(pem: &str) -> Option<Vec<u8>> {
    openssl::x509::X509::from_pem(pem.as_bytes())
        .ok()?
        .to_der()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions() {
        assert_eq!(super::upstream_version("13.22-0+deb11u1"), "13.22");
        assert_eq!(super::upstream_version("1:3.0.17-1~deb12u2"), "3.0.17");
        assert_eq!(super::upstream_version("1.1.1w-0+deb11u3"), "1.1.1w");
    }

    #[test]
    fn vfychain_errors_are_named() {
        let out = "Chain is bad!\nPROBLEM WITH THE CERT CHAIN:\nCERT 0. O=PGDG,CN=x :\n  ERROR -8179: Peer's Certificate issuer is not recognized.\n    CN=Test CA\n";
        let e = super::vfychain_error(out);
        assert!(e.starts_with("SEC_ERROR_UNKNOWN_ISSUER: Peer's"), "{e}");
        assert!(super::vfychain_error("ERROR -1: odd").starts_with("NSS error -1"));
    }

    #[test]
    fn stderr_collects_the_sent_chain() {
        let mut s = super::Stderr::default();
        let mut st = (false, None);
        for l in [
            super::CHAIN_START,
            "Certificate:",
            super::PEM_BEGIN,
            "QUJD",
            super::PEM_END,
            super::CHAIN_LOCAL,
            super::PEM_BEGIN,
            "REVG",
            super::PEM_END,
            "==== end of certificate chain information ====",
        ] {
            assert!(!s.line(l, &mut st));
        }
        assert!(s.line("0 stateless resumes", &mut st));
        assert_eq!(
            s.sent,
            vec![format!("{}\nQUJD\n{}\n", super::PEM_BEGIN, super::PEM_END)]
        );
    }
}

//! Faults and trust boundaries, end to end: who can reach a running server's superuser, signals
//! at any moment, a server killed under the attempts, the caller's trust-store variables, an
//! unwritable cache, and runs that would run nothing.

mod common;

use common::{
    is_root, pgssl, postmaster_pid, private_run_root, processes_naming, wait_for_server_in,
};
use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Waits for `child` at most `limit`; kills it and fails if it takes longer.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            child.kill().ok();
            panic!("pgssl did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// psql as the given uid and gid (`None`: ourselves), one query; (success, stdout + stderr).
fn psql(as_user: Option<u32>, conninfo: &str) -> (bool, String) {
    let mut cmd = match as_user {
        Some(id) => {
            let mut c = std::process::Command::new("setpriv");
            c.args([
                &format!("--reuid={id}"),
                &format!("--regid={id}"),
                "--clear-groups",
                "psql",
            ]);
            c
        }
        None => std::process::Command::new("psql"),
    };
    let out = cmd
        .args([
            "-X",
            "-A",
            "-t",
            "-w",
            "-c",
            "SELECT current_user",
            conninfo,
        ])
        .env("HOME", "/")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `nobody` and `nogroup` on Debian.
const NOBODY: u32 = 65534;

/// While a run is going, another local user reaches neither the admin socket nor the superuser
/// over TCP; the harness itself (peer authentication, mapped to `postgres`) still does.
#[test]
fn another_user_cannot_become_superuser_during_a_run() {
    if !is_root() {
        eprintln!("skipped: switching to another user needs root (CI runs as root)");
        return;
    }
    let root = private_run_root();
    let mut child = pgssl()
        .args(["tap", "--client", "libpq", "--jobs", "1", "scenarios"])
        .env("PGSSL_RUN_ROOT", root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (_, pidfile) = wait_for_server_in(root.path(), child.id());
    let text = std::fs::read_to_string(&pidfile).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let (port, sock) = (lines[3].trim(), lines[4].trim());
    let admin = format!("host={sock} port={port} user=postgres dbname=postgres");
    let (ok, out) = psql(None, &admin);
    assert!(
        ok && out.trim() == "postgres",
        "the harness's own user: {out}"
    );
    let (ok, out) = psql(Some(NOBODY), &admin);
    assert!(
        !ok && out.contains("Permission denied"),
        "nobody over the admin socket: {out}"
    );
    let tcp = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let (ok, out) = psql(Some(NOBODY), &tcp);
    assert!(
        !ok && out
            .contains("pg_hba.conf rejects connection for host \"127.0.0.1\", user \"postgres\""),
        "nobody over TCP: {out}"
    );
    signal(&child, libc::SIGINT);
    wait_bounded(&mut child, Duration::from_secs(60));
}

/// SIGINT and SIGTERM at several moments (before the handlers exist, during the first server
/// starts, while attempts run, during later starts): nothing survives the run, neither a
/// postmaster nor a run directory.
#[test]
fn a_signal_at_any_moment_leaves_nothing_behind() {
    // Startup failures and an IPv6 scenario make the workers start fresh servers throughout.
    let files = [
        "harness/tests/data/wrong-expectations.toml",
        "scenarios/server-start-protocol-range.toml",
        "scenarios/hostname-ip-alt-names.toml",
        "scenarios/server-start-invalid-groups.toml",
        "scenarios/sslmode-ssl-on-host.toml",
        "scenarios/passphrase-wrong.toml",
    ];
    let delays = [0, 15, 40, 80, 150, 250, 400, 600, 900, 1300];
    let (mut dirs_left, mut servers_left) = (0, 0);
    for (i, ms) in delays.iter().enumerate() {
        let root = private_run_root();
        let mut child = pgssl()
            .args(["run", "--client", "libpq", "--jobs", "2"])
            .args(files)
            .env("PGSSL_RUN_ROOT", root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*ms));
        let sig = if i % 2 == 0 {
            libc::SIGINT
        } else {
            libc::SIGTERM
        };
        signal(&child, sig);
        let status = wait_bounded(&mut child, Duration::from_secs(60));
        // Processes that name the root: postmasters (their -D) and anything else we started.
        let servers = processes_naming(&root.path().display().to_string());
        let dirs: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        eprintln!(
            "signal {sig} after {ms} ms: {status:?}, {} processes, {} directories left",
            servers.len(),
            dirs.len()
        );
        for pid in &servers {
            // SAFETY: a leaked server of our own run.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        servers_left += servers.len();
        dirs_left += dirs.len();
    }
    assert_eq!(
        (servers_left, dirs_left),
        (0, 0),
        "(servers, run directories) left after {} signalled runs",
        delays.len()
    );
}

/// A server killed while attempts run is the harness's failure, named, exit 2 — not a list of
/// `io_error` case failures — and the run still ends in bounded time.
#[test]
fn a_killed_server_is_a_harness_error() {
    let root = private_run_root();
    let mut child = pgssl()
        .args([
            "run",
            "--client",
            "libpq,nss",
            "--jobs",
            "1",
            "--timeout",
            "5",
            "scenarios/server-cert-verification.toml",
            "scenarios/hostname-cn-only.toml",
        ])
        .env("PGSSL_RUN_ROOT", root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it comes: a pipe left unread fills (64 KiB) and stops the run on its next line.
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).ok();
        text
    });
    let (_, pidfile) = wait_for_server_in(root.path(), child.id());
    let log = pidfile
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("server.log");
    // Kill it once the cases' own connections (TCP, not the admin socket) have begun.
    let start = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("host=127.0.0.1")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no attempt began"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let postmaster = postmaster_pid(&pidfile).unwrap();
    // SAFETY: the run's own server.
    unsafe { libc::kill(postmaster, libc::SIGKILL) };
    let status = wait_bounded(&mut child, Duration::from_secs(120));
    let stderr = reader.join().unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the local server died during scenarios/server-cert-verification.toml"),
        "{stderr}"
    );
    assert!(
        stderr.contains("signal: 9"),
        "the error says how it died: {stderr}"
    );
}

/// The caller's SSL_CERT_FILE does not reach the stacks (it would make the system store trust
/// the test CA), while a case that sets it itself still gets it.
#[test]
fn the_callers_trust_store_variables_do_not_reach_the_stacks() {
    let certs = tempfile::tempdir().unwrap();
    let status = pgssl()
        .args(["certs", "--out"])
        .arg(certs.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let ca = certs.path().join("root+server_ca.crt");
    let out = pgssl()
        .args([
            "run",
            "--client",
            "libpq,native-tls,rustls",
            "--filter",
            "sslrootcert-system-",
            "scenarios/newer-options.toml",
        ])
        .env("SSL_CERT_FILE", &ca)
        .env("SSL_CERT_DIR", certs.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(" 9 passed, 0 failed"), "{stderr}");
}

/// A cache directory that cannot be created is a located error (exit 2), not a panic.
#[test]
fn an_unwritable_cache_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let out = pgssl()
        .args(["run", "--client", "nss", "scenarios/unix-socket.toml"])
        .env("PGSSL_CACHE_DIR", &not_a_dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&not_a_dir.join("nss-client").display().to_string()),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A run that would run nothing says so and exits 2: a filter matching no case, a directory
/// without scenarios; and a zero timeout is refused.
#[test]
fn a_run_of_nothing_is_bad_input() {
    let out = pgssl()
        .args(["run", "--filter", "no-such-case-anywhere"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("matches none of the"), "{stderr}");

    let empty = tempfile::tempdir().unwrap();
    let out = pgssl().arg("tap").arg(empty.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no scenario files"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing may run");

    let out = pgssl()
        .args(["run", "--timeout", "0", "scenarios/unix-socket.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--timeout"), "{stderr}");
}

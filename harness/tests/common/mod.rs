//! Helpers shared by the tests that run the `pgssl` binary against real servers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `pgssl` run from the repository root.
pub fn pgssl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgssl"));
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    cmd
}

/// What a finished process printed: stdout, then stderr.
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A private run root (`PGSSL_RUN_ROOT`) whose contents are only the run under test's: what
/// is left in it, and every process naming it, is a leak. 0755 like /dev/shm's run
/// directories' parent, so servers running as `postgres` reach their directories.
pub fn private_run_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::Builder::new()
        .prefix("pgssl-test-root-")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    root
}

/// The run directory a pgssl process created under `root` and the pid file of a server in it,
/// once one is up.
pub fn wait_for_server_in(root: &Path, pid: u32) -> (PathBuf, PathBuf) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        for e in std::fs::read_dir(root).unwrap().flatten() {
            let dir = e.path();
            let owner = std::fs::read_to_string(dir.join("owner")).unwrap_or_default();
            if owner.split_whitespace().next() != Some(&pid.to_string()) {
                continue;
            }
            for slot in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let pidfile = slot.path().join("data/postmaster.pid");
                let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
                // Line 8 is the postmaster's status, "ready" once it accepts connections.
                if text.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
                    return (dir, pidfile);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no server appeared for pgssl pid {pid}");
}

/// The run directory of pgssl `pid` under the default run root and its postmaster.
pub fn wait_for_server(pid: u32) -> (PathBuf, i32) {
    let (dir, pidfile) = wait_for_server_in(&pgssl::cleanup::run_root(), pid);
    (dir, postmaster_pid(&pidfile).expect("postmaster pid"))
}

/// Line 1 of postmaster.pid.
pub fn postmaster_pid(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Waits up to 20 s for `pid` to end.
pub fn gone(pid: i32) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if !pgssl::cleanup::alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Live processes whose command line mentions `text`.
pub fn processes_naming(text: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(text) && pgssl::cleanup::alive(*pid)
        })
        .collect()
}

/// Whether this test runs as root (switching to another user needs it).
pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

//! Everything the harness starts is registered here, so it can be stopped on drop, on Ctrl-C
//! and SIGTERM, and reaped by a later run if this one is SIGKILLed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Resource {
    /// A server process we started (its own process group).
    Process(i32),
    /// A directory to remove.
    Dir(PathBuf),
    /// A Docker container id to remove (the container runtime and in-container clients).
    Container(String),
}

static REGISTRY: Mutex<BTreeMap<u64, Resource>> = Mutex::new(BTreeMap::new());
/// Held for the whole of a clean-up, so a second caller waits until the first has finished.
static CLEANING: Mutex<()> = Mutex::new(());
/// Exit status requested by a signal (130 for SIGINT, 143 for SIGTERM), 0 if none arrived.
static INTERRUPTED: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The exit status a signal asked for, if one arrived.
pub fn interrupted() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        code => Some(code),
    }
}
static NEXT: AtomicU64 = AtomicU64::new(1);
/// Set when clean-up began: nothing new may start (a worker mid-start would otherwise create a
/// container or directory after the clean-up looked).
static SHUTTING_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether clean-up has begun; starters check it before and after creating anything.
pub fn shutting_down() -> bool {
    SHUTTING_DOWN.load(Ordering::SeqCst)
}

/// Readers are starters between their first creation (a directory, a process) and its
/// registration; clean-up takes it for writing, so it sees everything they made.
static CREATING: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Permission to create something that will be registered: clean-up waits until it is
/// dropped, and once clean-up began none is given, so nothing can appear after it looked.
/// Hold it from the first `mkdir` to the registration; never take a second one while holding
/// one (a waiting clean-up would block it).
pub struct Creating(#[allow(dead_code)] std::sync::RwLockReadGuard<'static, ()>);

/// See [`Creating`]. Fails once clean-up has begun.
pub fn creating() -> anyhow::Result<Creating> {
    let guard = CREATING.read().unwrap_or_else(|e| e.into_inner());
    if shutting_down() {
        anyhow::bail!("shutting down: nothing new is started");
    }
    Ok(Creating(guard))
}

/// Prefix of every run directory under the temp dir.
pub const RUN_DIR_PREFIX: &str = "pgssl-run-";
/// File in a run directory naming the owning process: `<pid> <start time>`.
pub const OWNER_FILE: &str = "owner";

/// Keeps a resource registered until dropped (the owner cleans it up itself first).
#[derive(Debug)]
pub struct Registration(u64);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut r) = REGISTRY.lock() {
            r.remove(&self.0);
        }
    }
}

fn register(res: Resource) -> Registration {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    REGISTRY.lock().expect("cleanup registry").insert(id, res);
    Registration(id)
}

pub fn register_process(pid: i32) -> Registration {
    register(Resource::Process(pid))
}

pub fn register_dir(path: &Path) -> Registration {
    register(Resource::Dir(path.to_path_buf()))
}

pub fn register_container(id: &str) -> Registration {
    register(Resource::Container(id.to_string()))
}

/// Stops a process: SIGINT (fast shutdown for PostgreSQL), then SIGQUIT, then SIGKILL.
pub fn stop_process(pid: i32, grace: Duration) {
    signal_until_gone(
        pid,
        &[
            (libc::SIGINT, grace),
            (libc::SIGQUIT, Duration::from_secs(2)),
            (libc::SIGKILL, Duration::from_secs(2)),
        ],
    );
}

/// Stops a postmaster whose files are thrown away next: an immediate shutdown (SIGQUIT: no
/// shutdown checkpoint), then SIGKILL.
pub fn discard_process(pid: i32) {
    signal_until_gone(
        pid,
        &[
            (libc::SIGQUIT, Duration::from_secs(5)),
            (libc::SIGKILL, Duration::from_secs(2)),
        ],
    );
}

fn signal_until_gone(pid: i32, steps: &[(i32, Duration)]) {
    for &(sig, wait) in steps {
        // SAFETY: signalling a pid we started.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return;
        }
        let start = Instant::now();
        while start.elapsed() < wait {
            if !alive(pid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Is `pid` running (and not a zombie we could reap)?
pub fn alive(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: reaps our own child if it exited; harmless for non-children.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Stops every registered process and removes every registered directory.
pub fn cleanup_all() {
    SHUTTING_DOWN.store(true, Ordering::SeqCst);
    let _one_at_a_time = CLEANING.lock();
    // Starters in the middle of creating something finish and register it first.
    let _no_starts = CREATING.write().unwrap_or_else(|e| e.into_inner());
    let resources: Vec<Resource> = match REGISTRY.lock() {
        Ok(mut r) => std::mem::take(&mut *r).into_values().collect(),
        Err(_) => return,
    };
    for r in &resources {
        if let Resource::Process(pid) = r {
            stop_process(*pid, Duration::from_secs(5));
        }
    }
    let containers: Vec<String> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Container(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    if !containers.is_empty() {
        crate::runtime::docker::remove_by_id(&containers);
    }
    // And any this run created but had not registered yet (a start in flight).
    crate::runtime::docker::remove_own();
    for r in &resources {
        if let Resource::Dir(d) = r {
            std::fs::remove_dir_all(d).ok();
        }
    }
}

/// On SIGINT or SIGTERM: clean up everything, then exit 130 / 143. The handlers are in place
/// when this returns (a signal before that would kill the process with nothing to clean).
pub fn install_signal_handlers() {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let Ok(rt) = rt else { return };
    let signals = {
        let _in_runtime = rt.enter();
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    let (Ok(mut int), Ok(mut term)) = signals else {
        return;
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            let code = tokio::select! {
                _ = int.recv() => 130,
                _ = term.recv() => 143,
            };
            INTERRUPTED.store(code, Ordering::SeqCst);
            eprintln!("pgssl: interrupted; stopping servers and removing temporary files");
            cleanup_all();
            std::process::exit(code);
        });
    });
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Where run directories (servers' data directories and sockets) go: `PGSSL_RUN_ROOT`, else
/// `/dev/shm` when it is a writable directory, else the temp dir. Every server start copies
/// a cached data directory of about a thousand files; on a disk file system that many
/// creations and deletions per run made inode allocation a quarter of a run's CPU time, on
/// tmpfs it costs next to nothing.
pub fn run_root() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("PGSSL_RUN_ROOT") {
        return dir.into();
    }
    let shm = std::path::Path::new("/dev/shm");
    let writable = std::fs::metadata(shm).is_ok_and(|m| m.is_dir())
        // SAFETY: a NUL-terminated path; access() only reads it.
        && unsafe { libc::access(c"/dev/shm".as_ptr(), libc::W_OK | libc::X_OK) } == 0;
    if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Creates this run's directory under [`run_root`] (mode 0755: servers running as another
/// user reach their own subdirectories), stamped with our pid and start time, and registers it.
pub fn create_run_dir() -> anyhow::Result<(tempfile::TempDir, Registration)> {
    use std::os::unix::fs::PermissionsExt;
    let _creating = creating()?;
    let dir = tempfile::Builder::new()
        .prefix(RUN_DIR_PREFIX)
        .tempdir_in(run_root())?;
    let registration = register_dir(dir.path());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let me = std::process::id() as i32;
    std::fs::write(
        dir.path().join(OWNER_FILE),
        format!("{me} {}", process_start_time(me).unwrap_or(0)),
    )?;
    Ok((dir, registration))
}

/// Removes run directories whose owner is gone, stopping any server still running in them.
/// Returns how many directories were reaped.
pub fn reap_stale() -> usize {
    crate::cache::reap_abandoned_staging(&crate::pki::cache_root());
    let Ok(entries) = std::fs::read_dir(run_root()) else {
        return 0;
    };
    // Containers first: their servers keep files open in the run directories below.
    let mut reaped = crate::runtime::docker::reap_stale_containers();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_run = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(RUN_DIR_PREFIX));
        if !is_run {
            continue;
        }
        let owner = std::fs::read_to_string(path.join(OWNER_FILE)).unwrap_or_default();
        let mut it = owner
            .split_whitespace()
            .map(|s| s.parse::<u64>().unwrap_or(0));
        let (pid, start) = (it.next().unwrap_or(0) as i32, it.next().unwrap_or(0));
        if pid > 0 && alive(pid) && process_start_time(pid) == Some(start) {
            continue;
        }
        for pidfile in find_postmaster_pids(&path) {
            let text = std::fs::read_to_string(&pidfile).unwrap_or_default();
            let Some(pm) = text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pm}/cmdline")).unwrap_or_default();
            let data_dir = pidfile
                .parent()
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if String::from_utf8_lossy(&cmdline).contains(&data_dir) {
                stop_process(pm, Duration::from_secs(2));
            }
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            reaped += 1;
        }
    }
    reaped
}

fn find_postmaster_pids(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            let candidate = p.join("data").join("postmaster.pid");
            if candidate.exists() {
                out.push(candidate);
            }
        }
    }
    out
}

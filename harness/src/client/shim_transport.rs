//! Where a shim process runs: the seam under shim.rs's protocol machinery (hello, deadlines,
//! restarts, replies by id, crashes as harness errors), which is the same whatever carries the
//! lines. A transport starts one process and hands back its three streams and a handle to
//! kill it and learn how it ended: a child of pgssl ([`LocalProcess`], every driver stack), or
//! an exec in a running container ([`ContainerExec`], `libpq:<build>`).

use super::shim::ShimSpec;
use crate::cleanup::{self, Registration};
use crate::runtime::docker_exec::Exec;
use anyhow::Context;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

/// A started shim process.
pub struct Spawned {
    pub stdin: Box<dyn Write + Send>,
    pub stdout: Box<dyn Read + Send>,
    pub stderr: Box<dyn Read + Send>,
    pub running: Arc<dyn Running>,
}

/// A handle on a started shim process.
pub trait Running: Send + Sync {
    /// Its process id on this machine (tests signal it).
    fn pid(&self) -> i32;
    /// Kills it and whatever it started. Callers stop calling once [`Running::wait`] returned.
    fn kill(&self);
    /// Waits for its end (its stdout has closed, or it was killed); how it ended, for messages.
    fn wait(&self) -> String;
}

/// Starts shim processes.
pub trait Transport: Send + Sync {
    /// Starts one process of the stack with `env` added to its environment.
    fn spawn(&self, spec: &ShimSpec, env: &[(String, String)]) -> anyhow::Result<Spawned>;
}

/// The shim as a child process of pgssl, started from `stack.toml`'s `command` in the stack's
/// folder.
pub struct LocalProcess;

impl Transport for LocalProcess {
    /// Starts the command isolated like the built-in stacks (an empty environment but PATH,
    /// a private HOME, no controlling terminal) with `env` added.
    fn spawn(&self, spec: &ShimSpec, env: &[(String, String)]) -> anyhow::Result<Spawned> {
        let home = tempfile::Builder::new()
            .prefix("pgssl-shim-home-")
            .tempdir()
            .context("creating a private HOME for the shim")?;
        let mut cmd = spec.command();
        cmd.current_dir(&spec.dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("LC_ALL", "C")
            // No Kerberos credentials cache of the user's either.
            .env("KRB5CCNAME", "FILE:/nonexistent/pgssl-home/krb5cc")
            .envs(spec.env.iter().chain(env).map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: setsid is async-signal-safe; a session of its own means no terminal to
        // prompt on (OpenSSL asks for key passphrases there) and one group to kill.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child: Child = cmd.spawn().with_context(|| {
            format!(
                "client stack {}: cannot start {:?} in {} (install: {})",
                spec.name,
                spec.command,
                spec.dir.display(),
                if spec.install.is_empty() {
                    "see its stack.toml"
                } else {
                    &spec.install
                }
            )
        })?;
        let pid = child.id() as i32;
        let registration = cleanup::register_process(pid);
        Ok(Spawned {
            stdin: Box::new(child.stdin.take().expect("piped")),
            stdout: Box::new(child.stdout.take().expect("piped")),
            stderr: Box::new(child.stderr.take().expect("piped")),
            running: Arc::new(LocalChild {
                pid,
                child: Mutex::new(child),
                _registration: registration,
                _home: home,
            }),
        })
    }
}

struct LocalChild {
    pid: i32,
    child: Mutex<Child>,
    _registration: Registration,
    _home: tempfile::TempDir,
}

impl Running for LocalChild {
    fn pid(&self) -> i32 {
        self.pid
    }

    fn kill(&self) {
        // SAFETY: the process group of a child we started (setsid) and have not reaped yet
        // (only `wait` reaps it).
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
    }

    fn wait(&self) -> String {
        match self.child.lock() {
            Ok(mut c) => c.wait().map(|s| s.to_string()).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

/// The shim as a process in a running container, one exec per process: `cmd` inside, with
/// `LC_ALL=C` and the case's environment added to the image's.
pub struct ContainerExec {
    pub container_id: String,
    pub cmd: Vec<String>,
}

impl Transport for ContainerExec {
    fn spawn(&self, spec: &ShimSpec, env: &[(String, String)]) -> anyhow::Result<Spawned> {
        let env = std::iter::once("LC_ALL=C".to_string())
            .chain(spec.env.iter().chain(env).map(|(k, v)| format!("{k}={v}")))
            .collect();
        let (exec, streams) = Exec::start(&self.container_id, self.cmd.clone(), env)
            .with_context(|| format!("client stack {}", spec.name))?;
        Ok(Spawned {
            stdin: Box::new(streams.stdin),
            stdout: Box::new(streams.stdout),
            stderr: Box::new(streams.stderr),
            running: Arc::new(exec),
        })
    }
}

impl Running for Exec {
    fn pid(&self) -> i32 {
        Exec::pid(self)
    }

    fn kill(&self) {
        Exec::kill(self)
    }

    fn wait(&self) -> String {
        Exec::wait(self)
    }
}

//! The host NSS stack's worker processes (`pgssl nss-worker`). NSS keeps one certificate
//! database per process, so attempts run in processes of their own; starting one per attempt
//! cost more than the attempt itself. A worker instead takes attempts one at a time (a JSON
//! line in, a JSON line out), opening the attempt's database and shutting NSS down after each,
//! and goes back to an idle pool. The deadline is the caller's: a worker that does not answer
//! in time is killed (the attempt is `timeout`); one that dies or answers garbage is the
//! attempt's harness error with its stderr; one whose NSS did not shut down cleanly retires.

use super::helper_process::executable;
use super::nss::{ChildRequest, ChildResult, WorkerReply};
use crate::cleanup::{self, Registration};
use crate::error_class::ErrorClass;
use crate::outcome::Outcome;
use std::io::{BufRead, BufReader, Read, Seek, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: std::fs::File,
    _registration: Registration,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Idle workers, ready for an attempt.
static IDLE: Mutex<Vec<Worker>> = Mutex::new(Vec::new());

impl Worker {
    fn spawn() -> Result<Worker, String> {
        // stderr goes to an unnamed file: read only when the worker fails, never a full pipe.
        let stderr = tempfile::tempfile().map_err(|e| format!("a file for stderr: {e}"))?;
        let mut child = Command::new(executable())
            .arg("nss-worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr.try_clone().map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("starting pgssl nss-worker: {e}"))?;
        let registration = cleanup::register_process(child.id() as i32);
        Ok(Worker {
            stdin: child.stdin.take().expect("piped"),
            stdout: BufReader::new(child.stdout.take().expect("piped")),
            child,
            stderr,
            _registration: registration,
        })
    }

    /// Sends one request and reads its reply (blocking).
    fn exchange(&mut self, line: &str) -> Result<WorkerReply, String> {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("writing to pgssl nss-worker: {e}"))?;
        let mut reply = String::new();
        match self.stdout.read_line(&mut reply) {
            Ok(0) | Err(_) => Err(self.failure("ended without an answer")),
            Ok(_) => serde_json::from_str(&reply)
                .map_err(|e| self.failure(&format!("answered {reply:?} ({e})"))),
        }
    }

    /// What went wrong, with the worker's exit status and stderr.
    fn failure(&mut self, what: &str) -> String {
        self.child.kill().ok();
        let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
        let mut err = String::new();
        self.stderr.rewind().ok();
        self.stderr.read_to_string(&mut err).ok();
        format!("pgssl nss-worker {what} ({status}): {}", err.trim())
    }
}

/// Runs one attempt in an idle worker (or a new one) within `timeout`.
pub(crate) async fn call(
    request: &ChildRequest,
    timeout: Duration,
) -> Result<ChildResult, Outcome> {
    let line = serde_json::to_string(request).expect("request serialises");
    let idle = IDLE.lock().ok().and_then(|mut w| w.pop());
    let mut worker = match idle {
        Some(w) => w,
        None => tokio::task::spawn_blocking(Worker::spawn)
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|e| Outcome::failed(ErrorClass::Unclassified, e))?,
    };
    let pid = worker.child.id() as i32;
    let exchange = tokio::task::spawn_blocking(move || {
        let reply = worker.exchange(&line);
        (worker, reply)
    });
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok((worker, Ok(reply)))) => {
            if reply.reusable {
                if let Ok(mut idle) = IDLE.lock() {
                    idle.push(worker);
                }
            }
            Ok(reply.result)
        }
        Ok(Ok((_, Err(e)))) => Err(Outcome::failed(ErrorClass::Unclassified, e)),
        Ok(Err(e)) => Err(Outcome::failed(ErrorClass::Unclassified, e.to_string())),
        Err(_) => {
            // The blocked exchange then reads the end of the pipe and drops the worker.
            // SAFETY: signalling the worker we started, whose exchange is still under way.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            Err(Outcome::failed(
                ErrorClass::Timeout,
                format!("no result within {timeout:?}"),
            ))
        }
    }
}

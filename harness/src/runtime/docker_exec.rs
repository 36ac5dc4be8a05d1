//! A long-lived process in a running container with its stdin, stdout and stderr attached,
//! through the Docker API (bollard's `create_exec` / `start_exec`): the transport of the
//! in-container shim (`libpq:<build>`) and of the NSS tool launcher (`nss:<build>`).
//!
//! The exec's streams become plain `Read`/`Write` ends fed by tasks on the Docker runtime, so
//! the callers' threads (shim.rs reads its pipes on plain threads) need no runtime of their
//! own. Docker has no call to kill an exec, so [`Exec::kill`] signals its process group by the
//! process id Docker reports (the host's view; containers share the machine), after checking
//! that the id still names the process that was started.

use super::docker::{block_on, client};
use anyhow::{bail, Context, Result};
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::sync::Mutex;
use tokio::io::AsyncWriteExt;

/// One exec, started with its streams attached.
pub struct Exec {
    id: String,
    /// The process id on this machine, and its start time (so a reused id is never signalled).
    pid: i32,
    start_time: Option<u64>,
    /// Closed by the output task when the exec's output has ended.
    ended: Mutex<mpsc::Receiver<()>>,
}

/// The three ends of an exec's standard streams.
pub struct Streams {
    pub stdin: Stdin,
    pub stdout: Pipe,
    pub stderr: Pipe,
}

impl Exec {
    /// Starts `cmd` in `container` with `env` (`K=V`) added to the image's environment.
    pub fn start(container: &str, cmd: Vec<String>, env: Vec<String>) -> Result<(Exec, Streams)> {
        let docker = client()?;
        let container = container.to_string();
        let what = format!(
            "starting `{}` in container {}",
            cmd.first().map(String::as_str).unwrap_or_default(),
            &container[..container.len().min(12)]
        );
        block_on(async move {
            let created = docker
                .create_exec(
                    &container,
                    CreateExecOptions {
                        attach_stdin: Some(true),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(cmd),
                        env: Some(env),
                        ..Default::default()
                    },
                )
                .await?;
            let started = docker
                .start_exec(&created.id, Some(StartExecOptions::default()))
                .await?;
            let StartExecResults::Attached { mut output, input } = started else {
                bail!("the exec started detached");
            };
            let pid = docker.inspect_exec(&created.id).await?.pid.unwrap_or(0) as i32;
            let (out_tx, out_rx) = mpsc::channel();
            let (err_tx, err_rx) = mpsc::channel();
            let (ended_tx, ended_rx) = mpsc::channel::<()>();
            tokio::spawn(async move {
                use bollard::container::LogOutput;
                while let Some(Ok(chunk)) = output.next().await {
                    // A reader that went away is no reason to stop draining: the process
                    // would block on a full pipe.
                    let _ = match chunk {
                        LogOutput::StdOut { message } => out_tx.send(message.to_vec()),
                        LogOutput::StdErr { message } => err_tx.send(message.to_vec()),
                        _ => Ok(()),
                    };
                }
                drop(ended_tx);
            });
            let (in_tx, mut in_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
            tokio::spawn(async move {
                let mut input = input;
                while let Some(bytes) = in_rx.recv().await {
                    if input.write_all(&bytes).await.is_err() || input.flush().await.is_err() {
                        break;
                    }
                }
                // The writer was dropped: the process reads end of file.
                let _ = input.shutdown().await;
            });
            let exec = Exec {
                id: created.id,
                pid,
                start_time: crate::cleanup::process_start_time(pid),
                ended: Mutex::new(ended_rx),
            };
            let streams = Streams {
                stdin: Stdin(in_tx),
                stdout: Pipe::new(out_rx),
                stderr: Pipe::new(err_rx),
            };
            Ok((exec, streams))
        })
        .context(what)
    }

    /// The process id on this machine.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Kills the exec's process group (its process leads one, or is killed alone), unless the
    /// process is gone. Its output then ends.
    pub fn kill(&self) {
        let still_ours =
            self.pid > 0 && crate::cleanup::process_start_time(self.pid) == self.start_time;
        if still_ours && self.start_time.is_some() {
            // SAFETY: signals the process Docker started for us, checked by its start time.
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
                libc::kill(self.pid, libc::SIGKILL);
            }
        }
    }

    /// Waits until the output has ended, then says how the process ended.
    pub fn wait(&self) -> String {
        if let Ok(ended) = self.ended.lock() {
            let _ = ended.recv();
        }
        let Ok(docker) = client() else {
            return "unknown status".into();
        };
        let id = self.id.clone();
        let inspected = block_on(async move { docker.inspect_exec(&id).await });
        match inspected.ok().and_then(|i| i.exit_code) {
            Some(code) if code > 128 => format!("signal {} (exit {code})", code - 128),
            Some(code) => format!("exit status: {code}"),
            None => "unknown status".into(),
        }
    }
}

/// The write end of an exec's stdin; dropping it closes the process's stdin.
pub struct Stdin(tokio::sync::mpsc::UnboundedSender<Vec<u8>>);

impl Write for Stdin {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The read end of one of an exec's output streams.
pub struct Pipe {
    chunks: mpsc::Receiver<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
}

impl Pipe {
    fn new(chunks: mpsc::Receiver<Vec<u8>>) -> Self {
        Pipe {
            chunks,
            chunk: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            match self.chunks.recv() {
                Ok(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                // The output task ended: end of file.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    #[test]
    fn a_pipe_reads_its_chunks_then_ends() {
        let (tx, rx) = std::sync::mpsc::channel();
        for c in [&b"hel"[..], b"", b"lo\n"] {
            tx.send(c.to_vec()).unwrap();
        }
        drop(tx);
        let mut text = String::new();
        super::Pipe::new(rx).read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello\n");
    }
}

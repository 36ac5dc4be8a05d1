//! An attempt of an in-process stack in a child process, for cases that set environment
//! variables (`SSL_CERT_FILE`, ...): the environment is process-wide, and changing it while
//! other attempts run on other threads is unsound. The child (`pgssl client-attempt`) builds
//! the stack by name, makes the one attempt with the case's environment, and prints the
//! outcome as JSON.

use super::{client_by_name, ConnectRequest};
use crate::error_class::ErrorClass;
use crate::outcome::Outcome;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

#[derive(Serialize, Deserialize)]
struct ChildRequest {
    client: String,
    request: ConnectRequest,
}

/// Runs `request` with the stack named `client` in a child process with `request.env` set.
pub async fn attempt(client: String, mut request: ConnectRequest) -> Outcome {
    use tokio::io::AsyncWriteExt;
    let env = std::mem::take(&mut request.env);
    let timeout = request.timeout;
    let input = serde_json::to_vec(&ChildRequest { client, request }).expect("serialises");
    let spawned = tokio::process::Command::new(super::nss::helper())
        .arg("client-attempt")
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut proc = match spawned {
        Ok(p) => p,
        Err(e) => {
            return Outcome::failed(
                ErrorClass::Unclassified,
                format!("starting pgssl client-attempt: {e}"),
            )
        }
    };
    let mut stdin = proc.stdin.take().expect("piped");
    stdin.write_all(&input).await.ok();
    drop(stdin);
    let out = match tokio::time::timeout(timeout, proc.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Outcome::failed(ErrorClass::Unclassified, e.to_string()),
        Err(_) => {
            return Outcome::failed(ErrorClass::Timeout, format!("no result within {timeout:?}"))
        }
    };
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        Outcome::failed(
            ErrorClass::Unclassified,
            format!(
                "client-attempt exited with {} and no result ({e}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
}

/// Entry point of `pgssl client-attempt`: request on stdin, outcome on stdout.
pub fn child_main() -> i32 {
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return 2;
    }
    let outcome = match serde_json::from_slice::<ChildRequest>(&input) {
        Ok(child) => run(child),
        Err(e) => Outcome::failed(ErrorClass::Unclassified, format!("bad request: {e}")),
    };
    let mut out = std::io::stdout();
    let _ = out.write_all(&serde_json::to_vec(&outcome).expect("outcome serialises"));
    let _ = out.flush();
    0
}

fn run(child: ChildRequest) -> Outcome {
    let client = match client_by_name(&child.client) {
        Ok(c) => c,
        Err(e) => return Outcome::failed(ErrorClass::Unclassified, format!("{e:#}")),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Outcome::failed(ErrorClass::Unclassified, e.to_string()),
    };
    rt.block_on(client.connect(child.request))
}

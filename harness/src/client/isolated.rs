//! An attempt of an in-process stack in a child process, for cases that set environment
//! variables (`SSL_CERT_FILE`, ...): the environment is process-wide, and changing it while
//! other attempts run on other threads is unsound. The child (`pgssl client-attempt`) builds
//! the stack by name, makes the one attempt with the case's environment, and prints the
//! outcome as JSON.

use super::registry::{loaded_dir, Stacks};
use super::ConnectRequest;
use crate::error_class::ErrorClass;
use crate::outcome::Outcome;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct ChildRequest {
    client: String,
    /// The parent's `stacks/` directory (the stack's folder has its error table).
    stacks: std::path::PathBuf,
    request: ConnectRequest,
}

/// Runs `request` with the stack named `client` in a child process with `request.env` set.
pub async fn attempt(client: String, mut request: ConnectRequest) -> Outcome {
    let env = std::mem::take(&mut request.env);
    let timeout = request.timeout;
    let child = ChildRequest {
        client,
        stacks: loaded_dir(),
        request,
    };
    super::helper_process::call("client-attempt", env, &child, timeout)
        .await
        .unwrap_or_else(|outcome| outcome)
}

/// Entry point of `pgssl client-attempt`: request on stdin, outcome on stdout.
pub fn child_main() -> i32 {
    super::helper_process::serve(run, |e| Outcome::failed(ErrorClass::Unclassified, e))
}

fn run(child: ChildRequest) -> Outcome {
    let client = match Stacks::load(&child.stacks)
        .map_err(anyhow::Error::from)
        .and_then(|s| s.client(&child.client))
    {
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

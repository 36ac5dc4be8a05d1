//! One request to a hidden `pgssl` subcommand in a process of its own (`client-attempt`):
//! the request as JSON on its stdin, the answer as JSON on its stdout, the process killed
//! when the deadline passes or the caller goes away.

use crate::error_class::ErrorClass;
use crate::outcome::Outcome;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// The executable that serves the subcommands: this binary, or `pgssl` next to a test binary.
pub(crate) fn executable() -> PathBuf {
    if let Some(p) = std::env::var_os("PGSSL_NSS_HELPER") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| "pgssl".into());
    // A test binary (target/<profile>/deps/<name>) uses target/<profile>/pgssl; any other
    // binary, whatever its name (a copy kept for a benchmark), is pgssl itself.
    match exe.parent() {
        Some(deps) if deps.file_name().is_some_and(|n| n == "deps") => {
            deps.parent().map(|d| d.join("pgssl")).unwrap_or(exe)
        }
        // The very file this process runs, also when a rebuild has replaced it on disk
        // during a long run (a matrix): a helper must speak this binary's wire format.
        _ if std::path::Path::new(SELF_EXE).exists() => SELF_EXE.into(),
        _ => exe,
    }
}

const SELF_EXE: &str = "/proc/self/exe";

/// Runs `pgssl <subcommand>` with `env` added, hands it `request`, and reads its answer.
pub(crate) async fn call<Req: Serialize, Res: DeserializeOwned>(
    subcommand: &str,
    env: Vec<(String, String)>,
    request: &Req,
    timeout: Duration,
) -> Result<Res, Outcome> {
    use tokio::io::AsyncWriteExt;
    let input = serde_json::to_vec(request).expect("request serialises");
    let mut proc = tokio::process::Command::new(executable())
        .arg(subcommand)
        .envs(env)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Outcome::failed(
                ErrorClass::Unclassified,
                format!("starting pgssl {subcommand}: {e}"),
            )
        })?;
    let mut stdin = proc.stdin.take().expect("piped");
    stdin.write_all(&input).await.ok();
    drop(stdin);
    let out = tokio::time::timeout(timeout, proc.wait_with_output())
        .await
        .map_err(|_| Outcome::failed(ErrorClass::Timeout, format!("no result within {timeout:?}")))?
        .map_err(|e| Outcome::failed(ErrorClass::Unclassified, e.to_string()))?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        Outcome::failed(
            ErrorClass::Unclassified,
            format!(
                "pgssl {subcommand} exited with {} and no result ({e}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
}

/// The body of such a subcommand: reads the request, answers with `serve` (or with `bad` for
/// a request that does not parse), and returns the exit status.
pub(crate) fn serve<Req: DeserializeOwned, Res: Serialize>(
    serve: impl FnOnce(Req) -> Res,
    bad: impl FnOnce(String) -> Res,
) -> i32 {
    let mut input = Vec::new();
    if std::io::stdin().read_to_end(&mut input).is_err() {
        return 2;
    }
    let answer = match serde_json::from_slice::<Req>(&input) {
        Ok(req) => serve(req),
        Err(e) => bad(format!("bad request: {e}")),
    };
    let mut out = std::io::stdout();
    let _ = out.write_all(&serde_json::to_vec(&answer).expect("answer serialises"));
    let _ = out.flush();
    0
}

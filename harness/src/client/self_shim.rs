//! pgssl as the shim of its own built-in stacks (`pgssl stack-shim NAME`): the built-in adapter
//! in a process of its own, behind the same attempt protocol as every driver. Two uses:
//! - a case that sets environment variables (`SSL_CERT_FILE`, ...): the environment is
//!   process-wide, so the in-process stack makes that attempt in a fresh shim started with it;
//! - `libpq@<prefix>`: the libpq adapter in a process whose dynamic loader takes `libpq.so.5`
//!   from `<prefix>/lib`, so any build of libpq (one built with NSS, an older release) is a
//!   client stack without a rebuild of pgssl.

use super::protocol::{AttemptResult, Connected, Failed, Hello, Line, Reply, PROTOCOL_VERSION};
use super::registry::Stacks;
use super::shim::ShimSpec;
use super::ConnectRequest;
use crate::error_class::ErrorClass;
use crate::outcome::Outcome;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "stack-shim";

/// How the harness starts `pgssl stack-shim <stack>` for the stack `name` (`libpq`, or
/// `libpq@<prefix>`), with `env` added to the shim's isolated environment.
pub fn spec(
    name: &str,
    stack: &str,
    stacks: &Stacks,
    env: Vec<(String, String)>,
) -> anyhow::Result<ShimSpec> {
    let folder = stacks
        .folders
        .get(stack)
        .ok_or_else(|| anyhow::anyhow!("unknown client stack {stack:?}"))?;
    let exe = super::helper_process::executable().display().to_string();
    let mut env = env;
    // The shim's HOME is private; its caches (NSS databases derived from PEM options) are the
    // run's.
    env.push((
        "PGSSL_CACHE_DIR".into(),
        crate::pki::cache_root().display().to_string(),
    ));
    Ok(ShimSpec {
        name: name.to_string(),
        dir: folder.dir.clone(),
        command: vec![
            exe,
            SUBCOMMAND.into(),
            stack.into(),
            "--stacks".into(),
            // The shim runs in the stack's folder.
            std::path::absolute(&stacks.dir)?.display().to_string(),
        ],
        install: folder.spec.install.clone(),
        facts: Vec::new(),
        // Replies carry the class the adapter gave; the errors table was applied in the shim.
        shim_classes: ErrorClass::ALL.to_vec(),
        max_in_flight: folder.spec.max_in_flight,
        errors: folder.errors.clone().unwrap_or_default(),
        env,
    })
}

/// Runs `request` with the in-process stack `stack` in a fresh shim process that has the
/// case's environment.
pub async fn attempt_with_env(stack: String, mut request: ConnectRequest) -> Outcome {
    let env = std::mem::take(&mut request.env);
    let started = tokio::task::spawn_blocking(move || {
        let stacks = Stacks::load(&super::registry::loaded_dir())?;
        super::Shim::start(spec(&stack, &stack, &stacks, env)?)
    })
    .await;
    match started {
        Ok(Ok(shim)) => {
            use super::ClientStack;
            shim.connect(request).await
        }
        Ok(Err(e)) => Outcome::failed(ErrorClass::Unclassified, format!("{e:#}")),
        Err(e) => Outcome::failed(ErrorClass::Unclassified, e.to_string()),
    }
}

/// Entry point of `pgssl stack-shim STACK --stacks DIR`: hello, then a reply per request line,
/// attempts concurrently, until stdin closes.
pub fn main(stack: &str, stacks_dir: &Path) -> i32 {
    let client = match Stacks::load(stacks_dir)
        .map_err(anyhow::Error::from)
        .and_then(|s| s.in_process(stack))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pgssl stack-shim {stack}: {e:#}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgssl stack-shim {stack}: {e}");
            return 2;
        }
    };
    let facts = client.facts().clone();
    if facts.tls_library == "nss" {
        // NSS unloads softoken and freebl at every shut-down, and loads them again at the
        // next attempt's start; keep them.
        super::nss_ffi::pin_modules();
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let hello = Line::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        name: facts.name.clone(),
        version: if facts.libpq_version.is_empty() {
            env!("CARGO_PKG_VERSION").to_string()
        } else {
            facts.libpq_version.clone()
        },
        tls_library: facts.tls_library.clone(),
        tls_version: facts.tls_version.clone(),
        libpq_version: Some(facts.libpq_version.clone()).filter(|v| !v.is_empty()),
        options: client.options(),
        one_attempt_at_a_time: client.one_attempt_at_a_time(),
    });
    if write_line(&out, &hello).is_err() {
        return 2;
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let request = match serde_json::from_str::<Line>(&line) {
            Ok(Line::Request(r)) => r,
            Ok(other) => {
                eprintln!("pgssl stack-shim {stack}: expected a request, got {other:?}");
                return 2;
            }
            Err(e) => {
                eprintln!("pgssl stack-shim {stack}: not a protocol line ({e}): {line}");
                return 2;
            }
        };
        let (client, out) = (client.clone(), out.clone());
        rt.spawn(async move {
            let id = request.id;
            let attempt = ConnectRequest {
                params: request.params,
                timeout: Duration::from_millis(request.deadline_ms),
                queries: request.queries,
                // This process was started with the case's environment.
                env: Vec::new(),
                pki_dir: request.pki_dir.map(PathBuf::from),
            };
            let result = match super::attempt(&*client, attempt).await {
                Ok(outcome) => result_of(outcome),
                Err(why) => {
                    eprintln!("pgssl stack-shim: {why}");
                    std::process::exit(2);
                }
            };
            // Asked only between attempts: such a stack gets one at a time.
            let retire = client.tainted();
            let _ = write_line(&out, &Line::Reply(Reply { id, result, retire }));
        });
    }
    // Stdin closed: the harness is done with this process; attempts still running end with it.
    rt.shutdown_timeout(Duration::from_millis(100));
    0
}

fn result_of(outcome: Outcome) -> AttemptResult {
    match outcome {
        Outcome::Connected(s) => AttemptResult::Connected(Connected {
            encrypted: s.ssl,
            tls_version: s.tls_version.clone(),
            cipher: s.cipher.clone(),
            columns: s.to_row(),
        }),
        Outcome::Failed { class, raw } => AttemptResult::Failed(Failed {
            message: raw,
            code: None,
            class: Some(class),
        }),
        Outcome::Accepted => AttemptResult::Failed(Failed {
            message: "a client attempt cannot end as `accepted`".into(),
            code: None,
            class: Some(ErrorClass::Unclassified),
        }),
    }
}

fn write_line(out: &Mutex<std::io::Stdout>, line: &Line) -> std::io::Result<()> {
    let mut text = serde_json::to_string(line).expect("serialises");
    text.push('\n');
    let mut out = out.lock().map_err(|_| std::io::ErrorKind::Other)?;
    out.write_all(text.as_bytes())?;
    out.flush()
}

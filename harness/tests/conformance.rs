//! Every conformance case as its own `cargo test` trial (libtest-mimic): `<case id>@<client>`.
//! Filter by name as usual; works under cargo-nextest too. Servers start lazily, one per
//! scenario that has a selected trial, and stop when the run ends.

use libtest_mimic::{Arguments, Failed, Trial};
use pgssl::client::{client_by_name, ClientStack, CLIENT_NAMES};
use pgssl::facts::ServerFacts;
use pgssl::pki::PkiDir;
use pgssl::runner::{run_case, server_setup, Verdict};
use pgssl::runtime::{LocalRuntime, Runtime, Server};
use pgssl::scenario::{load_scenarios, Scenario};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

type Ready = Result<(u16, ServerFacts, PkiDir), String>;

struct Shared {
    scenarios: Vec<Scenario>,
    runtime: OnceLock<Result<LocalRuntime, String>>,
    ready: Mutex<HashMap<usize, Arc<OnceLock<Ready>>>>,
    servers: Mutex<Vec<Box<dyn Server>>>,
    tokio: tokio::runtime::Runtime,
}

impl Shared {
    fn server_for(&self, index: usize) -> Ready {
        let cell = self
            .ready
            .lock()
            .expect("ready map")
            .entry(index)
            .or_default()
            .clone();
        cell.get_or_init(|| {
            let runtime = self
                .runtime
                .get_or_init(|| LocalRuntime::discover(None).map_err(|e| format!("{e:#}")))
                .as_ref()
                .map_err(Clone::clone)?;
            let scenario = &self.scenarios[index];
            let pki = scenario
                .pki
                .materialize(&pgssl::pki::cache_root())
                .map_err(|e| format!("{e:#}"))?;
            let server = runtime
                .start(&server_setup(scenario, &pki))
                .map_err(|e| format!("{e:#}"))?;
            let ready = (server.port(), server.facts().clone(), pki);
            self.servers.lock().expect("servers").push(server);
            Ok(ready)
        })
        .clone()
    }
}

fn main() {
    let args = Arguments::from_args();
    pgssl::cleanup::install_signal_handlers();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let scenarios = match load_scenarios(&[dir]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let names: Vec<String> = std::env::var("PGSSL_CLIENT")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| CLIENT_NAMES.iter().map(|s| s.to_string()).collect());
    let clients: Vec<Arc<dyn ClientStack>> = names
        .iter()
        .map(|n| client_by_name(n).expect("client stack"))
        .collect();
    let shared = Arc::new(Shared {
        scenarios,
        runtime: OnceLock::new(),
        ready: Mutex::new(HashMap::new()),
        servers: Mutex::new(Vec::new()),
        tokio: tokio::runtime::Runtime::new().expect("tokio runtime"),
    });

    let mut trials = Vec::new();
    for (si, scenario) in shared.scenarios.iter().enumerate() {
        for (ci, case) in scenario.cases.iter().enumerate() {
            for client in &clients {
                let (shared, client) = (shared.clone(), client.clone());
                let name = format!("{}@{}", case.id, client.facts().name);
                trials.push(Trial::test(name, move || {
                    let (port, facts, pki) = shared
                        .server_for(si)
                        .map_err(|e| Failed::from(format!("harness error: {e}")))?;
                    let case = &shared.scenarios[si].cases[ci];
                    let result = shared.tokio.block_on(run_case(
                        case,
                        client.as_ref(),
                        &facts,
                        port,
                        &pki,
                        Duration::from_secs(10),
                    ));
                    match result.verdict {
                        Verdict::Pass => Ok(()),
                        Verdict::Fail(why) | Verdict::Error(why) => {
                            let raw = match &result.outcome {
                                Some(pgssl::outcome::Outcome::Failed { raw, .. }) => {
                                    format!("\nraw: {raw}")
                                }
                                _ => String::new(),
                            };
                            Err(Failed::from(format!("{why}{raw}")))
                        }
                    }
                }));
            }
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    shared.servers.lock().expect("servers").clear();
    pgssl::cleanup::cleanup_all();
    conclusion.exit();
}

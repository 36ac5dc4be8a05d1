//! Every conformance case as its own `cargo test` trial (libtest-mimic): `<case id>@<client>`.
//! Filter by name as usual; works under cargo-nextest too. Servers start lazily, one per
//! scenario that has a selected trial, and stop when the run ends.

use libtest_mimic::{Arguments, Failed, Trial};
use pgssl::client::registry::source_stacks_dir;
use pgssl::client::{ClientStack, Stacks};
use pgssl::error_class::ErrorClass;
use pgssl::facts::ServerFacts;
use pgssl::pki::PkiDir;
use pgssl::runner::{
    evaluate, reload_setup, run_case, server_event, server_setup, CaseResult, Endpoint, Verdict,
};
use pgssl::runtime::{LocalRuntime, LogSource, Runtime, Server};
use pgssl::scenario::{load_scenarios, Scenario};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How the local build's TLS library takes the scenarios' server TLS material.
fn tls(runtime: &LocalRuntime) -> Result<&'static dyn pgssl::server_tls::ServerTls, String> {
    runtime
        .tls_library()
        .and_then(|l| pgssl::server_tls::for_library(&l))
        .map_err(|e| format!("{e:#}"))
}

/// A started server for one scenario, and what its `[reload]` check saw.
#[derive(Clone)]
struct Prepared {
    endpoint: Endpoint,
    facts: ServerFacts,
    pki: PkiDir,
    log: LogSource,
    /// `Err(server's message)` when the reload was refused.
    reload: Option<Result<(), String>>,
}

type Ready = Result<Prepared, String>;

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
            let runtime = self.runtime()?;
            let scenario = &self.scenarios[index];
            let pki = scenario
                .pki
                .materialize(&pgssl::pki::cache_root())
                .map_err(|e| format!("{e:#}"))?;
            let mut server = runtime
                .start(&server_setup(scenario, &pki, tls(runtime)?).map_err(|e| format!("{e:#}"))?)
                .map_err(|e| format!("{e:#}"))?;
            let reload = reload_setup(scenario, &pki, tls(runtime)?).map(|setup| {
                let setup = setup.map_err(|e| format!("{e:#}"))?;
                server
                    .reload(&setup)
                    .map_err(|e| format!("{e:#}\n{}", server.log()))
            });
            let ready = Prepared {
                endpoint: Endpoint::of(server.as_ref()),
                facts: server.facts().clone(),
                log: server.log_source(),
                pki,
                reload,
            };
            self.servers.lock().expect("servers").push(server);
            Ok(ready)
        })
        .clone()
    }
}

/// Serialises attempts of scenarios that read the server log.
static LOG_LOCK: Mutex<()> = Mutex::new(());

fn verdict(result: CaseResult) -> Result<(), Failed> {
    match result.verdict {
        Verdict::Pass => Ok(()),
        Verdict::Fail(why) | Verdict::Error(why) => {
            let raw = match &result.outcome {
                Some(pgssl::outcome::Outcome::Failed { raw, .. }) => format!("\nraw: {raw}"),
                _ => String::new(),
            };
            Err(Failed::from(format!("{why}{raw}")))
        }
    }
}

impl Shared {
    fn runtime(&self) -> Result<&LocalRuntime, String> {
        self.runtime
            .get_or_init(|| LocalRuntime::discover(None).map_err(|e| format!("{e:#}")))
            .as_ref()
            .map_err(Clone::clone)
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
    let stacks = match Stacks::load(&source_stacks_dir()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let names: Vec<String> = std::env::var("PGSSL_CLIENT")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| stacks.default_names());
    let clients: Vec<Arc<dyn ClientStack>> = names
        .iter()
        .map(|n| stacks.client(n).expect("client stack"))
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
        if let Some(wanted) = scenario.startup.clone().filter(|s| s.fails) {
            let shared = shared.clone();
            trials.push(Trial::test(
                format!("{}/server-start@server", scenario.name),
                move || {
                    let scenario = &shared.scenarios[si];
                    let runtime = shared.runtime().map_err(Failed::from)?;
                    let pki = scenario
                        .pki
                        .materialize(&pgssl::pki::cache_root())
                        .map_err(|e| Failed::from(format!("{e:#}")))?;
                    let setup = server_setup(scenario, &pki, tls(runtime)?)
                        .map_err(|e| Failed::from(format!("{e:#}")))?;
                    let refused = match runtime.start(&setup) {
                        Ok(_server) => Ok(()),
                        Err(e) => Err(format!("{e:#}")),
                    };
                    let id = format!("{}/server-start", scenario.name);
                    verdict(server_event(
                        id,
                        ErrorClass::ServerStartFailed,
                        &wanted,
                        refused,
                        runtime.detect_facts().ok(),
                        0,
                    ))
                },
            ));
        }
        if let Some(wanted) = scenario
            .reload
            .as_ref()
            .map(|r| r.expect.clone())
            .filter(|e| e.fails)
        {
            let shared = shared.clone();
            trials.push(Trial::test(
                format!("{}/server-reload@server", scenario.name),
                move || {
                    let ready = shared
                        .server_for(si)
                        .map_err(|e| Failed::from(format!("harness error: {e}")))?;
                    let refused = ready.reload.clone().unwrap_or(Ok(()));
                    let id = format!("{}/server-reload", shared.scenarios[si].name);
                    verdict(server_event(
                        id,
                        ErrorClass::ServerReloadFailed,
                        &wanted,
                        refused,
                        Some(ready.facts),
                        0,
                    ))
                },
            ));
        }
        for (ci, case) in scenario.cases.iter().enumerate() {
            for client in &clients {
                let (shared, client) = (shared.clone(), client.clone());
                let name = format!("{}@{}", case.id, client.facts().name);
                trials.push(Trial::test(name, move || {
                    let case = &shared.scenarios[si].cases[ci];
                    let ready = match shared.server_for(si) {
                        Ok(r) => r,
                        // As `pgssl run`: a server that refuses to start is each case's
                        // outcome, judged with the build's facts (overrides declare it).
                        Err(e) if e.contains("server failed to start") => {
                            let runtime = shared.runtime().map_err(Failed::from)?;
                            let facts = pgssl::facts::BackendFacts {
                                server: runtime
                                    .detect_facts()
                                    .map_err(|e| Failed::from(e.to_string()))?,
                                client: client.facts().clone(),
                            };
                            let outcome =
                                pgssl::outcome::Outcome::failed(ErrorClass::ServerStartFailed, e);
                            return verdict(evaluate(
                                case,
                                &client.facts().name,
                                &facts,
                                outcome,
                                0,
                            ));
                        }
                        Err(e) => return Err(Failed::from(format!("harness error: {e}"))),
                    };
                    // Log-checking scenarios need their attempts one at a time.
                    let _serial = shared.scenarios[si]
                        .checks_server_log()
                        .then(|| LOG_LOCK.lock());
                    let timeout = Duration::from_secs(10);
                    let attempt = run_case(
                        case,
                        client.as_ref(),
                        &ready.facts,
                        &ready.endpoint,
                        &ready.pki,
                        timeout,
                        Some(&ready.log),
                    );
                    verdict(shared.tokio.block_on(attempt))
                }));
            }
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    shared.servers.lock().expect("servers").clear();
    pgssl::cleanup::cleanup_all();
    conclusion.exit();
}

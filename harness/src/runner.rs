//! The core: resolves scenarios into server setups and connection requests, runs attempts
//! against servers (reusing them through reloads), judges outcomes and emits typed events.
//! It formats nothing: reporters read the events.

use crate::client::{attempt, ClientStack, ConnectRequest};
use crate::facts::BackendFacts;
use crate::outcome::{judge, Outcome};
use crate::pki::PkiDir;
use crate::runtime::{Runtime, Server, ServerSetup};
use crate::scenario::load::{Case, FILE_KEYWORDS, MISSING_FILE};
use crate::scenario::{Expect, Scenario};
use anyhow::Result;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// The verdict on one (case, backend) pair.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "why")]
pub enum Verdict {
    Pass,
    /// The expectation did not hold.
    Fail(String),
    /// The harness could not run the case (server did not start, ...): not the backend's fault.
    Error(String),
}

/// One finished (case, backend) pair.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: String,
    pub client: String,
    pub backend: Option<BackendFacts>,
    pub expected: Expect,
    /// Reason of the override that replaced the canonical expectation, if any.
    pub override_reason: Option<String>,
    pub override_selector: Option<String>,
    pub outcome: Option<Outcome>,
    pub verdict: Verdict,
    pub millis: u128,
}

impl CaseResult {
    /// `<case> [<client>@<build>]`, the name reports use.
    pub fn name(&self) -> String {
        let build = self
            .backend
            .as_ref()
            .map_or("?", |b| b.server.build.as_str());
        format!("{} [{}@{}]", self.case, self.client, build)
    }
}

/// Totals at the end of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    pub wall_millis: u128,
}

impl Summary {
    /// Exit status per the command-line contract.
    pub fn exit_code(&self) -> i32 {
        if self.errors > 0 {
            2
        } else if self.failed > 0 {
            1
        } else {
            0
        }
    }
}

/// What the runner tells reporters.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    Started {
        total: usize,
    },
    ServerReady {
        scenario: String,
        server: crate::facts::ServerFacts,
        reused: bool,
        millis: u128,
    },
    CaseFinished(Box<CaseResult>),
    Finished(Summary),
}

/// What to run.
pub struct Plan {
    pub scenarios: Vec<Scenario>,
    pub runtime: Arc<dyn Runtime>,
    pub clients: Vec<Arc<dyn ClientStack>>,
    /// Only cases whose id contains this.
    pub filter: Option<String>,
    /// Scenarios run at once (each on its own server).
    pub jobs: usize,
    /// Per-attempt deadline.
    pub timeout: Duration,
}

impl Plan {
    fn selected<'a>(&self, scenario: &'a Scenario) -> Vec<&'a Case> {
        scenario
            .cases
            .iter()
            .filter(|c| {
                self.filter
                    .as_ref()
                    .is_none_or(|f| c.id.contains(f.as_str()))
            })
            .collect()
    }

    /// Number of (case, client) pairs the plan will report.
    pub fn total(&self) -> usize {
        self.scenarios
            .iter()
            .map(|s| self.selected(s).len())
            .sum::<usize>()
            * self.clients.len()
    }
}

/// The postgresql.conf settings, files, hba and objects a scenario asks for.
pub fn server_setup(scenario: &Scenario, pki: &PkiDir) -> ServerSetup {
    let s = &scenario.server;
    let mut setup = ServerSetup {
        ipv6: s.ipv6,
        hba: s.hba.clone(),
        ident: s.ident.clone(),
        roles: s.roles.clone(),
        databases: s.databases.clone(),
        ..Default::default()
    };
    setup
        .settings
        .push(("ssl".into(), if s.ssl { "on" } else { "off" }.into()));
    for (setting, file, value) in [
        ("ssl_cert_file", "server.crt", &s.cert),
        ("ssl_key_file", "server.key", &s.key),
        ("ssl_ca_file", "ca.crt", &s.ca),
        ("ssl_crl_file", "crl.pem", &s.crl),
        ("ssl_crl_dir", "crldir", &s.crl_dir),
    ] {
        match value {
            Some(name) => {
                setup
                    .files
                    .push((file.to_string(), pki.path(name.get_ref())));
                setup
                    .settings
                    .push((setting.into(), format!("pgssl/{file}")));
            }
            None => setup.settings.push((setting.into(), String::new())),
        }
    }
    setup
        .settings
        .extend(s.settings.iter().map(|(k, v)| (k.clone(), v.clone())));
    setup
}

/// The connection request for a case against a server on `port`.
pub fn connect_request(case: &Case, port: u16, pki: &PkiDir, timeout: Duration) -> ConnectRequest {
    let mut params: Vec<(String, String)> = vec![
        ("host".into(), "localhost".into()),
        ("hostaddr".into(), "127.0.0.1".into()),
        (
            "connect_timeout".into(),
            timeout.as_secs().max(2).to_string(),
        ),
        ("application_name".into(), case.id.clone()),
    ];
    let mut set = |k: &str, v: String| match params.iter_mut().find(|(pk, _)| pk == k) {
        Some(slot) => slot.1 = v,
        None => params.push((k.to_string(), v)),
    };
    for (k, v) in &case.conn {
        let value = if FILE_KEYWORDS.contains(&k.as_str()) && !(k == "sslrootcert" && v == "system")
        {
            if v == MISSING_FILE {
                pki.dir.join("missing").join(k).display().to_string()
            } else {
                pki.path(v).display().to_string()
            }
        } else {
            v.clone()
        };
        set(k, value);
    }
    set("port", port.to_string());
    ConnectRequest { params, timeout }
}

/// Judges an outcome for a case on a backend.
pub fn evaluate(
    case: &Case,
    client: &str,
    facts: &BackendFacts,
    outcome: Outcome,
    millis: u128,
) -> CaseResult {
    let expectation = case.expectation_for(facts);
    let verdict = match judge(expectation.expect, &outcome) {
        Ok(()) => Verdict::Pass,
        Err(why) => Verdict::Fail(why),
    };
    CaseResult {
        case: case.id.clone(),
        client: client.to_string(),
        backend: Some(facts.clone()),
        expected: expectation.expect.clone(),
        override_reason: expectation.overridden.map(|o| o.reason.clone()),
        override_selector: expectation.overridden.map(|o| o.selector.describe()),
        outcome: Some(outcome),
        verdict,
        millis,
    }
}

/// Runs one case with one client against a ready server.
pub async fn run_case(
    case: &Case,
    client: &dyn ClientStack,
    server: &crate::facts::ServerFacts,
    port: u16,
    pki: &PkiDir,
    timeout: Duration,
) -> CaseResult {
    let facts = BackendFacts {
        server: server.clone(),
        client: client.facts().clone(),
    };
    let start = Instant::now();
    let outcome = attempt(client, connect_request(case, port, pki, timeout)).await;
    evaluate(
        case,
        &client.facts().name,
        &facts,
        outcome,
        start.elapsed().as_millis(),
    )
}

/// Runs the plan, sending every event to `events`. Returns the summary (also sent).
pub async fn run(plan: Plan, events: UnboundedSender<Event>) -> Summary {
    let started = Instant::now();
    let plan = Arc::new(plan);
    let _ = events.send(Event::Started {
        total: plan.total(),
    });
    let queue: Arc<Mutex<VecDeque<usize>>> =
        Arc::new(Mutex::new((0..plan.scenarios.len()).collect()));
    let summary = Arc::new(Mutex::new(Summary::default()));
    let mut workers = Vec::new();
    for _ in 0..plan.jobs.max(1) {
        let (plan, queue, events, summary) =
            (plan.clone(), queue.clone(), events.clone(), summary.clone());
        workers.push(tokio::spawn(async move {
            let mut server: Option<Box<dyn Server>> = None;
            loop {
                let next = queue.lock().expect("queue").pop_front();
                let Some(index) = next else { break };
                let scenario = &plan.scenarios[index];
                let cases = plan.selected(scenario);
                if cases.is_empty() {
                    continue;
                }
                let results = run_scenario(&plan, scenario, &cases, &mut server, &events).await;
                let mut sum = summary.lock().expect("summary");
                for r in results {
                    match r.verdict {
                        Verdict::Pass => sum.passed += 1,
                        Verdict::Fail(_) => sum.failed += 1,
                        Verdict::Error(_) => sum.errors += 1,
                    }
                    let _ = events.send(Event::CaseFinished(Box::new(r)));
                }
            }
            if let Some(s) = server.take() {
                tokio::task::spawn_blocking(move || drop(s)).await.ok();
            }
        }));
    }
    for w in workers {
        w.await.ok();
    }
    let mut summary = summary.lock().expect("summary").clone();
    summary.wall_millis = started.elapsed().as_millis();
    let _ = events.send(Event::Finished(summary.clone()));
    summary
}

/// Brings `slot` into the scenario's configuration: reload when possible, else a new server.
fn prepare_server(
    runtime: &dyn Runtime,
    slot: &mut Option<Box<dyn Server>>,
    setup: &ServerSetup,
) -> Result<bool> {
    if let Some(server) = slot.as_mut() {
        if server.can_reload_into(setup) && server.reload(setup).is_ok() {
            return Ok(true);
        }
    }
    *slot = None;
    *slot = Some(runtime.start(setup)?);
    Ok(false)
}

async fn run_scenario(
    plan: &Arc<Plan>,
    scenario: &Scenario,
    cases: &[&Case],
    slot: &mut Option<Box<dyn Server>>,
    events: &UnboundedSender<Event>,
) -> Vec<CaseResult> {
    let error = |msg: String| -> Vec<CaseResult> {
        cases
            .iter()
            .flat_map(|case| {
                plan.clients.iter().map({
                    let msg = msg.clone();
                    move |client| CaseResult {
                        case: case.id.clone(),
                        client: client.facts().name.clone(),
                        backend: None,
                        expected: case.expect.clone(),
                        override_reason: None,
                        override_selector: None,
                        outcome: None,
                        verdict: Verdict::Error(msg.clone()),
                        millis: 0,
                    }
                })
            })
            .collect()
    };
    let start = Instant::now();
    let cache = crate::pki::cache_root();
    let spec = scenario.pki.clone();
    let pki = match tokio::task::spawn_blocking(move || spec.materialize(&cache)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(format!("PKI: {e:#}")),
        Err(e) => return error(format!("PKI: {e}")),
    };
    let setup = server_setup(scenario, &pki);
    let runtime = plan.runtime.clone();
    let mut taken = slot.take();
    let prepared = tokio::task::spawn_blocking(move || {
        let r = prepare_server(runtime.as_ref(), &mut taken, &setup);
        (r, taken)
    })
    .await;
    let reused = match prepared {
        Ok((Ok(reused), server)) => {
            *slot = server;
            reused
        }
        Ok((Err(e), _)) => return error(format!("server for {}: {e:#}", scenario.path.display())),
        Err(e) => return error(format!("server setup panicked: {e}")),
    };
    let server = slot.as_ref().expect("prepared");
    let facts = server.facts().clone();
    let port = server.port();
    let _ = events.send(Event::ServerReady {
        scenario: scenario.name.clone(),
        server: facts.clone(),
        reused,
        millis: start.elapsed().as_millis(),
    });
    let mut attempts = Vec::new();
    for case in cases {
        for client in &plan.clients {
            attempts.push(run_case(
                case,
                client.as_ref(),
                &facts,
                port,
                &pki,
                plan.timeout,
            ));
        }
    }
    use futures_util::StreamExt;
    // Bounded: every attempt is a server backend, and a 2-core machine gains nothing past this.
    futures_util::stream::iter(attempts)
        .buffer_unordered(ATTEMPTS_AT_ONCE)
        .collect()
        .await
}

/// Concurrent attempts per scenario.
const ATTEMPTS_AT_ONCE: usize = 8;

//! The core: resolves scenarios into server setups and connection requests, runs attempts
//! against servers (reusing them through reloads), judges outcomes and emits typed events.
//! It formats nothing: reporters read the events.

use crate::case_filter::CaseFilter;
use crate::client::{attempt, ClientStack, ConnectRequest};
use crate::facts::BackendFacts;
use crate::outcome::{judge, judge_log, judge_message, Outcome};
use crate::pki::PkiDir;
use crate::runtime::{LogSource, Runtime, Server, ServerSetup};
use crate::scenario::load::{Case, FILE_KEYWORDS, MISSING_FILE, SOCKET_HOST};
use crate::scenario::{Expect, ReloadDef, Scenario, ServerEventExpect};
use crate::server_tls::{ServerTls, TlsMaterial};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// The verdict on one (case, backend) pair.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "why")]
pub enum Verdict {
    Pass,
    /// The expectation did not hold.
    Fail(String),
    /// The harness could not run the case (server did not start, ...): not the backend's fault.
    Error(String),
}

/// One finished (case, backend) pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Which cases run.
    pub filter: CaseFilter,
    /// How the build's TLS library takes the scenarios' server TLS material.
    pub server_tls: &'static dyn ServerTls,
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
            .filter(|c| self.filter.matches(&c.id))
            .collect()
    }

    /// Number of (case, client) pairs the plan will report.
    /// A scenario's expected share of a run, in attempts: a scenario that checks the server
    /// log runs its attempts one at a time, so each counts as a full batch.
    fn weight(&self, scenario: &Scenario) -> usize {
        let attempts = self.selected(scenario).len() * self.clients.len();
        if scenario.checks_server_log() {
            attempts * ATTEMPTS_AT_ONCE
        } else {
            attempts
        }
    }

    pub fn total(&self) -> usize {
        self.scenarios
            .iter()
            .map(|s| self.selected(s).len() * self.clients.len() + server_events(s, &self.filter))
            .sum()
    }
}

/// How many cases and server-side checks `filter` selects (0: the run would do nothing).
pub fn selected_count(scenarios: &[Scenario], filter: &CaseFilter) -> usize {
    scenarios
        .iter()
        .map(|s| {
            s.cases.iter().filter(|c| filter.matches(&c.id)).count() + server_events(s, filter)
        })
        .sum()
}

/// The postgresql.conf settings, files, hba and objects a scenario asks for, its TLS material
/// written the way the build's TLS library takes it. Blocks while a library builds files (NSS
/// databases); an error is the harness's.
pub fn server_setup(scenario: &Scenario, pki: &PkiDir, tls: &dyn ServerTls) -> Result<ServerSetup> {
    setup_with(scenario, pki, tls, &material(scenario, None))
}

/// The scenario's TLS material, with a `[reload]`'s certificate and key in place of the first.
fn material<'a>(scenario: &'a Scenario, reload: Option<&'a ReloadDef>) -> TlsMaterial<'a> {
    fn name(v: &Option<toml::Spanned<String>>) -> Option<&str> {
        v.as_ref().map(|n| n.get_ref().as_str())
    }
    let s = &scenario.server;
    let key = reload.and_then(|r| name(&r.key)).or(name(&s.key));
    TlsMaterial {
        cert: reload.and_then(|r| name(&r.cert)).or(name(&s.cert)),
        key,
        key_password: key
            .and_then(|k| scenario.pki.file.key_file.get(k))
            .and_then(|k| k.password.as_deref()),
        ca: name(&s.ca),
        crl: name(&s.crl),
        crl_dir: name(&s.crl_dir),
    }
}

fn setup_with(
    scenario: &Scenario,
    pki: &PkiDir,
    tls: &dyn ServerTls,
    material: &TlsMaterial,
) -> Result<ServerSetup> {
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
    tls.configure(material, pki, &mut setup)?;
    setup.settings.extend(
        s.settings
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone())),
    );
    Ok(setup)
}

/// Where a ready server listens: its TCP port on 127.0.0.1 and its Unix socket directory.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub port: u16,
    pub socket_dir: std::path::PathBuf,
}

impl Endpoint {
    pub fn of(server: &dyn Server) -> Self {
        Endpoint {
            port: server.port(),
            socket_dir: server.socket_dir().to_path_buf(),
        }
    }
}

/// The connection request for a case against a server.
pub fn connect_request(
    case: &Case,
    server: &Endpoint,
    pki: &PkiDir,
    timeout: Duration,
    queries: Vec<String>,
) -> ConnectRequest {
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
    set("port", server.port.to_string());
    if case.conn.get("host").is_some_and(|h| h == SOCKET_HOST) {
        set("host", server.socket_dir.display().to_string());
        params.retain(|(k, _)| k != "hostaddr");
    }
    let env = case
        .env
        .iter()
        .map(|(k, v)| {
            let path = if v == MISSING_FILE {
                pki.dir.join("missing").join(k)
            } else {
                pki.path(v)
            };
            (k.clone(), path.display().to_string())
        })
        .collect();
    ConnectRequest {
        params,
        timeout,
        queries,
        env,
        pki_dir: Some(pki.dir.clone()),
    }
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
        Ok(()) => match judge_message(expectation.message, &outcome) {
            Ok(()) => Verdict::Pass,
            Err(why) => Verdict::Fail(why),
        },
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

/// Runs one case with one client against a ready server. `log` is needed when the case
/// checks the server log; the caller must then run attempts of the scenario one at a time.
pub async fn run_case(
    case: &Case,
    client: &dyn ClientStack,
    server: &crate::facts::ServerFacts,
    endpoint: &Endpoint,
    pki: &PkiDir,
    timeout: Duration,
    log: Option<&LogSource>,
) -> CaseResult {
    let facts = BackendFacts {
        server: server.clone(),
        client: client.facts().clone(),
    };
    let expectation = case.expectation_for(&facts);
    let wanted_log = expectation.server_log.to_vec();
    // The case's queries run only where a connection is expected.
    let queries = match expectation.expect {
        Expect::Connected(s) => s.query.iter().map(|q| q.sql.clone()).collect(),
        Expect::Failed(_) | Expect::Accepted => Vec::new(),
    };
    let offset = match (log, wanted_log.is_empty()) {
        (Some(read), false) => read().len(),
        _ => 0,
    };
    let start = Instant::now();
    let request = connect_request(case, endpoint, pki, timeout, queries);
    let outcome = match attempt(client, request).await {
        Ok(outcome) => outcome,
        // The stack itself broke (a shim crashed or spoke garbage): no verdict on the case.
        Err(why) => {
            let mut result = evaluate(
                case,
                &client.facts().name,
                &facts,
                Outcome::failed(crate::error_class::ErrorClass::Unclassified, why.clone()),
                start.elapsed().as_millis(),
            );
            result.verdict = Verdict::Error(why);
            result.outcome = None;
            return result;
        }
    };
    let millis = start.elapsed().as_millis();
    let mut result = evaluate(case, &client.facts().name, &facts, outcome, millis);
    if result.verdict == Verdict::Pass && !wanted_log.is_empty() {
        result.verdict = match log {
            Some(read) => match wait_for_log(read, offset, &wanted_log).await {
                Ok(()) => Verdict::Pass,
                Err(why) => Verdict::Fail(why),
            },
            None => Verdict::Error("this runtime offers no server log".into()),
        };
    }
    result
}

/// Backends write their log lines a moment after the client sees the outcome: poll briefly
/// for the lines that must appear, and give lines that must not appear a moment to show up.
async fn wait_for_log(read: &LogSource, offset: usize, wanted: &[String]) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    let positives: Vec<String> = wanted
        .iter()
        .filter(|w| !w.starts_with('!'))
        .cloned()
        .collect();
    loop {
        let log = read();
        let since = log.get(offset..).unwrap_or("");
        match judge_log(&positives, since) {
            Ok(()) => break,
            Err(why) if Instant::now() >= deadline => return Err(why),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    if positives.len() < wanted.len() {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = read();
    judge_log(wanted, log.get(offset..).unwrap_or(""))
}

/// How many server-side checks (start, reload) a scenario reports.
pub fn server_events(scenario: &Scenario, filter: &CaseFilter) -> usize {
    let shown = |id: String| filter.matches(&id);
    let start = scenario.startup.as_ref().is_some_and(|s| s.fails)
        && shown(format!("{}/server-start", scenario.name));
    let reload = scenario.reload.as_ref().is_some_and(|r| r.expect.fails)
        && shown(format!("{}/server-reload", scenario.name));
    usize::from(start) + usize::from(reload)
}

/// The result of a server-side check: `refused` holds the server's error and log when it
/// refused the configuration.
pub fn server_event(
    id: String,
    class: crate::error_class::ErrorClass,
    wanted: &ServerEventExpect,
    refused: Result<(), String>,
    server: Option<crate::facts::ServerFacts>,
    millis: u128,
) -> CaseResult {
    let (log, chosen) = wanted.log_for(server.as_ref());
    let refuses = chosen.and_then(|o| o.fails).unwrap_or(wanted.fails);
    let expected = if refuses {
        Expect::Failed(class)
    } else {
        Expect::Accepted
    };
    let (outcome, verdict) = match refused {
        Err(raw) if !refuses => (
            Outcome::failed(class, raw),
            Verdict::Fail("expected the server to accept the configuration, it refused".into()),
        ),
        Ok(()) if !refuses => (Outcome::Accepted, Verdict::Pass),
        Err(raw) => {
            let verdict = match judge_log(log, &raw) {
                Ok(()) => Verdict::Pass,
                Err(why) => Verdict::Fail(why),
            };
            (Outcome::failed(class, raw), verdict)
        }
        Ok(()) => (
            Outcome::Accepted,
            Verdict::Fail(format!(
                "expected {class}, but the server accepted the configuration"
            )),
        ),
    };
    CaseResult {
        case: id,
        client: "server".into(),
        backend: server.map(|s| BackendFacts {
            client: crate::facts::ClientFacts {
                name: "server".into(),
                tls_library: s.tls_library.clone(),
                tls_version: s.tls_version.clone(),
                libpq_version: String::new(),
            },
            server: s,
        }),
        expected,
        override_reason: chosen.map(|o| o.reason.clone()),
        override_selector: chosen.map(|o| o.when.describe()),
        outcome: Some(outcome),
        verdict,
        millis,
    }
}

/// The setup after a scenario's `[reload]` changes.
pub fn reload_setup(
    scenario: &Scenario,
    pki: &PkiDir,
    tls: &dyn ServerTls,
) -> Option<Result<ServerSetup>> {
    let reload = scenario.reload.as_ref()?;
    let setup = setup_with(scenario, pki, tls, &material(scenario, Some(reload)));
    Some(setup.map(|mut setup| {
        setup.settings.extend(
            reload
                .settings
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone())),
        );
        setup
    }))
}

/// Runs the plan, sending every event to `events`. Returns the summary (also sent).
pub async fn run(plan: Plan, events: UnboundedSender<Event>) -> Summary {
    let started = Instant::now();
    let plan = Arc::new(plan);
    let _ = events.send(Event::Started {
        total: plan.total(),
    });
    // Scenarios whose server must refuse to start hold no server: one more worker takes them
    // from the start, overlapping their start-up waits with the others' attempts; the
    // workers help once their own queue is empty.
    let (checks, mut rest): (Vec<usize>, Vec<usize>) = (0..plan.scenarios.len())
        .partition(|&i| plan.scenarios[i].startup.as_ref().is_some_and(|s| s.fails));
    // Longest first, so no long scenario starts last while the other workers sit idle.
    rest.sort_by_key(|&i| (std::cmp::Reverse(plan.weight(&plan.scenarios[i])), i));
    let (checks, rest) = (VecDeque::from(checks), VecDeque::from(rest));
    let queue = Arc::new(Mutex::new(Queue { rest, checks }));
    let summary = Arc::new(Mutex::new(Summary::default()));
    let mut workers = Vec::new();
    for worker in 0..=plan.jobs.max(1) {
        let checker = worker == 0;
        let (plan, queue, events, summary) =
            (plan.clone(), queue.clone(), events.clone(), summary.clone());
        workers.push(tokio::spawn(async move {
            let mut server: Option<Box<dyn Server>> = None;
            loop {
                let next = queue.lock().expect("queue").next(checker);
                let Some(index) = next else { break };
                let scenario = &plan.scenarios[index];
                let cases = plan.selected(scenario);
                if cases.is_empty() && server_events(scenario, &plan.filter) == 0 {
                    continue;
                }
                let results =
                    run_scenario(&plan, index, scenario, &cases, &mut server, &events).await;
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

/// What is left to run: scenarios that need a server, and start checks (which do not).
struct Queue {
    rest: VecDeque<usize>,
    checks: VecDeque<usize>,
}

impl Queue {
    fn next(&mut self, checker: bool) -> Option<usize> {
        if checker {
            self.checks.pop_front()
        } else {
            self.rest.pop_front().or_else(|| self.checks.pop_front())
        }
    }
}

/// Brings `slot` into the scenario's configuration: reload when possible, else a new server.
fn prepare_server(
    runtime: &dyn Runtime,
    slot: &mut Option<Box<dyn Server>>,
    setup: &ServerSetup,
) -> Result<bool> {
    if let Some(server) = slot.as_mut() {
        if let Some(how) = server.exited() {
            let log = server.log();
            *slot = None;
            anyhow::bail!(
                "the {} server of the previous scenario died ({how}); {}",
                runtime.build_name(),
                log_tail(&log)
            );
        }
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
    index: usize,
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
    let shared = plan.clone();
    // The PKI and the library's files (NSS databases) may be built now: off the runtime.
    let built = tokio::task::spawn_blocking(move || {
        let scenario = &shared.scenarios[index];
        let pki = scenario
            .pki
            .materialize(&cache)
            .map_err(|e| format!("PKI: {e:#}"))?;
        let tls = shared.server_tls;
        let setup = server_setup(scenario, &pki, tls).map_err(|e| format!("{e:#}"))?;
        let reload = reload_setup(scenario, &pki, tls)
            .transpose()
            .map_err(|e| format!("reload: {e:#}"))?;
        Ok::<_, String>((pki, setup, reload))
    })
    .await;
    let (pki, setup, reload_setup) = match built {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return error(e),
        Err(e) => return error(format!("server setup panicked: {e}")),
    };
    let runtime = plan.runtime.clone();
    if scenario.startup.as_ref().is_some_and(|s| s.fails) {
        return vec![check_start_fails(plan, scenario, setup, start).await];
    }
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
        Ok((Err(e), _)) => {
            let msg = format!(
                "{} server for {}: {e:#}",
                plan.runtime.build_name(),
                scenario.path.display()
            );
            if crate::runtime::refused(&e) {
                return start_failed_outcomes(plan, cases, msg, error).await;
            }
            // Files, ports, a killed server: the harness's failure, not the scenario's.
            return error(msg);
        }
        Err(e) => return error(format!("server setup panicked: {e}")),
    };
    let mut results = Vec::new();
    if let (Some(reload), Some(new_setup)) = (&scenario.reload, reload_setup) {
        let mut server = slot.take().expect("prepared");
        let began = Instant::now();
        let (refused, server) = tokio::task::spawn_blocking(move || {
            let r = server
                .reload(&new_setup)
                .map_err(|e| format!("{e:#}\n{}", server.log()));
            (r, server)
        })
        .await
        .expect("reload task");
        let facts = server.facts().clone();
        *slot = Some(server);
        if reload.expect.fails {
            let id = format!("{}/server-reload", scenario.name);
            if plan.filter.matches(&id) {
                let class = crate::error_class::ErrorClass::ServerReloadFailed;
                results.push(server_event(
                    id,
                    class,
                    &reload.expect,
                    refused,
                    Some(facts),
                    began.elapsed().as_millis(),
                ));
            }
        } else if let Err(e) = refused {
            results.extend(error(format!("reload into [reload] failed: {e}")));
            return results;
        }
    }
    let server = slot.as_ref().expect("prepared");
    let facts = server.facts().clone();
    let endpoint = Endpoint::of(server.as_ref());
    let log = server.log_source();
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
                &endpoint,
                &pki,
                plan.timeout,
                Some(&log),
            ));
        }
    }
    use futures_util::StreamExt;
    // Bounded: every attempt is a server backend, and a 2-core machine gains nothing past this.
    let at_once = if scenario.checks_server_log() {
        1
    } else {
        ATTEMPTS_AT_ONCE
    };
    let attempted: Vec<CaseResult> = futures_util::stream::iter(attempts)
        .buffer_unordered(at_once)
        .collect()
        .await;
    results.extend(attempted);
    // A server that died under the attempts (killed, crashed, out of space) makes their
    // outcomes meaningless: the harness's failure, named, and the next scenario starts afresh.
    if let Some(how) = slot.as_mut().and_then(|s| s.exited()) {
        let log = slot.as_ref().map(|s| s.log()).unwrap_or_default();
        let msg = format!(
            "the {} server died during {} ({how})",
            plan.runtime.build_name(),
            scenario.path.display(),
        );
        // The log's tail once: every pair of the scenario reports the same death.
        for (i, r) in results.iter_mut().enumerate() {
            r.verdict = Verdict::Error(if i == 0 {
                format!("{msg}; {}", log_tail(&log))
            } else {
                format!("{msg}; its log is quoted with the scenario's first error")
            });
        }
        if let Some(dead) = slot.take() {
            tokio::task::spawn_blocking(move || drop(dead)).await.ok();
        }
    }
    results
}

/// The last lines of a server log, for an error that names what happened to it.
fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join("\n");
    format!("its log ends:\n{tail}")
}

/// A server that did not start is each case's outcome (`server_start_failed`), judged with the
/// build's statically detected facts: a version that lacks a setting or hba option the file
/// uses refuses to start, and that is a divergence overrides declare, not a harness error.
async fn start_failed_outcomes(
    plan: &Arc<Plan>,
    cases: &[&Case],
    msg: String,
    error: impl Fn(String) -> Vec<CaseResult>,
) -> Vec<CaseResult> {
    let runtime = plan.runtime.clone();
    let facts = match tokio::task::spawn_blocking(move || runtime.detect_facts()).await {
        Ok(Ok(f)) => f,
        _ => return error(msg),
    };
    let mut out = Vec::new();
    for case in cases {
        for client in &plan.clients {
            let backend = BackendFacts {
                server: facts.clone(),
                client: client.facts().clone(),
            };
            let outcome = Outcome::failed(
                crate::error_class::ErrorClass::ServerStartFailed,
                msg.clone(),
            );
            out.push(evaluate(case, &client.facts().name, &backend, outcome, 0));
        }
    }
    out
}

/// `[startup] fails = true`: a fresh server with this configuration must refuse to start.
async fn check_start_fails(
    plan: &Arc<Plan>,
    scenario: &Scenario,
    setup: ServerSetup,
    began: Instant,
) -> CaseResult {
    let runtime = plan.runtime.clone();
    let (refused, facts) = tokio::task::spawn_blocking(move || {
        let refused = match runtime.start(&setup) {
            Ok(server) => {
                drop(server);
                Ok(Ok(()))
            }
            Err(e) if crate::runtime::refused(&e) => Ok(Err(format!("{e:#}"))),
            // Not the configuration's refusal: the harness's failure.
            Err(e) => Err(format!("{} server: {e:#}", runtime.build_name())),
        };
        (refused, runtime.detect_facts().ok())
    })
    .await
    .expect("start task");
    let wanted = scenario.startup.as_ref().expect("checked");
    let class = crate::error_class::ErrorClass::ServerStartFailed;
    let id = format!("{}/server-start", scenario.name);
    let millis = began.elapsed().as_millis();
    match refused {
        Ok(refused) => server_event(id, class, wanted, refused, facts, millis),
        Err(why) => {
            let mut result = server_event(id, class, wanted, Err(why.clone()), facts, millis);
            result.verdict = Verdict::Error(why);
            result
        }
    }
}

/// Concurrent attempts per scenario.
const ATTEMPTS_AT_ONCE: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_class::ErrorClass;

    /// A build declared to accept a configuration passes when it starts and fails when it
    /// refuses; other builds must still refuse.
    #[test]
    fn server_event_with_a_build_that_accepts() {
        let wanted: ServerEventExpect = toml::from_str(
            r#"
fails = true
log = ["could not load private key file"]
[[override]]
when.server.tls_library = "nss"
fails = false
reason = "reads the key per connection"
"#,
        )
        .unwrap();
        let facts = |lib: &str| crate::facts::ServerFacts {
            build: "b".into(),
            runtime: "local".into(),
            pg_version: "15".into(),
            tls_library: lib.into(),
            tls_version: "3".into(),
        };
        let class = ErrorClass::ServerStartFailed;
        let nss = server_event("s".into(), class, &wanted, Ok(()), Some(facts("nss")), 0);
        assert_eq!(nss.verdict, Verdict::Pass);
        assert_eq!(nss.expected, Expect::Accepted);
        assert!(nss.override_reason.is_some());
        let refused = Err("FATAL: x".to_string());
        let nss = server_event("s".into(), class, &wanted, refused, Some(facts("nss")), 0);
        assert!(matches!(nss.verdict, Verdict::Fail(_)));
        let openssl = server_event(
            "s".into(),
            class,
            &wanted,
            Ok(()),
            Some(facts("openssl")),
            0,
        );
        assert!(matches!(openssl.verdict, Verdict::Fail(_)));
        assert_eq!(openssl.expected, Expect::Failed(class));
    }
}

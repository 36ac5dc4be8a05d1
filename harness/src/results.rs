//! Results as documents, read back for reports, diffs and merges.
//!
//! Two formats exist and both stay readable: `run --json` writes its event list (an array,
//! unchanged since it was introduced), `matrix --json` and `merge` write one object whose
//! results each carry the server spec they ran on ([`ResultsDoc`]). Both load into a
//! `ResultsDoc`; whatever pgssl writes anew is in the object format.

use crate::matrix::{MatrixConfig, MatrixResult};
use crate::partition::Shard;
use crate::runner::{CaseResult, Verdict};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The object format: what ran, the totals and every result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultsDoc {
    /// Server specs and client stacks (for a `run`, those that produced results).
    pub config: MatrixConfig,
    /// Column labels `client@server`, in order.
    pub backends: Vec<String>,
    pub passed: usize,
    pub failed: usize,
    pub errors: usize,
    /// Wall time; for merged shards the longest shard's.
    pub wall_millis: u128,
    /// Case ids in scenario order (absent in older files: reports then sort by id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cases: Vec<String>,
    /// Set when this document is one shard of a partitioned run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Shard>,
    pub results: Vec<MatrixResult>,
}

impl ResultsDoc {
    /// A document over `results`; config, backends and totals are derived from them when
    /// `config` is not given.
    pub fn new(
        config: Option<MatrixConfig>,
        cases: Vec<String>,
        results: Vec<MatrixResult>,
        wall_millis: u128,
    ) -> Self {
        let config = config.unwrap_or_else(|| MatrixConfig {
            servers: unique(results.iter().map(|r| r.server.clone())),
            clients: unique(results.iter().map(|r| r.result.client.clone())),
            only: Vec::new(),
            outside: Vec::new(),
            outside_client: Vec::new(),
        });
        let mut doc = ResultsDoc {
            backends: crate::matrix::backends(&config),
            config,
            passed: 0,
            failed: 0,
            errors: 0,
            wall_millis,
            cases,
            partition: None,
            results,
        };
        doc.recount();
        doc
    }

    fn recount(&mut self) {
        let count =
            |f: fn(&Verdict) -> bool| self.results.iter().filter(|r| f(&r.result.verdict)).count();
        self.passed = count(|v| matches!(v, Verdict::Pass));
        self.failed = count(|v| matches!(v, Verdict::Fail(_)));
        self.errors = count(|v| matches!(v, Verdict::Error(_)));
    }

    /// Reads either format. Errors name the file, and the line and column of bad JSON.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut value: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        old_query_form(&mut value);
        let doc = match value {
            Value::Array(events) => from_events(events),
            Value::Object(_) => serde_json::from_value(value).map_err(anyhow::Error::from),
            _ => bail!("an array of events (run --json) or a results object (matrix --json)"),
        };
        doc.with_context(|| format!("{}: not a pgssl results file", path.display()))
    }

    /// Case ids in row order: the recorded order, then any others sorted.
    pub fn case_order(&self) -> Vec<String> {
        let mut order = self.cases.clone();
        let known: BTreeSet<&str> = order.iter().map(String::as_str).collect();
        let extra: BTreeSet<String> = self
            .results
            .iter()
            .map(|r| r.result.case.clone())
            .filter(|c| !known.contains(c.as_str()))
            .collect();
        order.extend(extra);
        order
    }

    /// Writes the object format.
    pub fn write(&self, path: &Path) -> Result<()> {
        let body = serde_json::to_string_pretty(self)?;
        std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))
    }
}

/// Files written before query expectations were written as they are read held
/// `{"sql": …, "result": {"returns": …}}`; this rewrites them to `{"sql": …, "returns": …}`.
fn old_query_form(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.len() == 2 && m.contains_key("sql") {
                match m.remove("result") {
                    Some(Value::Object(r)) => m.extend(r),
                    // The unit variant `null` was written as a string.
                    Some(Value::String(n)) if n == "null" => {
                        m.insert("null".into(), Value::Bool(true));
                    }
                    Some(other) => {
                        m.insert("result".into(), other);
                    }
                    None => {}
                }
            }
            m.values_mut().for_each(old_query_form);
        }
        Value::Array(a) => a.iter_mut().for_each(old_query_form),
        _ => {}
    }
}

fn unique<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The server spec of a result: its backend's build (the spec as given). A result without
/// backend facts (a harness error) takes the build of the other events of its run segment.
fn from_events(events: Vec<Value>) -> Result<ResultsDoc> {
    let mut results = Vec::new();
    let mut partition = None;
    let mut wall = 0;
    let mut segment: Vec<CaseResult> = Vec::new();
    let mut segment_build: Option<String> = None;
    let mut flush = |segment: &mut Vec<CaseResult>, build: &mut Option<String>| {
        for r in segment.drain(..) {
            let server = r
                .backend
                .as_ref()
                .map(|b| b.server.build.clone())
                .or_else(|| build.clone())
                .unwrap_or_else(|| "?".into());
            results.push(MatrixResult { server, result: r });
        }
        *build = None;
    };
    for (i, mut e) in events.into_iter().enumerate() {
        let kind = e
            .get("event")
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("event {i} has no \"event\" tag"))?;
        match kind.as_str() {
            "started" => flush(&mut segment, &mut segment_build),
            "server_ready" => {
                segment_build = e
                    .pointer("/server/build")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            }
            "case_finished" => {
                if let Some(m) = e.as_object_mut() {
                    m.remove("event");
                }
                let r: CaseResult =
                    serde_json::from_value(e).with_context(|| format!("event {i}"))?;
                if let Some(b) = &r.backend {
                    segment_build.get_or_insert_with(|| b.server.build.clone());
                }
                segment.push(r);
            }
            "finished" => {
                wall += e.get("wall_millis").and_then(Value::as_u64).unwrap_or(0) as u128;
                flush(&mut segment, &mut segment_build);
            }
            "partition" => {
                partition = Some(
                    serde_json::from_value(e["partition"].clone())
                        .with_context(|| format!("event {i}"))?,
                )
            }
            other => bail!("event {i}: unknown event {other:?}"),
        }
    }
    flush(&mut segment, &mut segment_build);
    let mut doc = ResultsDoc::new(None, Vec::new(), results, wall);
    doc.partition = partition;
    Ok(doc)
}

/// Joins documents: shards of one partitioned run (with `whole`, each shard exactly once and
/// their units disjoint and complete), or runs over different backends. A (case, backend)
/// pair present twice is refused, naming both files.
pub fn merge(docs: Vec<(PathBuf, ResultsDoc)>, whole: bool) -> Result<ResultsDoc> {
    if docs.is_empty() {
        bail!("nothing to merge");
    }
    if whole {
        check_shards(&docs)?;
    }
    let mut seen: BTreeMap<(String, String), &Path> = BTreeMap::new();
    for (path, doc) in &docs {
        for r in &doc.results {
            let key = (r.result.case.clone(), r.backend());
            if let Some(first) = seen.insert(key, path) {
                bail!(
                    "{} [{}] is in both {} and {}",
                    r.result.case,
                    r.backend(),
                    first.display(),
                    path.display()
                );
            }
        }
    }
    let config = MatrixConfig {
        servers: unique(docs.iter().flat_map(|(_, d)| d.config.servers.clone())),
        clients: unique(docs.iter().flat_map(|(_, d)| d.config.clients.clone())),
        only: unique(docs.iter().flat_map(|(_, d)| d.config.only.clone())),
        outside: unique(docs.iter().flat_map(|(_, d)| d.config.outside.clone())),
        outside_client: unique(
            docs.iter()
                .flat_map(|(_, d)| d.config.outside_client.clone()),
        ),
    };
    let cases = unique(docs.iter().flat_map(|(_, d)| d.cases.clone()));
    let wall = docs.iter().map(|(_, d)| d.wall_millis).max().unwrap_or(0);
    let results = docs.into_iter().flat_map(|(_, d)| d.results).collect();
    Ok(ResultsDoc::new(Some(config), cases, results, wall))
}

fn check_shards(docs: &[(PathBuf, ResultsDoc)]) -> Result<()> {
    let shards: Vec<(&Path, &Shard)> = docs
        .iter()
        .filter_map(|(p, d)| d.partition.as_ref().map(|s| (p.as_path(), s)))
        .collect();
    if shards.is_empty() {
        return Ok(());
    }
    if shards.len() != docs.len() {
        bail!("some files are shards of a partitioned run and some are not");
    }
    let count = shards[0].1.count;
    let total = shards[0].1.units_total;
    let mut owner: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut indexes = BTreeSet::new();
    for (path, s) in &shards {
        if s.count != count || s.units_total != total {
            bail!(
                "{} is shard {}/{} of {} units, {} is of {count} shards and {total} units",
                path.display(),
                s.index,
                s.count,
                s.units_total,
                shards[0].0.display()
            );
        }
        if !indexes.insert(s.index) {
            bail!("shard {}/{count} is given twice", s.index);
        }
        for u in &s.units {
            if let Some(first) = owner.insert(u.as_str(), path) {
                bail!(
                    "{u} ran in both {} and {}: the shards computed different partitions \
                     (give every shard the same scenarios and --durations file)",
                    first.display(),
                    path.display()
                );
            }
        }
    }
    let missing: Vec<String> = (1..=count)
        .filter(|k| !indexes.contains(k))
        .map(|k| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        bail!("shards {} are missing", missing.join(", "));
    }
    if owner.len() != total {
        bail!(
            "the shards ran {} of {total} units: they computed different partitions \
             (give every shard the same scenarios and --durations file)",
            owner.len()
        );
    }
    Ok(())
}

/// How a (case, backend) pair came out, in the four kinds every report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The canonical expectation held.
    Canonical,
    /// A declared override held.
    Override,
    /// The expectation did not hold.
    Failed,
    /// The harness could not run the case.
    Error,
}

impl Status {
    pub fn of(r: &CaseResult) -> Status {
        match (&r.verdict, &r.override_reason) {
            (Verdict::Pass, None) => Status::Canonical,
            (Verdict::Pass, Some(_)) => Status::Override,
            (Verdict::Fail(_), _) => Status::Failed,
            (Verdict::Error(_), _) => Status::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Canonical => "canonical",
            Status::Override => "override",
            Status::Failed => "failed",
            Status::Error => "error",
        }
    }

    /// The table's one-character cell.
    pub fn symbol(self) -> char {
        match self {
            Status::Canonical => '.',
            Status::Override => 'o',
            Status::Failed => 'F',
            Status::Error => 'E',
        }
    }

    pub fn passed(self) -> bool {
        matches!(self, Status::Canonical | Status::Override)
    }
}

/// What an attempt came to, as a class: `connected`, an error class, `accepted`, or `none`
/// when the harness could not attempt it.
pub fn outcome_class(r: &CaseResult) -> String {
    match &r.outcome {
        Some(crate::outcome::Outcome::Connected(_)) => "connected".into(),
        Some(crate::outcome::Outcome::Failed { class, .. }) => class.to_string(),
        Some(crate::outcome::Outcome::Accepted) => "accepted".into(),
        None => "none".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `run --json` file: a harness error without backend facts takes its run's server.
    #[test]
    fn run_events_read_back_with_their_server() {
        let facts = serde_json::json!({
            "server": {"build": "pg15", "runtime": "container", "pg_version": "15.1",
                       "tls_library": "openssl", "tls_version": "3.0"},
            "client": {"name": "libpq", "tls_library": "openssl", "tls_version": "3.0",
                       "libpq_version": "15.1"}
        });
        let result = |case: &str, backend: Value, verdict: Value| {
            serde_json::json!({"event": "case_finished", "case": case, "client": "libpq",
                "backend": backend, "expected": {"failed": "hostname_mismatch"},
                "override_reason": null, "override_selector": null, "outcome": null,
                "verdict": verdict, "millis": 5})
        };
        let events = vec![
            serde_json::json!({"event": "started", "total": 2}),
            result(
                "s/a",
                Value::Null,
                serde_json::json!({"verdict": "error", "why": "x"}),
            ),
            result("s/b", facts, serde_json::json!({"verdict": "pass"})),
            serde_json::json!({"event": "finished", "passed": 1, "failed": 0, "errors": 1,
                               "wall_millis": 40}),
        ];
        let doc = from_events(events).unwrap();
        let servers: Vec<&str> = doc.results.iter().map(|r| r.server.as_str()).collect();
        assert_eq!(servers, ["pg15", "pg15"]);
        assert_eq!((doc.passed, doc.errors, doc.wall_millis), (1, 1, 40));
        assert_eq!(doc.backends, ["libpq@pg15"]);
        // Written in the object format and read back, nothing changes.
        let again: ResultsDoc =
            serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        assert_eq!(again.results.len(), 2);
        assert_eq!(again.results[1].result.verdict, Verdict::Pass);
        assert!(from_events(vec![serde_json::json!({"event": "bogus"})]).is_err());
    }
}

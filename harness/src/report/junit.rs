//! JUnit XML for CI systems (written with quick-junit): one test suite per backend
//! (`client@server`), one test case per (case, backend) whose class name is the scenario.
//! A failed expectation is a `<failure>`, a case the harness could not run an `<error>`; both
//! carry the expected and actual outcome and the raw message. An override that applied is
//! a set of properties (`override.reason`, `override.selector`, `expected`).

use crate::matrix::MatrixResult;
use crate::outcome::Outcome;
use crate::runner::Verdict;
use crate::scenario::Expect;
use anyhow::{Context, Result};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// `failed: hostname_mismatch`, or `connected` with the session properties that must hold.
pub fn expected_text(e: &Expect) -> String {
    match e {
        Expect::Failed(c) => format!("failed: {c}"),
        Expect::Accepted => "accepted".into(),
        Expect::Connected(s) => {
            let props = serde_json::to_string(s).unwrap_or_default();
            if props == "{}" {
                "connected".into()
            } else {
                format!("connected {props}")
            }
        }
    }
}

/// The native message of a failed attempt.
pub fn raw_of(r: &crate::runner::CaseResult) -> Option<&str> {
    match &r.outcome {
        Some(Outcome::Failed { raw, .. }) => Some(raw),
        _ => None,
    }
}

/// The report over `results`: suites by backend name, cases by id, so the file does not
/// depend on the order in which attempts finished.
pub fn report(results: &[MatrixResult]) -> Report {
    let mut sorted: Vec<&MatrixResult> = results.iter().collect();
    sorted.sort_by(|a, b| a.result.case.cmp(&b.result.case));
    let mut suites: BTreeMap<String, TestSuite> = BTreeMap::new();
    for r in sorted {
        let label = r.backend();
        let suite = suites.entry(label.clone()).or_insert_with(|| {
            let mut s = TestSuite::new(label.clone());
            if let Some(b) = &r.result.backend {
                s.add_properties([
                    Property::new("server.pg_version", b.server.pg_version.as_str()),
                    Property::new(
                        "server.tls",
                        format!("{} {}", b.server.tls_library, b.server.tls_version),
                    ),
                    Property::new(
                        "client.tls",
                        format!("{} {}", b.client.tls_library, b.client.tls_version),
                    ),
                ]);
            }
            s
        });
        suite.add_test_case(test_case(r));
    }
    let mut report = Report::new("pgssl");
    let total: u128 = results.iter().map(|r| r.result.millis).sum();
    report.set_time(Duration::from_millis(total as u64));
    report.add_test_suites(suites.into_values().map(|mut s| {
        let t: u128 = s
            .test_cases
            .iter()
            .filter_map(|c| c.time)
            .map(|d| d.as_millis())
            .sum();
        s.set_time(Duration::from_millis(t as u64));
        s
    }));
    report
}

fn test_case(r: &MatrixResult) -> TestCase {
    let res = &r.result;
    let actual = res
        .outcome
        .as_ref()
        .map_or("no outcome".to_string(), Outcome::summary);
    let expected = expected_text(&res.expected);
    let status = match &res.verdict {
        Verdict::Pass => TestCaseStatus::success(),
        Verdict::Fail(why) | Verdict::Error(why) => {
            let kind = if matches!(res.verdict, Verdict::Fail(_)) {
                NonSuccessKind::Failure
            } else {
                NonSuccessKind::Error
            };
            let mut s = TestCaseStatus::non_success(kind);
            s.set_message(why.as_str());
            s.set_type(if kind == NonSuccessKind::Failure {
                "expectation"
            } else {
                "harness"
            });
            let mut text = format!("expected: {expected}\nactual: {actual}\n");
            if let Some(raw) = raw_of(res) {
                text.push_str(&format!("raw: {raw}\n"));
            }
            text.push_str(&format!("why: {why}\n"));
            s.set_description(text);
            s
        }
    };
    let mut case = TestCase::new(res.case.as_str(), status);
    case.set_classname(crate::partition::scenario_of(&res.case));
    case.set_time(Duration::from_millis(res.millis as u64));
    case.add_property(Property::new("expected", expected));
    case.add_property(Property::new("actual", actual));
    if let Some(reason) = &res.override_reason {
        case.add_property(Property::new("override.reason", reason.as_str()));
    }
    if let Some(sel) = &res.override_selector {
        case.add_property(Property::new("override.selector", sel.as_str()));
    }
    case
}

/// Writes the JUnit XML of `results` to `path`.
pub fn write(path: &Path, results: &[MatrixResult]) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    report(results)
        .serialize(std::io::BufWriter::new(file))
        .with_context(|| format!("writing {}", path.display()))
}

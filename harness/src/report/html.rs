//! The HTML matrix (`pgssl report --html`): one self-contained file (style and script inline,
//! nothing fetched) with the case × backend grid. Every cell carries what a reader needs as
//! data attributes (status, expected, actual, raw message, override reason and selector), and
//! the script shows them for a clicked cell and filters by scenario, backend, error class and
//! status. Filters live in the URL fragment (`#scenario=…&backend=…&class=…&status=…`,
//! `cell=<case> <backend>` opens a cell), so a filtered view is a link.
//!
//! Written by hand: it is one table and a few attributes; a template engine would add a
//! dependency for less than this file.

use crate::diff::Diff;
use crate::matrix::MatrixResult;
use crate::partition::scenario_of;
use crate::report::junit::{expected_text, raw_of};
use crate::results::{outcome_class, ResultsDoc, Status};
use crate::runner::{CaseResult, Verdict};
use crate::scenario::Expect;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

const STYLE: &str = include_str!("html.css");
const SCRIPT: &str = include_str!("html.js");

/// Escapes text for HTML content and double-quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn options(out: &mut String, id: &str, label: &str, values: &[(String, String)]) {
    let _ = write!(
        out,
        "<label>{label} <select id=\"f-{id}\" data-filter=\"{id}\"><option value=\"\">all</option>"
    );
    for (value, text) in values {
        let _ = write!(
            out,
            "<option value=\"{}\">{}</option>",
            esc(value),
            esc(text)
        );
    }
    out.push_str("</select></label>\n");
}

/// The error classes a cell involves: expected and actual.
fn classes(r: &CaseResult) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    if let Expect::Failed(c) = &r.expected {
        set.insert(c.to_string());
    }
    set.insert(outcome_class(r));
    set
}

fn cell(out: &mut String, backend: &str, r: Option<&CaseResult>, changes: &[&str]) {
    let Some(r) = r else {
        let _ = write!(out, "<td data-backend=\"{}\"></td>", esc(backend));
        return;
    };
    let status = Status::of(r);
    let mut attrs = format!(
        "class=\"c {st}{chg}\" data-backend=\"{b}\" data-status=\"{st}\" data-classes=\"{cl}\" \
         data-expected=\"{ex}\" data-actual=\"{ac}\" data-ms=\"{ms}\"",
        st = status.as_str(),
        chg = if changes.is_empty() { "" } else { " changed" },
        b = esc(backend),
        cl = esc(&classes(r).into_iter().collect::<Vec<_>>().join(" ")),
        ex = esc(&expected_text(&r.expected)),
        ac = esc(&r
            .outcome
            .as_ref()
            .map_or("no outcome".into(), crate::outcome::Outcome::summary)),
        ms = r.millis,
    );
    if let Some(raw) = raw_of(r) {
        let _ = write!(attrs, " data-raw=\"{}\"", esc(raw));
    }
    if let Some(reason) = &r.override_reason {
        let _ = write!(attrs, " data-reason=\"{}\"", esc(reason));
    }
    if let Some(sel) = &r.override_selector {
        let _ = write!(attrs, " data-selector=\"{}\"", esc(sel));
    }
    if let Verdict::Fail(why) | Verdict::Error(why) = &r.verdict {
        let _ = write!(attrs, " data-why=\"{}\"", esc(why));
    }
    if !changes.is_empty() {
        let _ = write!(attrs, " data-change=\"{}\"", changes.join(" "));
    }
    let _ = write!(out, "<td {attrs}>{}</td>", status.symbol());
}

fn diff_section(out: &mut String, diff: &Diff, baseline: &str) {
    let _ = writeln!(
        out,
        "<section id=\"diff\"><h2>Changes since {}</h2>\n<p>{} pairs in both runs{}.</p>",
        esc(baseline),
        diff.compared,
        if diff.regressed() {
            "; <strong class=\"regressed\">regressions</strong>"
        } else {
            "; no regressions"
        }
    );
    if diff.entries.is_empty() {
        out.push_str("<p>No changes.</p></section>\n");
        return;
    }
    out.push_str("<table class=\"changes\"><thead><tr><th>change</th><th>case</th><th>backend</th><th>before</th><th>after</th></tr></thead><tbody>\n");
    for e in &diff.entries {
        let _ = writeln!(
            out,
            "<tr class=\"{}\" data-change=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.change.key(),
            e.change.key(),
            esc(e.change.title()),
            esc(&e.case),
            esc(&e.backend),
            esc(&e.old),
            esc(&e.new)
        );
    }
    out.push_str("</tbody></table></section>\n");
}

/// The page for `doc` (and, with `diff`, the changes since the run named `baseline`).
pub fn render(doc: &ResultsDoc, sources: &[String], diff: Option<(&Diff, &str)>) -> String {
    let mut by: BTreeMap<(&str, String), &MatrixResult> = BTreeMap::new();
    for r in &doc.results {
        by.insert((r.result.case.as_str(), r.backend()), r);
    }
    let backends: Vec<String> = {
        let mut b = doc.backends.clone();
        for r in &doc.results {
            if !b.contains(&r.backend()) {
                b.push(r.backend());
            }
        }
        b.retain(|label| doc.results.iter().any(|r| &r.backend() == label));
        b
    };
    let cases = doc.case_order();
    let cases: Vec<&String> = cases
        .iter()
        .filter(|c| doc.results.iter().any(|r| &r.result.case == *c))
        .collect();
    let count = |s: Status| {
        doc.results
            .iter()
            .filter(|r| Status::of(&r.result) == s)
            .count()
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>pgssl results</title><style>{STYLE}</style></head><body>\n\
         <h1>pgssl results</h1>\n<p class=\"summary\">{} pairs over {} cases and {} backends: \
         <span class=\"k canonical\">{} canonical</span> <span class=\"k override\">{} override</span> \
         <span class=\"k failed\">{} failed</span> <span class=\"k error\">{} harness errors</span>; \
         from {}.</p>\n",
        doc.results.len(),
        cases.len(),
        backends.len(),
        count(Status::Canonical),
        count(Status::Override),
        count(Status::Failed),
        count(Status::Error),
        esc(&sources.join(", ")),
    );
    out.push_str("<p class=\"legend\">Cells: <span class=\"c canonical\">.</span> canonical expectation held, <span class=\"c override\">o</span> a declared override held, <span class=\"c failed\">F</span> failed, <span class=\"c error\">E</span> harness error. Click a cell for what was expected, what happened, the raw message and the override's reason.</p>\n");
    if let Some((d, baseline)) = diff {
        diff_section(&mut out, d, baseline);
    }
    out.push_str("<form id=\"filters\">\n");
    let scenarios: BTreeSet<&str> = cases.iter().map(|c| scenario_of(c)).collect();
    let pairs = |it: Vec<String>| -> Vec<(String, String)> {
        it.into_iter().map(|v| (v.clone(), v)).collect()
    };
    options(
        &mut out,
        "scenario",
        "scenario",
        &pairs(scenarios.iter().map(|s| s.to_string()).collect()),
    );
    options(&mut out, "backend", "backend", &pairs(backends.clone()));
    let all_classes: BTreeSet<String> = doc
        .results
        .iter()
        .flat_map(|r| classes(&r.result))
        .collect();
    options(
        &mut out,
        "class",
        "class",
        &pairs(all_classes.into_iter().collect()),
    );
    let mut statuses: Vec<(String, String)> = [
        Status::Canonical,
        Status::Override,
        Status::Failed,
        Status::Error,
    ]
    .iter()
    .map(|s| (s.as_str().to_string(), s.as_str().to_string()))
    .collect();
    statuses.push(("divergent".into(), "not canonical".into()));
    if diff.is_some() {
        statuses.push(("changed".into(), "changed".into()));
    }
    options(&mut out, "status", "status", &statuses);
    out.push_str("</form>\n<p id=\"shown\"></p>\n<aside id=\"detail\" hidden></aside>\n");
    out.push_str("<table id=\"grid\"><thead><tr><th class=\"case\">case</th>");
    for b in &backends {
        let _ = write!(
            out,
            "<th class=\"b\" data-backend=\"{0}\" title=\"{0}\"><span>{0}</span></th>",
            esc(b)
        );
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for case in &cases {
        let _ = write!(
            out,
            "<tr data-scenario=\"{}\" data-case=\"{}\"><th class=\"case\">{}</th>",
            esc(scenario_of(case)),
            esc(case),
            esc(case)
        );
        for b in &backends {
            let r = by.get(&(case.as_str(), b.clone())).map(|m| &m.result);
            let changes: Vec<&str> = diff
                .map(|(d, _)| d.of(case, b).iter().map(|e| e.change.key()).collect())
                .unwrap_or_default();
            cell(&mut out, b, r, &changes);
        }
        out.push_str("</tr>\n");
    }
    let _ = write!(
        out,
        "</tbody></table>\n<script>{SCRIPT}</script>\n</body></html>\n"
    );
    out
}

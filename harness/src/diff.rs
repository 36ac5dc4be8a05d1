//! `pgssl diff OLD NEW`: what changed between two runs (two builds, two commits), per
//! (case, backend) pair: newly failing, newly passing, outcomes that moved from one class to
//! another, overrides that started or stopped applying, expectations that changed, pairs
//! that appeared or went away. A regression is a pair that fails in NEW and passed in OLD
//! or was not there.

use crate::report::junit::expected_text;
use crate::results::{outcome_class, ResultsDoc, Status};
use crate::runner::{CaseResult, Verdict};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The kinds of change, in the order reports list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    NewlyFailing,
    NewlyPassing,
    ClassMoved,
    OverrideStarted,
    OverrideStopped,
    OverrideChanged,
    ExpectationChanged,
    Added,
    Removed,
}

impl Change {
    pub const ALL: [Change; 9] = [
        Change::NewlyFailing,
        Change::NewlyPassing,
        Change::ClassMoved,
        Change::OverrideStarted,
        Change::OverrideStopped,
        Change::OverrideChanged,
        Change::ExpectationChanged,
        Change::Added,
        Change::Removed,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Change::NewlyFailing => "newly failing",
            Change::NewlyPassing => "newly passing",
            Change::ClassMoved => "outcome moved to another class",
            Change::OverrideStarted => "override started applying",
            Change::OverrideStopped => "override stopped applying",
            Change::OverrideChanged => "another override applies",
            Change::ExpectationChanged => "expectation changed",
            Change::Added => "only in NEW",
            Change::Removed => "only in OLD",
        }
    }

    /// Short name, for the HTML report's filter.
    pub fn key(self) -> &'static str {
        match self {
            Change::NewlyFailing => "newly-failing",
            Change::NewlyPassing => "newly-passing",
            Change::ClassMoved => "class-moved",
            Change::OverrideStarted => "override-started",
            Change::OverrideStopped => "override-stopped",
            Change::OverrideChanged => "override-changed",
            Change::ExpectationChanged => "expectation-changed",
            Change::Added => "added",
            Change::Removed => "removed",
        }
    }
}

/// One change of one pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub change: Change,
    pub case: String,
    pub backend: String,
    /// Before and after, in words.
    pub old: String,
    pub new: String,
}

#[derive(Debug, Default)]
pub struct Diff {
    pub entries: Vec<Entry>,
    /// Pairs present in both runs.
    pub compared: usize,
}

fn verdict_text(r: &CaseResult) -> String {
    let st = Status::of(r).as_str();
    match &r.verdict {
        Verdict::Pass => format!("{st} ({})", outcome_class(r)),
        Verdict::Fail(why) | Verdict::Error(why) => format!("{st}: {why}"),
    }
}

fn override_text(r: &CaseResult) -> String {
    match (&r.override_selector, &r.override_reason) {
        (Some(sel), Some(reason)) => format!("{sel}: {reason}"),
        (None, Some(reason)) => reason.clone(),
        _ => "none".into(),
    }
}

/// The changes from `old` to `new`, ordered by kind, case and backend.
pub fn diff(old: &ResultsDoc, new: &ResultsDoc) -> Diff {
    let index = |d: &'_ ResultsDoc| -> BTreeMap<(String, String), CaseResult> {
        d.results
            .iter()
            .map(|r| ((r.result.case.clone(), r.backend()), r.result.clone()))
            .collect()
    };
    let (before, after) = (index(old), index(new));
    let mut out = Diff::default();
    let mut push = |change, (case, backend): &(String, String), old: String, new: String| {
        out.entries.push(Entry {
            change,
            case: case.clone(),
            backend: backend.clone(),
            old,
            new,
        })
    };
    for (key, n) in &after {
        let Some(o) = before.get(key) else {
            push(Change::Added, key, "-".into(), verdict_text(n));
            if !Status::of(n).passed() {
                push(Change::NewlyFailing, key, "-".into(), verdict_text(n));
            }
            continue;
        };
        let (so, sn) = (Status::of(o), Status::of(n));
        if so.passed() && !sn.passed() {
            push(Change::NewlyFailing, key, verdict_text(o), verdict_text(n));
        }
        if !so.passed() && sn.passed() {
            push(Change::NewlyPassing, key, verdict_text(o), verdict_text(n));
        }
        if outcome_class(o) != outcome_class(n) {
            push(Change::ClassMoved, key, outcome_class(o), outcome_class(n));
        }
        match (&o.override_reason, &n.override_reason) {
            (None, Some(_)) => push(
                Change::OverrideStarted,
                key,
                "none".into(),
                override_text(n),
            ),
            (Some(_), None) => push(
                Change::OverrideStopped,
                key,
                override_text(o),
                "none".into(),
            ),
            (Some(_), Some(_)) if override_text(o) != override_text(n) => push(
                Change::OverrideChanged,
                key,
                override_text(o),
                override_text(n),
            ),
            _ => {}
        }
        if o.expected != n.expected {
            push(
                Change::ExpectationChanged,
                key,
                expected_text(&o.expected),
                expected_text(&n.expected),
            );
        }
    }
    for (key, o) in &before {
        if !after.contains_key(key) {
            push(Change::Removed, key, verdict_text(o), "-".into());
        }
    }
    out.compared = after.keys().filter(|k| before.contains_key(*k)).count();
    out.entries
        .sort_by(|a, b| (a.change, &a.case, &a.backend).cmp(&(b.change, &b.case, &b.backend)));
    out
}

impl Diff {
    /// Something that passed (or was not there) fails now.
    pub fn regressed(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.change == Change::NewlyFailing)
    }

    pub fn count(&self, change: Change) -> usize {
        self.entries.iter().filter(|e| e.change == change).count()
    }

    /// Every change of `case` on `backend`.
    pub fn of(&self, case: &str, backend: &str) -> Vec<&Entry> {
        self.entries
            .iter()
            .filter(|e| e.case == case && e.backend == backend)
            .collect()
    }

    /// Sections per kind of change, then a line of counts.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for change in Change::ALL {
            let entries: Vec<&Entry> = self.entries.iter().filter(|e| e.change == change).collect();
            if entries.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{} ({}):", change.title(), entries.len());
            for e in entries {
                let _ = writeln!(out, "  {} [{}]", e.case, e.backend);
                let _ = writeln!(out, "    was: {}", e.old.replace('\n', "\n         "));
                let _ = writeln!(out, "    now: {}", e.new.replace('\n', "\n         "));
            }
        }
        let counts: Vec<String> = Change::ALL
            .iter()
            .map(|c| format!("{} {}", self.count(*c), c.title()))
            .collect();
        let _ = writeln!(
            out,
            "pgssl diff: {} pairs in both; {}",
            self.compared,
            counts.join(", ")
        );
        out
    }
}

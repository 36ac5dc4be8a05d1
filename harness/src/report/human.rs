//! Progress and a summary for people, on stderr.

use super::progress::Progress;
use super::Reporter;
use crate::runner::{CaseResult, Event, Verdict};
use std::io::Write;

pub struct HumanReporter {
    total: usize,
    done: usize,
    problems: Vec<CaseResult>,
    /// Print a line per case, not just per scenario.
    pub verbose: bool,
    progress: Progress,
    /// The whole run's size was given up front (a matrix runs several plans).
    preset_total: bool,
}

impl HumanReporter {
    pub fn new(verbose: bool) -> Self {
        HumanReporter {
            total: 0,
            done: 0,
            problems: Vec::new(),
            verbose,
            progress: Progress::new(),
            preset_total: false,
        }
    }

    /// For a run of several plans: the progress counts toward `total` from the start.
    pub fn with_total(mut self, total: usize) -> Self {
        self.progress.add_total(total);
        self.preset_total = true;
        self
    }
}

impl Reporter for HumanReporter {
    fn event(&mut self, event: &Event) {
        match event {
            Event::Started { total } => {
                self.total = *total;
                if !self.preset_total {
                    self.progress.add_total(*total);
                }
                self.progress
                    .println(&format!("pgssl: running {total} case/backend pairs"));
            }
            Event::ServerReady {
                scenario,
                server,
                reused,
                millis,
            } => {
                let how = if *reused { "reloaded" } else { "started" };
                self.progress.println(&format!(
                    "  server {how} for {scenario}: PostgreSQL {} with {} {} ({millis} ms)",
                    server.pg_version, server.tls_library, server.tls_version
                ));
            }
            Event::CaseFinished(r) => {
                self.done += 1;
                let label = match &r.verdict {
                    Verdict::Pass => "PASS",
                    Verdict::Fail(_) => "FAIL",
                    Verdict::Error(_) => "ERROR",
                };
                if self.verbose || !matches!(r.verdict, Verdict::Pass) {
                    self.progress.println(&format!(
                        "  [{:>4}/{}] {label:5} {} ({} ms)",
                        self.done,
                        self.total,
                        r.name(),
                        r.millis
                    ));
                }
                self.progress
                    .finished_one(matches!(r.verdict, Verdict::Pass));
                if !matches!(r.verdict, Verdict::Pass) {
                    self.problems.push((**r).clone());
                }
            }
            Event::Finished(s) => {
                self.progress.clear();
                let mut err = std::io::stderr().lock();
                for r in &self.problems {
                    let why = match &r.verdict {
                        Verdict::Fail(w) | Verdict::Error(w) => w.as_str(),
                        Verdict::Pass => "",
                    };
                    let _ = writeln!(err, "\n--- {}\n    {why}", r.name());
                    if let Some(crate::outcome::Outcome::Failed { raw, .. }) = &r.outcome {
                        let _ = writeln!(err, "    raw: {raw}");
                    }
                }
                let _ = writeln!(
                    err,
                    "\npgssl: {} passed, {} failed, {} harness errors in {:.2} s",
                    s.passed,
                    s.failed,
                    s.errors,
                    s.wall_millis as f64 / 1000.0
                );
            }
        }
    }
}

//! Progress and a summary for people, on stderr.

use super::Reporter;
use crate::runner::{CaseResult, Event, Verdict};
use std::io::Write;

#[derive(Default)]
pub struct HumanReporter {
    total: usize,
    done: usize,
    problems: Vec<CaseResult>,
    /// Print a line per case, not just per scenario.
    pub verbose: bool,
}

impl HumanReporter {
    pub fn new(verbose: bool) -> Self {
        HumanReporter {
            verbose,
            ..Default::default()
        }
    }
}

impl Reporter for HumanReporter {
    fn event(&mut self, event: &Event) {
        let mut err = std::io::stderr().lock();
        match event {
            Event::Started { total } => {
                self.total = *total;
                let _ = writeln!(err, "pgssl: running {total} case/backend pairs");
            }
            Event::ServerReady {
                scenario,
                server,
                reused,
                millis,
            } => {
                let how = if *reused { "reloaded" } else { "started" };
                let _ = writeln!(
                    err,
                    "  server {how} for {scenario}: PostgreSQL {} with {} {} ({millis} ms)",
                    server.pg_version, server.tls_library, server.tls_version
                );
            }
            Event::CaseFinished(r) => {
                self.done += 1;
                let label = match &r.verdict {
                    Verdict::Pass => "PASS",
                    Verdict::Fail(_) => "FAIL",
                    Verdict::Error(_) => "ERROR",
                };
                if self.verbose || !matches!(r.verdict, Verdict::Pass) {
                    let _ = writeln!(
                        err,
                        "  [{:>4}/{}] {label:5} {} ({} ms)",
                        self.done,
                        self.total,
                        r.name(),
                        r.millis
                    );
                }
                if !matches!(r.verdict, Verdict::Pass) {
                    self.problems.push((**r).clone());
                }
            }
            Event::Finished(s) => {
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

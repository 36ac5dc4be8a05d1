//! `pgssl lint`: what loading already refuses (syntax, unknown keys, dangling references),
//! plus stale overrides: ones that restate the canonical outcome or match no backend.

use crate::facts::BackendFacts;
use crate::scenario::Scenario;

/// A finding, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Stale overrides across `scenarios`, judged against the `backends` of the matrix.
pub fn stale_overrides(scenarios: &[Scenario], backends: &[BackendFacts]) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in scenarios {
        for case in &s.cases {
            for o in &case.overrides {
                let at = |message: String| Finding {
                    file: s.path.display().to_string(),
                    line: o.line,
                    message,
                };
                if o.expect == case.expect {
                    out.push(at(format!(
                        "{}: override [{}] restates the canonical expectation",
                        case.id,
                        o.selector.describe()
                    )));
                }
                if !backends.iter().any(|b| o.selector.matches(b)) {
                    let labels: Vec<String> = backends.iter().map(BackendFacts::label).collect();
                    out.push(at(format!(
                        "{}: override [{}] matches no backend of the matrix ({})",
                        case.id,
                        o.selector.describe(),
                        labels.join(", ")
                    )));
                }
            }
        }
    }
    out
}

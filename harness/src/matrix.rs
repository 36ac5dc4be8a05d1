//! `pgssl matrix`: every server build of `ci/matrix.toml` with every client stack, over all
//! scenarios, as a case × backend table. A cell says whether the canonical expectation held
//! (`.`), a declared override held (`o`: this backend diverges, with a reason), or the case
//! failed (`F`) or could not run (`E`). Results also go to JSON.

use crate::runner::{CaseResult, Verdict};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

/// What the matrix runs: the cross product of server builds and client stacks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// `--server` specs: `local` or a server build with an image under ci/images/.
    pub servers: Vec<String>,
    /// Client stack names (`libpq`, `native-tls`, `libpq:<build>`, ...).
    pub clients: Vec<String>,
    /// Clients that run against some server builds only (`[[only]]` tables); every other
    /// client runs against every server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only: Vec<Only>,
    /// Server builds that overrides are declared for but `pgssl matrix` cannot run (built by
    /// hand, out of CI's reach; `[[outside]]` tables): `pgssl lint --matrix` judges overrides
    /// against their facts too, so an override for such a build is not stale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside: Vec<Outside>,
    /// Client stacks overrides are declared for but CI cannot start (a libpq built by hand,
    /// `libpq@<prefix>`; `[[outside_client]]` tables): their facts, for `pgssl lint --matrix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside_client: Vec<OutsideClient>,
}

/// `[[outside_client]]`: a client stack's facts as pgssl detected them, and the servers it
/// runs against: those of `servers` it names, and every `[[outside]]` build when `outside`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutsideClient {
    pub name: String,
    pub tls_library: String,
    pub tls_version: String,
    #[serde(default)]
    pub libpq_version: String,
    #[serde(default)]
    pub servers: Vec<String>,
    #[serde(default)]
    pub outside: bool,
}

/// `[[outside]]`: a server build's facts as pgssl detected them, and the client stacks run
/// against it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Outside {
    pub build: String,
    pub pg_version: String,
    pub tls_library: String,
    pub tls_version: String,
    pub clients: Vec<String>,
}

/// `[[only]] clients = [...] servers = [...]`: these clients, with these servers only.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Only {
    pub clients: Vec<String>,
    pub servers: Vec<String>,
}

impl MatrixConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: Self =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for o in &config.only {
            let unknown = o
                .clients
                .iter()
                .find(|c| !config.clients.contains(c))
                .map(|c| format!("client {c:?} is not in `clients`"))
                .or_else(|| {
                    o.servers
                        .iter()
                        .find(|s| !config.servers.contains(s))
                        .map(|s| format!("server {s:?} is not in `servers`"))
                });
            if let Some(m) = unknown {
                anyhow::bail!("{}: [[only]]: {m}", path.display());
            }
        }
        for c in &config.outside_client {
            if let Some(s) = c.servers.iter().find(|s| !config.servers.contains(s)) {
                anyhow::bail!(
                    "{}: [[outside_client]] {:?}: server {s:?} is not in `servers`",
                    path.display(),
                    c.name
                );
            }
        }
        Ok(config)
    }

    /// The clients that run against `server`, in `clients` order.
    pub fn clients_for(&self, server: &str) -> Vec<String> {
        self.clients
            .iter()
            .filter(|c| {
                self.only
                    .iter()
                    .filter(|o| o.clients.contains(c))
                    .all(|o| o.servers.iter().any(|s| s == server))
            })
            .cloned()
            .collect()
    }
}

/// One result of the matrix: the server spec it ran on, and the result.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixResult {
    pub server: String,
    #[serde(flatten)]
    pub result: CaseResult,
}

/// Read back from the flattened form it is written in (serde's `flatten` cannot read the
/// `u128` millis, so the server spec is taken out by hand).
impl<'de> Deserialize<'de> for MatrixResult {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut v = serde_json::Value::deserialize(d)?;
        let server = v
            .as_object_mut()
            .and_then(|m| m.remove("server"))
            .and_then(|s| s.as_str().map(str::to_string))
            .ok_or_else(|| D::Error::custom("a result without \"server\""))?;
        let result = serde_json::from_value(v).map_err(D::Error::custom)?;
        Ok(MatrixResult { server, result })
    }
}

impl MatrixResult {
    pub fn backend(&self) -> String {
        format!("{}@{}", self.result.client, self.server)
    }
}

fn cell(r: &CaseResult) -> char {
    crate::results::Status::of(r).symbol()
}

/// Backend labels in matrix order (servers outer, clients inner).
pub fn backends(config: &MatrixConfig) -> Vec<String> {
    config
        .servers
        .iter()
        .flat_map(|s| config.clients_for(s).into_iter().map(move |c| (s, c)))
        .map(|(s, c)| format!("{c}@{s}"))
        .collect()
}

/// The table: a legend numbering the backends, then one row per case in `case_order`. Rows
/// where every backend held the canonical expectation are left out unless `all_rows`.
pub fn render(
    config: &MatrixConfig,
    case_order: &[String],
    results: &[MatrixResult],
    all_rows: bool,
) -> String {
    let cols = backends(config);
    let mut cells: BTreeMap<(&str, String), char> = BTreeMap::new();
    for r in results {
        cells.insert((r.result.case.as_str(), r.backend()), cell(&r.result));
    }
    let width = case_order.iter().map(|c| c.len()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "backends ('.' canonical held, 'o' declared override held, 'F' failed, 'E' error):"
    );
    for (i, b) in cols.iter().enumerate() {
        let _ = writeln!(out, "  {:>2} {b}", i + 1);
    }
    let _ = write!(out, "{:width$} ", "case");
    for i in 0..cols.len() {
        let _ = write!(out, "{}", (i + 1) % 10);
    }
    out.push('\n');
    let mut hidden = 0;
    for case in case_order {
        let row: String = cols
            .iter()
            .map(|b| *cells.get(&(case.as_str(), b.clone())).unwrap_or(&' '))
            .collect();
        if !all_rows && row.chars().all(|c| c == '.') {
            hidden += 1;
            continue;
        }
        let _ = writeln!(out, "{case:width$} {row}");
    }
    if hidden > 0 {
        let _ = writeln!(
            out,
            "({hidden} cases where every backend held the canonical expectation are not shown; --all shows them)"
        );
    }
    out
}

/// One line per declared divergence that applied: case, selector, reason, backends.
pub fn divergences(results: &[MatrixResult]) -> String {
    let mut by: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for r in results {
        if let (Verdict::Pass, Some(reason)) = (&r.result.verdict, &r.result.override_reason) {
            by.entry((
                r.result.case.clone(),
                r.result.override_selector.clone().unwrap_or_default(),
                reason.clone(),
            ))
            .or_default()
            .push(r.backend());
        }
    }
    let mut out = String::new();
    for ((case, sel, reason), b) in by {
        let _ = writeln!(out, "{case}: {sel} — {reason} [{}]", b.join(", "));
    }
    out
}

/// Failures and errors with what was expected and what happened.
pub fn failures(results: &[MatrixResult]) -> String {
    let mut out = String::new();
    for r in results {
        let why = match &r.result.verdict {
            Verdict::Pass => continue,
            Verdict::Fail(w) | Verdict::Error(w) => w,
        };
        let _ = writeln!(out, "{} [{}]: {why}", r.result.case, r.backend());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn config_parses_and_orders_backends() {
        let c: super::MatrixConfig =
            toml::from_str("servers = [\"a\", \"b\"]\nclients = [\"x\", \"y\"]").unwrap();
        assert_eq!(super::backends(&c), ["x@a", "y@a", "x@b", "y@b"]);
    }

    /// Builds outside the matrix are facts for lint only: they add no backend to run.
    #[test]
    fn outside_builds_are_not_run() {
        let c: super::MatrixConfig = toml::from_str(
            "servers = [\"a\"]\nclients = [\"x\"]\n[[outside]]\nbuild = \"local\"\n\
             pg_version = \"15devel\"\ntls_library = \"nss\"\ntls_version = \"3.87.1\"\n\
             clients = [\"x\", \"z\"]",
        )
        .unwrap();
        assert_eq!(super::backends(&c), ["x@a"]);
        assert_eq!(c.outside[0].tls_library, "nss");
        assert!(toml::from_str::<super::MatrixConfig>(
            "servers = []\nclients = []\n[[outside]]\nbuild = \"b\"\nfoo = 1"
        )
        .is_err());
    }

    #[test]
    fn only_limits_clients_to_some_servers_and_names_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.toml");
        let base = "servers = [\"a\", \"b\"]\nclients = [\"x\", \"y\"]\n";
        std::fs::write(
            &path,
            format!("{base}[[only]]\nclients = [\"y\"]\nservers = [\"b\"]\n"),
        )
        .unwrap();
        let c = super::MatrixConfig::load(&path).unwrap();
        assert_eq!(c.clients_for("a"), ["x"]);
        assert_eq!(c.clients_for("b"), ["x", "y"]);
        assert_eq!(super::backends(&c), ["x@a", "x@b", "y@b"]);
        std::fs::write(
            &path,
            format!("{base}[[only]]\nclients = [\"z\"]\nservers = [\"b\"]\n"),
        )
        .unwrap();
        let err = super::MatrixConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("client \"z\" is not in `clients`"), "{err}");
    }
}

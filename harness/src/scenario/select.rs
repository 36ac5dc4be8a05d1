//! Selectors over detected facts: which backends an override applies to.

use super::{ClientSelector, Selector, ServerSelector};
use crate::facts::{compare_versions, BackendFacts};
use serde::Deserialize;
use std::cmp::Ordering;
use std::fmt;

/// One condition on a fact: equality, or a version comparison (`<16`, `>=3.0`, `!=nss`).
/// A text ending in `*` matches every fact it starts (`nss:*`, `libpq@*`). An array means
/// any of its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher(Vec<Condition>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    op: Op,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Condition {
    fn parse(text: &str) -> Result<Self, String> {
        let (op, rest) = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("!=", Op::Ne),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("=", Op::Eq),
        ]
        .iter()
        .find_map(|(p, op)| text.strip_prefix(p).map(|r| (*op, r)))
        .unwrap_or((Op::Eq, text));
        let value = rest.trim().to_string();
        if value.is_empty() {
            return Err(format!("empty value in matcher {text:?}"));
        }
        Ok(Condition { op, value })
    }

    /// Ordering comparisons and equality on `*_version` facts compare versions; equality on
    /// other facts compares text.
    fn holds(&self, fact: &str, is_version: bool) -> bool {
        // A stack without the component (no libpq in native-tls) has no version: it is not
        // "libpq < 16", so only `!=` holds for it.
        if is_version && fact.is_empty() {
            return self.op == Op::Ne;
        }
        let prefix = self.value.strip_suffix('*').filter(|_| !is_version);
        let ord = if let Some(prefix) = prefix.filter(|_| matches!(self.op, Op::Eq | Op::Ne)) {
            if fact.starts_with(prefix) {
                Ordering::Equal
            } else {
                Ordering::Less
            }
        } else if is_version {
            compare_versions(fact, &self.value)
        } else if fact == self.value {
            Ordering::Equal
        } else {
            fact.cmp(&self.value)
        };
        match self.op {
            Op::Eq => ord == Ordering::Equal,
            Op::Ne => ord != Ordering::Equal,
            Op::Lt => ord == Ordering::Less,
            Op::Le => ord != Ordering::Greater,
            Op::Gt => ord == Ordering::Greater,
            Op::Ge => ord != Ordering::Less,
        }
    }
}

impl Matcher {
    fn matches(&self, fact: &str, is_version: bool) -> bool {
        self.0.iter().any(|c| c.holds(fact, is_version))
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|c| {
                let op = match c.op {
                    Op::Eq => "",
                    Op::Ne => "!=",
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    Op::Ge => ">=",
                };
                format!("{op}{}", c.value)
            })
            .collect();
        f.write_str(&parts.join("|"))
    }
}

impl<'de> Deserialize<'de> for Matcher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Any(Vec<String>),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a matcher: a string like \"nss\" or \"<16\", or an array of them",
            )
        })?;
        let texts = match raw {
            Raw::One(s) => vec![s],
            Raw::Any(v) if v.is_empty() => {
                return Err(serde::de::Error::custom("empty matcher array"))
            }
            Raw::Any(v) => v,
        };
        texts
            .iter()
            .map(|t| Condition::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map(Matcher)
            .map_err(serde::de::Error::custom)
    }
}

impl Selector {
    /// Every (fact path, matcher) pair the selector names.
    pub fn conditions(&self) -> Vec<(&'static str, &Matcher)> {
        let mut out = Vec::new();
        if let Some(ClientSelector {
            name,
            tls_library,
            tls_version,
            libpq_version,
        }) = &self.client
        {
            out.extend(name.as_ref().map(|m| ("client.name", m)));
            out.extend(tls_library.as_ref().map(|m| ("client.tls_library", m)));
            out.extend(tls_version.as_ref().map(|m| ("client.tls_version", m)));
            out.extend(libpq_version.as_ref().map(|m| ("client.libpq_version", m)));
        }
        if let Some(ServerSelector {
            build,
            runtime,
            pg_version,
            tls_library,
            tls_version,
        }) = &self.server
        {
            out.extend(build.as_ref().map(|m| ("server.build", m)));
            out.extend(runtime.as_ref().map(|m| ("server.runtime", m)));
            out.extend(pg_version.as_ref().map(|m| ("server.pg_version", m)));
            out.extend(tls_library.as_ref().map(|m| ("server.tls_library", m)));
            out.extend(tls_version.as_ref().map(|m| ("server.tls_version", m)));
        }
        out
    }

    /// Refuses a version fact compared with something that is not a version (`">=abc"` would
    /// otherwise compare as 0 and match everything).
    pub fn check_versions(&self) -> Result<(), String> {
        let is_version = |v: &str| {
            v.starts_with(|c: char| c.is_ascii_digit())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-+~".contains(c))
        };
        for (path, m) in self.conditions() {
            if !path.ends_with("_version") {
                continue;
            }
            if let Some(c) = m.0.iter().find(|c| !is_version(&c.value)) {
                return Err(format!(
                    "{path} = {:?}: {:?} is not a version; expected digits and dots, like \"16\", \">=3.0\" or \"1.1.1w\"",
                    m.to_string(),
                    c.value
                ));
            }
        }
        Ok(())
    }

    /// True when every named fact matches. A fact that is empty (not applicable to this
    /// backend, like libpq_version for a pure-Rust stack) never matches.
    pub fn matches(&self, facts: &BackendFacts) -> bool {
        self.conditions().iter().all(|(path, m)| {
            let value = facts.get(path).unwrap_or("");
            !value.is_empty() && m.matches(value, path.ends_with("_version"))
        })
    }

    /// Human-readable form for reports: `client.name=native-tls server.pg_version=<16`.
    pub fn describe(&self) -> String {
        self.conditions()
            .iter()
            .map(|(p, m)| format!("{p}={m}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl schemars::JsonSchema for Matcher {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Matcher".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A fact matcher: \"nss\", \"!=libpq\", \"<16\", \">=3.0\", a prefix ending in * (\"nss:*\"), or an array meaning any of them.",
            "anyOf": [
                { "type": "string" },
                { "type": "array", "items": { "type": "string" }, "minItems": 1 }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{ClientFacts, ServerFacts};

    fn facts(client: &str, pg: &str) -> BackendFacts {
        BackendFacts {
            server: ServerFacts {
                build: "local".into(),
                runtime: "local".into(),
                pg_version: pg.into(),
                tls_library: "openssl".into(),
                tls_version: "3.0.17".into(),
            },
            client: ClientFacts {
                name: client.into(),
                tls_library: "openssl".into(),
                tls_version: "3.0.17".into(),
                libpq_version: String::new(),
            },
        }
    }

    fn selector(toml_text: &str) -> Selector {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn equality_and_version_ranges() {
        let s = selector("client.name = \"native-tls\"\nserver.pg_version = \"<16\"");
        assert!(s.matches(&facts("native-tls", "15.18")));
        assert!(!s.matches(&facts("native-tls", "16.1")));
        assert!(!s.matches(&facts("libpq", "15.18")));
    }

    #[test]
    fn any_of_and_not_equal() {
        let s = selector("client.name = [\"nss\", \"rustls\"]");
        assert!(s.matches(&facts("rustls", "15")));
        assert!(!s.matches(&facts("libpq", "15")));
        let s = selector("client.name = \"!=libpq\"");
        assert!(s.matches(&facts("rustls", "15")));
    }

    #[test]
    fn a_trailing_star_matches_a_prefix() {
        let s = selector("client.name = [\"nss\", \"nss:*\"]");
        assert!(s.matches(&facts("nss", "15")));
        assert!(s.matches(&facts("nss:pg13-openssl1.1", "15")));
        assert!(!s.matches(&facts("nssx", "15")));
        assert!(!s.matches(&facts("libpq@/opt/nss", "15")));
        let s = selector("client.name = \"!=libpq@*\"");
        assert!(!s.matches(&facts("libpq@/opt/nss", "15")));
        assert!(s.matches(&facts("libpq", "15")));
    }

    #[test]
    fn empty_fact_never_matches() {
        let s = selector("client.libpq_version = \">=1\"");
        assert!(!s.matches(&facts("native-tls", "15")));
    }

    #[test]
    fn unknown_fact_is_rejected() {
        let err = toml::from_str::<Selector>("client.colour = \"red\"").unwrap_err();
        assert!(err.to_string().contains("expected one of"), "{err}");
    }
}

//! Facts detected at run time about a server build and a client stack. Overrides select on
//! these; nothing here is typed by hand.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// What was detected about a running server build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerFacts {
    /// The server build's name as given on the command line (`local`, `pg15-openssl3.0`, ...).
    pub build: String,
    /// The runtime that started it (`local`, `container`).
    pub runtime: String,
    /// `server_version` as reported by the server, e.g. `15.18`.
    pub pg_version: String,
    /// TLS library the server is linked against (`openssl`, `nss`, `none`).
    pub tls_library: String,
    /// That library's version, e.g. `3.0.17`.
    pub tls_version: String,
}

/// What was detected about a client stack.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientFacts {
    /// The stack's name (`libpq`, `native-tls`, ...).
    pub name: String,
    /// TLS library doing the handshake (`openssl`, `rustls`, `nss`).
    pub tls_library: String,
    /// That library's version.
    pub tls_version: String,
    /// libpq's version where libpq is involved, else empty.
    pub libpq_version: String,
}

/// The facts one (server build, client stack) pair presents to selectors.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackendFacts {
    pub server: ServerFacts,
    pub client: ClientFacts,
}

impl BackendFacts {
    /// Short label for reports: `client@server`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.client.name, self.server.build)
    }

    /// Looks a fact up by its selector path (`client.name`, `server.pg_version`, ...).
    pub fn get(&self, path: &str) -> Option<&str> {
        Some(match path {
            "server.build" => &self.server.build,
            "server.runtime" => &self.server.runtime,
            "server.pg_version" => &self.server.pg_version,
            "server.tls_library" => &self.server.tls_library,
            "server.tls_version" => &self.server.tls_version,
            "client.name" => &self.client.name,
            "client.tls_library" => &self.client.tls_library,
            "client.tls_version" => &self.client.tls_version,
            "client.libpq_version" => &self.client.libpq_version,
            _ => return None,
        })
    }
}

/// Every fact path a selector may name.
pub const FACT_PATHS: &[&str] = &[
    "server.build",
    "server.runtime",
    "server.pg_version",
    "server.tls_library",
    "server.tls_version",
    "client.name",
    "client.tls_library",
    "client.tls_version",
    "client.libpq_version",
];

/// Compares dotted versions numerically (`15.18 < 16`, `3.0.17 >= 3`, `1.1.1w > 1.1.1`).
/// Components missing on one side count as equal, so `15.18` matches `= 15`.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<(u64, String)> {
        s.split(['.', '-', ' '])
            .map(|p| {
                let digits: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
                let rest = p[digits.len()..].to_string();
                (digits.parse().unwrap_or(0), rest)
            })
            .collect()
    };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(pb.iter()) {
        match x.0.cmp(&y.0).then_with(|| x.1.cmp(&y.1)) {
            Ordering::Equal => continue,
            other => return other,
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("15.18", "16"), Ordering::Less);
        assert_eq!(compare_versions("9.6", "10"), Ordering::Less);
        assert_eq!(compare_versions("3.0.17", "3"), Ordering::Equal);
        assert_eq!(compare_versions("1.1.1w", "1.1.1"), Ordering::Greater);
        assert_eq!(compare_versions("17.2", "17.10"), Ordering::Less);
    }
}

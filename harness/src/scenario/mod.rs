//! The scenario format: one server configuration and the connection attempts (cases) run
//! against it, with one canonical expectation per case and per-backend overrides.
//! `docs/scenario-format.md` describes the same types for authors.

mod group;
pub mod load;
mod select;

pub use group::Group;

pub use load::{line_of, load_scenarios, parse_toml, Case, LoadError, Scenario};
pub use select::Matcher;

use crate::error_class::ErrorClass;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use toml::Spanned;

/// One scenario file, as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// What this scenario checks, in a sentence or two.
    pub doc: String,
    /// The behaviour group its cases show (a row of docs/drivers.md); default `other`.
    pub group: Option<Group>,
    /// PKI spec to materialise, relative to this file; default `../certs/pki.toml`.
    pub pki: Option<String>,
    /// The server configuration every case of this file runs against.
    pub server: ServerConfig,
    /// Connection options merged under every case's own.
    #[serde(default)]
    pub defaults: Defaults,
    /// The configuration must make the server refuse to start; the file then has no cases.
    pub startup: Option<ServerEventExpect>,
    /// A reload into a changed configuration, made after the server started and before the
    /// cases run. With `fails = true` the server must keep serving the old configuration,
    /// which the cases then show.
    pub reload: Option<ReloadDef>,
    /// The connection attempts.
    #[serde(rename = "case", default)]
    pub cases: Vec<CaseDef>,
}

/// What the server itself must do with a configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerEventExpect {
    /// Must the server refuse it? (Only refusals are asserted; acceptance shows in the cases.)
    pub fails: bool,
    /// Text its log must contain, one substring per entry.
    #[serde(default)]
    pub log: Vec<String>,
    /// Builds that refuse for another reason, with the log text they write instead. The first
    /// that matches wins.
    #[serde(default, rename = "override")]
    pub overrides: Vec<ServerEventOverride>,
}

/// A build whose refusal reads differently (e.g. it lacks the setting altogether).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerEventOverride {
    /// Which builds (server facts only).
    pub when: Selector,
    /// Text their log must contain instead.
    #[serde(default)]
    pub log: Vec<String>,
    /// `false`: these builds accept the configuration (start, or reload) instead of refusing.
    pub fails: Option<bool>,
    /// Why they differ. Mandatory.
    pub reason: String,
}

impl ServerEventExpect {
    /// The log texts `server` must write, and the override that chose them.
    pub fn log_for(
        &self,
        server: Option<&crate::facts::ServerFacts>,
    ) -> (&[String], Option<&ServerEventOverride>) {
        let chosen = server.and_then(|s| {
            let facts = crate::facts::BackendFacts {
                server: s.clone(),
                client: crate::facts::ClientFacts {
                    name: "server".into(),
                    ..Default::default()
                },
            };
            self.overrides.iter().find(|o| o.when.matches(&facts))
        });
        match chosen {
            Some(o) => (&o.log, Some(o)),
            None => (&self.log, None),
        }
    }
}

/// A configuration change applied with a reload.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReloadDef {
    /// PKI file for `ssl_cert_file` after the reload.
    #[schemars(with = "Option<String>")]
    pub cert: Option<Spanned<String>>,
    /// PKI file for `ssl_key_file` after the reload.
    #[schemars(with = "Option<String>")]
    pub key: Option<Spanned<String>>,
    /// Settings changed by the reload (the same are refused as in `[server] settings`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub settings: BTreeMap<String, Spanned<String>>,
    /// Whether the server must reject the reload, and what its log must say.
    #[serde(flatten)]
    pub expect: ServerEventExpect,
}

/// Options every case starts from.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// libpq connection keywords and values.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub conn: BTreeMap<String, Spanned<String>>,
}

/// The server side of a scenario.
#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `ssl = on|off` in postgresql.conf.
    #[serde(default = "yes")]
    pub ssl: bool,
    /// PKI file for `ssl_cert_file`.
    #[schemars(with = "Option<String>")]
    pub cert: Option<Spanned<String>>,
    /// PKI file for `ssl_key_file`.
    #[schemars(with = "Option<String>")]
    pub key: Option<Spanned<String>>,
    /// PKI file for `ssl_ca_file` (trust anchors for client certificates).
    #[schemars(with = "Option<String>")]
    pub ca: Option<Spanned<String>>,
    /// PKI file for `ssl_crl_file`.
    #[schemars(with = "Option<String>")]
    pub crl: Option<Spanned<String>>,
    /// PKI directory for `ssl_crl_dir` (OpenSSL hashed layout).
    #[schemars(with = "Option<String>")]
    pub crl_dir: Option<Spanned<String>>,
    /// Also listen on ::1, for cases that connect over IPv6.
    #[serde(default)]
    pub ipv6: bool,
    /// Any other postgresql.conf settings, written verbatim (values quoted for you). Settings
    /// the harness owns (`listen_addresses`, `port`, sockets, file locations, `include*`, the
    /// `ssl*` file settings that `cert`/`key`/`ca`/`crl`/`crl_dir` set) are refused.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub settings: BTreeMap<String, Spanned<String>>,
    /// pg_hba.conf lines, in order. Connections from the harness's admin socket are always allowed.
    pub hba: Vec<String>,
    /// pg_ident.conf lines.
    #[serde(default)]
    pub ident: Vec<String>,
    /// Roles to create before the cases run.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// Databases to create before the cases run.
    #[serde(default)]
    pub databases: Vec<String>,
}

fn yes() -> bool {
    true
}

/// A role the scenario needs.
#[derive(Debug, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Role name (may contain any characters; it is quoted).
    pub name: String,
    /// Password, stored with the server's `password_encryption`.
    pub password: Option<String>,
}

/// One connection attempt.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseDef {
    /// Identifier, unique in its file; the full id is `<file stem>/<id>`.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// What the case shows.
    pub doc: Option<String>,
    /// The behaviour group, when it is not the file's.
    pub group: Option<Group>,
    /// libpq connection keywords and values, over the file's defaults. File-valued keywords
    /// (sslcert, sslkey, sslrootcert, sslcrl, sslcrldir) name PKI files; `@missing` names a
    /// file that does not exist.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub conn: BTreeMap<String, Spanned<String>>,
    /// Environment variables the client process sees during this attempt, each naming a PKI
    /// file: `SSL_CERT_FILE`, `SSL_CERT_DIR` (what `sslrootcert=system` falls back on).
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub env: BTreeMap<String, Spanned<String>>,
    /// The canonical expected outcome.
    pub expect: Expect,
    /// Text the server log must contain among the lines written during this attempt (the
    /// server's own account: authenticated identity, rejection reason); a leading `!` means
    /// the text must not appear.
    #[serde(default)]
    pub server_log: Vec<String>,
    /// Per-backend divergences, each with its reason. The first that matches wins.
    #[serde(rename = "override", default)]
    pub overrides: Vec<Override>,
}

/// An expected outcome.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Expect {
    /// The connection succeeds and a query runs; listed session properties must hold.
    Connected(SessionExpect),
    /// The attempt fails with this error class.
    Failed(ErrorClass),
    /// A server-side check only: the server accepts the configuration (a build declared by a
    /// `[startup]`/`[reload]` override with `fails = false`). Refused in cases.
    Accepted,
}

/// Properties of an established session, as the server recorded them (pg_stat_ssl).
/// Unset properties are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionExpect {
    /// Whether the session is encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl: Option<bool>,
    /// Negotiated protocol, e.g. `TLSv1.3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// Negotiated cipher, e.g. `TLS_AES_256_GCM_SHA384`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    /// Serial number of the client certificate, in decimal, as the server saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_serial: Option<String>,
    /// Client certificate DN as the server saw it; empty string for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_dn: Option<String>,
    /// Issuer DN of the client certificate as the server saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_dn: Option<String>,
    /// The session's user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// SQL run in the same session after connecting (sslinfo functions, settings), each with
    /// the result it must give.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<QueryExpect>,
}

/// One SQL statement run in the connected session and what it must give: the first column
/// of its first row as text (`returns`), SQL NULL or no row (`null = true`), or an error
/// with this SQLSTATE (`error`). Exactly one of the three.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
// Written back (results JSON) in the form it is read, so results files read back.
#[serde(
    deny_unknown_fields,
    try_from = "QueryExpectDef",
    into = "QueryExpectDef"
)]
pub struct QueryExpect {
    pub sql: String,
    pub result: QueryResult,
}

/// What a per-case query gave, in the form the server-side wrapper reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueryResult {
    /// The first column of the first row, cast to text (booleans read `true`/`false`).
    Returns(String),
    /// SQL NULL, or no row at all.
    Null,
    /// The statement raised an error with this SQLSTATE.
    Error(String),
}

impl QueryResult {
    /// The text `pgssl_try()` returns for this result (the inverse of [`Self::from_wire`]).
    pub fn to_wire(&self) -> String {
        match self {
            QueryResult::Returns(v) => format!("value {v}"),
            QueryResult::Null => "null".into(),
            QueryResult::Error(code) => format!("error {code}"),
        }
    }

    /// Parses the text `pgssl_try()` returns: `value <text>`, `null` or `error <sqlstate>`.
    pub fn from_wire(s: &str) -> Option<QueryResult> {
        if let Some(v) = s.strip_prefix("value ") {
            Some(QueryResult::Returns(v.to_string()))
        } else if let Some(code) = s.strip_prefix("error ") {
            Some(QueryResult::Error(code.to_string()))
        } else if s == "null" {
            Some(QueryResult::Null)
        } else {
            None
        }
    }
}

impl std::fmt::Display for QueryResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryResult::Returns(v) => write!(f, "{v:?}"),
            QueryResult::Null => f.write_str("NULL"),
            QueryResult::Error(code) => write!(f, "error {code}"),
        }
    }
}

/// A query expectation as written.
#[derive(Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct QueryExpectDef {
    /// One SQL statement; its first column of its first row is compared.
    sql: String,
    /// The value, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    returns: Option<String>,
    /// `true`: the value is SQL NULL (or there is no row).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    null: bool,
    /// The SQLSTATE of the error the statement must raise, e.g. `22023`.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl From<QueryExpect> for QueryExpectDef {
    fn from(q: QueryExpect) -> Self {
        let (returns, null, error) = match q.result {
            QueryResult::Returns(v) => (Some(v), false, None),
            QueryResult::Null => (None, true, None),
            QueryResult::Error(code) => (None, false, Some(code)),
        };
        QueryExpectDef {
            sql: q.sql,
            returns,
            null,
            error,
        }
    }
}

impl TryFrom<QueryExpectDef> for QueryExpect {
    type Error = String;
    fn try_from(d: QueryExpectDef) -> Result<Self, String> {
        if d.sql.contains(QUERY_QUOTE) {
            return Err(format!("query sql must not contain {QUERY_QUOTE}"));
        }
        let result = match (d.returns, d.null, d.error) {
            (Some(v), false, None) => QueryResult::Returns(v),
            (None, true, None) => QueryResult::Null,
            (None, false, Some(code)) => QueryResult::Error(code),
            _ => {
                return Err(format!(
                    "query {:?}: expected exactly one of `returns`, `null = true`, `error`",
                    d.sql
                ))
            }
        };
        Ok(QueryExpect { sql: d.sql, result })
    }
}

/// Dollar quote around per-case SQL inside the session query.
pub const QUERY_QUOTE: &str = "$pgssl_q$";

/// A declared divergence for the backends its selector matches.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Which backends: every listed fact must match.
    #[schemars(with = "Selector")]
    pub when: Spanned<Selector>,
    /// What those backends do instead.
    pub expect: Expect,
    /// Server log text those backends produce instead of the case's `server_log`.
    pub server_log: Option<Vec<String>>,
    /// Text these backends' error message must contain, where the wording is itself the
    /// behaviour (e.g. libpq naming the other certificate names). Only overrides check
    /// wording: the canonical expectation is a class, whatever the stack says.
    #[serde(default)]
    pub message: Vec<String>,
    /// Why they differ. Mandatory.
    pub reason: String,
}

/// A selector over detected facts. Values are matchers: `"nss"`, `"<16"`, `[">=3", "<3.2"]`.
#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Facts about the client stack.
    pub client: Option<ClientSelector>,
    /// Facts about the server build.
    pub server: Option<ServerSelector>,
}

/// Client facts a selector may name.
#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientSelector {
    pub name: Option<Matcher>,
    pub tls_library: Option<Matcher>,
    pub tls_version: Option<Matcher>,
    pub libpq_version: Option<Matcher>,
}

/// Server facts a selector may name.
#[derive(Debug, Default, Deserialize, Clone, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerSelector {
    pub build: Option<Matcher>,
    pub runtime: Option<Matcher>,
    pub pg_version: Option<Matcher>,
    pub tls_library: Option<Matcher>,
    pub tls_version: Option<Matcher>,
}

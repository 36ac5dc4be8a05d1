//! The scenario format: one server configuration and the connection attempts (cases) run
//! against it, with one canonical expectation per case and per-backend overrides.
//! `docs/scenario-format.md` describes the same types for authors.

pub mod load;
mod select;

pub use load::{line_of, load_scenarios, parse_toml, Case, LoadError, Scenario};
pub use select::Matcher;

use crate::error_class::ErrorClass;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use toml::Spanned;

/// One scenario file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// What this scenario checks, in a sentence or two.
    pub doc: String,
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEventExpect {
    /// Must the server refuse it? (Only refusals are asserted; acceptance shows in the cases.)
    pub fails: bool,
    /// Text its log must contain, one substring per entry.
    #[serde(default)]
    pub log: Vec<String>,
}

/// A configuration change applied with a reload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadDef {
    /// PKI file for `ssl_cert_file` after the reload.
    pub cert: Option<Spanned<String>>,
    /// PKI file for `ssl_key_file` after the reload.
    pub key: Option<Spanned<String>>,
    /// Settings changed by the reload.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Whether the server must reject the reload, and what its log must say.
    #[serde(flatten)]
    pub expect: ServerEventExpect,
}

/// Options every case starts from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// libpq connection keywords and values.
    #[serde(default)]
    pub conn: BTreeMap<String, Spanned<String>>,
}

/// The server side of a scenario.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// `ssl = on|off` in postgresql.conf.
    #[serde(default = "yes")]
    pub ssl: bool,
    /// PKI file for `ssl_cert_file`.
    pub cert: Option<Spanned<String>>,
    /// PKI file for `ssl_key_file`.
    pub key: Option<Spanned<String>>,
    /// PKI file for `ssl_ca_file` (trust anchors for client certificates).
    pub ca: Option<Spanned<String>>,
    /// PKI file for `ssl_crl_file`.
    pub crl: Option<Spanned<String>>,
    /// PKI directory for `ssl_crl_dir` (OpenSSL hashed layout).
    pub crl_dir: Option<Spanned<String>>,
    /// Also listen on ::1, for cases that connect over IPv6.
    #[serde(default)]
    pub ipv6: bool,
    /// Any other postgresql.conf settings, written verbatim (values quoted for you).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
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
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Role name (may contain any characters; it is quoted).
    pub name: String,
    /// Password, stored with the server's `password_encryption`.
    pub password: Option<String>,
}

/// One connection attempt.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseDef {
    /// Identifier, unique in its file; the full id is `<file stem>/<id>`.
    pub id: Spanned<String>,
    /// What the case shows.
    pub doc: Option<String>,
    /// libpq connection keywords and values, over the file's defaults. File-valued keywords
    /// (sslcert, sslkey, sslrootcert, sslcrl, sslcrldir) name PKI files; `@missing` names a
    /// file that does not exist.
    #[serde(default)]
    pub conn: BTreeMap<String, Spanned<String>>,
    /// The canonical expected outcome.
    pub expect: Expect,
    /// Text the server log must contain among the lines written during this attempt (the
    /// server's own account: authenticated identity, rejection reason).
    #[serde(default)]
    pub server_log: Vec<String>,
    /// Per-backend divergences, each with its reason. The first that matches wins.
    #[serde(rename = "override", default)]
    pub overrides: Vec<Override>,
}

/// An expected outcome.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Expect {
    /// The connection succeeds and a query runs; listed session properties must hold.
    Connected(SessionExpect),
    /// The attempt fails with this error class.
    Failed(ErrorClass),
}

/// Properties of an established session, as the server recorded them (pg_stat_ssl).
/// Unset properties are not checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionExpect {
    /// Whether the session is encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl: Option<bool>,
    /// Negotiated protocol, e.g. `TLSv1.3`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// Client certificate DN as the server saw it; empty string for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_dn: Option<String>,
    /// Issuer DN of the client certificate as the server saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_dn: Option<String>,
    /// The session's user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// A declared divergence for the backends its selector matches.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Which backends: every listed fact must match.
    pub when: Spanned<Selector>,
    /// What those backends do instead.
    pub expect: Expect,
    /// Server log text those backends produce instead of the case's `server_log`.
    pub server_log: Option<Vec<String>>,
    /// Why they differ. Mandatory.
    pub reason: String,
}

/// A selector over detected facts. Values are matchers: `"nss"`, `"<16"`, `[">=3", "<3.2"]`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// Facts about the client stack.
    pub client: Option<ClientSelector>,
    /// Facts about the server build.
    pub server: Option<ServerSelector>,
}

/// Client facts a selector may name.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ClientSelector {
    pub name: Option<Matcher>,
    pub tls_library: Option<Matcher>,
    pub tls_version: Option<Matcher>,
    pub libpq_version: Option<Matcher>,
}

/// Server facts a selector may name.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServerSelector {
    pub build: Option<Matcher>,
    pub runtime: Option<Matcher>,
    pub pg_version: Option<Matcher>,
    pub tls_library: Option<Matcher>,
    pub tls_version: Option<Matcher>,
}

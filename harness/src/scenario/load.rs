//! Loading and validating scenario files. Everything that can be wrong with a file is found
//! here, before any server starts, and reported with the file, line and what was expected.

use super::{Expect, ScenarioFile, Selector, ServerConfig};
use crate::facts::BackendFacts;
use crate::pki::PkiSpec;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// libpq connection keywords up to libpq 18. Cases may use ones newer than the local libpq:
/// an override then asserts what the older client does with them.
pub const CONN_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "require_auth",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "sslnegotiation",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslcertmode",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "sslkeylogfile",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "min_protocol_version",
    "max_protocol_version",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    // From PostgreSQL's proposed NSS support, in no released libpq: the NSS database to use
    // as it is (a PKI `[nss_db.*]`), instead of one built from the other options.
    "ssldatabase",
];

/// Keywords whose values name PKI files (or `@missing`).
pub const FILE_KEYWORDS: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "ssldatabase",
];

/// Special value of a file keyword: a path that does not exist.
pub const MISSING_FILE: &str = "@missing";

/// `host = "@socket"`: connect over the server's Unix socket instead of TCP.
pub const SOCKET_HOST: &str = "@socket";

/// Environment variables a case may set for the client; each names a PKI file.
pub const ENV_KEYS: &[&str] = &["SSL_CERT_FILE", "SSL_CERT_DIR"];

/// postgresql.conf settings the harness owns: where the server listens and who can reach it
/// (the admin socket), where its configuration and files live, and the SSL file settings the
/// core derives from `[server]` cert/key/ca/crl/crl_dir (PKI names, never paths).
pub const HARNESS_SETTINGS: &[&str] = &[
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "external_pid_file",
    "include",
    "include_if_exists",
    "include_dir",
    "ssl",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_ca_file",
    "ssl_crl_file",
    "ssl_crl_dir",
    "ssl_database",
    "lc_messages",
    "log_line_prefix",
];

/// `expect.accepted` belongs to server-side checks, whose overrides say it with `fails = false`.
const ACCEPTED_IN_CASE: &str =
    "a case expects `connected` or `failed`; `accepted` is for [startup]/[reload] overrides (`fails = false`)";

/// A validated scenario, ready to run.
#[derive(Debug)]
pub struct Scenario {
    /// The file stem; prefix of every case id.
    pub name: String,
    pub path: PathBuf,
    pub doc: String,
    /// The PKI spec its file names refer to.
    pub pki: PkiSpec,
    pub server: ServerConfig,
    pub startup: Option<super::ServerEventExpect>,
    pub reload: Option<super::ReloadDef>,
    pub cases: Vec<Case>,
}

impl Scenario {
    /// Whether any case checks the server log: such scenarios run one attempt at a time, so
    /// the lines written during an attempt are that attempt's.
    pub fn checks_server_log(&self) -> bool {
        self.cases
            .iter()
            .any(|c| !c.server_log.is_empty() || c.overrides.iter().any(|o| o.server_log.is_some()))
    }
}

/// A validated case with its defaults merged in.
#[derive(Debug)]
pub struct Case {
    /// `<scenario>/<id>`.
    pub id: String,
    pub doc: Option<String>,
    /// The behaviour group (the case's, else the file's, else `other`).
    pub group: super::Group,
    pub line: usize,
    /// Connection keywords; file keywords still hold PKI names.
    pub conn: BTreeMap<String, String>,
    /// Client environment variables, values still PKI names.
    pub env: BTreeMap<String, String>,
    pub expect: Expect,
    pub server_log: Vec<String>,
    pub overrides: Vec<CaseOverride>,
}

#[derive(Debug)]
pub struct CaseOverride {
    pub selector: Selector,
    pub expect: Expect,
    pub server_log: Option<Vec<String>>,
    pub message: Vec<String>,
    pub reason: String,
    pub line: usize,
}

/// What a case expects of one backend, and where that expectation came from.
#[derive(Debug, Clone)]
pub struct Expectation<'a> {
    pub expect: &'a Expect,
    /// Server log substrings to find among the attempt's lines.
    pub server_log: &'a [String],
    /// Text the client's error message must contain (from an override).
    pub message: &'a [String],
    /// Set when an override replaced the canonical expectation.
    pub overridden: Option<&'a CaseOverride>,
}

impl Case {
    /// The canonical expectation, or the first override whose selector matches.
    pub fn expectation_for(&self, facts: &BackendFacts) -> Expectation<'_> {
        match self.overrides.iter().find(|o| o.selector.matches(facts)) {
            Some(o) => Expectation {
                expect: &o.expect,
                server_log: o.server_log.as_deref().unwrap_or(&self.server_log),
                message: &o.message,
                overridden: Some(o),
            },
            None => Expectation {
                expect: &self.expect,
                server_log: &self.server_log,
                message: &[],
                overridden: None,
            },
        }
    }
}

/// Bad input, located.
#[derive(Debug)]
pub struct LoadError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for LoadError {}

/// Line number (1-based) of a byte offset.
pub fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

/// Parses TOML into `T`, turning a serde error into a located [`LoadError`].
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    source: &str,
) -> Result<T, LoadError> {
    toml::from_str(source).map_err(|e| LoadError {
        file: path.to_path_buf(),
        line: e.span().map(|s| line_of(source, s.start)),
        message: e.message().trim().to_string(),
    })
}

/// Expands directories to their `*.toml` files (sorted) and loads each.
pub fn load_scenarios(paths: &[PathBuf]) -> Result<Vec<Scenario>, LoadError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| io_err(p, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(LoadError {
            file: paths.first().cloned().unwrap_or_default(),
            line: None,
            message: format!("no scenario files (*.toml) in {}", shown.join(", ")),
        });
    }
    let mut specs: BTreeMap<PathBuf, PkiSpec> = BTreeMap::new();
    let mut out: Vec<Scenario> = Vec::new();
    for file in files {
        let scenario = load_one(&file, &mut specs)?;
        if let Some(prev) = out.iter().find(|s| s.name == scenario.name) {
            return Err(LoadError {
                file,
                line: None,
                message: format!(
                    "scenario name {:?} is also used by {}",
                    scenario.name,
                    prev.path.display()
                ),
            });
        }
        out.push(scenario);
    }
    Ok(out)
}

fn io_err(path: &Path, e: std::io::Error) -> LoadError {
    LoadError {
        file: path.to_path_buf(),
        line: None,
        message: format!("cannot read: {e}"),
    }
}

fn load_one(path: &Path, specs: &mut BTreeMap<PathBuf, PkiSpec>) -> Result<Scenario, LoadError> {
    let source = std::fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    let file: ScenarioFile = parse_toml(path, &source)?;
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let err = |span: std::ops::Range<usize>, message: String| LoadError {
        file: path.to_path_buf(),
        line: Some(line_of(&source, span.start)),
        message,
    };

    let dir = path.parent().unwrap_or(Path::new("."));
    let pki_path = dir.join(file.pki.as_deref().unwrap_or("../certs/pki.toml"));
    let pki_key = pki_path.canonicalize().unwrap_or(pki_path.clone());
    if !specs.contains_key(&pki_key) {
        specs.insert(pki_key.clone(), PkiSpec::load(&pki_path)?);
    }
    let pki = specs[&pki_key].clone();
    let pki_files = pki.file_names();

    let check_file = |value: &Spanned<String>, what: &str| -> Result<(), LoadError> {
        let v = value.get_ref();
        if v == MISSING_FILE || pki_files.contains(v.as_str()) {
            return Ok(());
        }
        Err(err(
            value.span(),
            format!(
                "{what} refers to {v:?}, which {} does not produce; expected one of: {}",
                pki_path.display(),
                nearest(v, &pki_files)
            ),
        ))
    };

    let server = &file.server;
    for (value, what) in [
        (&server.cert, "server.cert"),
        (&server.key, "server.key"),
        (&server.ca, "server.ca"),
        (&server.crl, "server.crl"),
        (&server.crl_dir, "server.crl_dir"),
    ] {
        if let Some(v) = value {
            check_file(v, what)?;
        }
    }
    if server.ssl && (server.cert.is_none() || server.key.is_none()) {
        return Err(LoadError {
            file: path.to_path_buf(),
            line: None,
            message: "server.ssl is on, so server.cert and server.key are required".into(),
        });
    }

    let check_settings = |settings: &BTreeMap<String, Spanned<String>>,
                          what: &str|
     -> Result<(), LoadError> {
        for (k, v) in settings {
            let plain = k.starts_with(|c: char| c.is_ascii_lowercase())
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.".contains(c));
            if !plain {
                return Err(err(
                    v.span(),
                    format!(
                        "{what}: {k:?} is not a setting name (lower-case letters, digits, _ and .)"
                    ),
                ));
            }
            if HARNESS_SETTINGS.contains(&k.as_str()) {
                return Err(err(
                        v.span(),
                        format!(
                            "{what}: {k} is set by the harness and cannot be changed by a scenario (use [server] ssl, cert, key, ca, crl, crl_dir and ipv6; harness-owned: {})",
                            HARNESS_SETTINGS.join(", ")
                        ),
                    ));
            }
        }
        Ok(())
    };
    check_settings(&server.settings, "server.settings")?;
    if let Some(reload) = &file.reload {
        check_settings(&reload.settings, "reload.settings")?;
    }

    let check_conn = |conn: &BTreeMap<String, Spanned<String>>| -> Result<(), LoadError> {
        for (k, v) in conn {
            if !CONN_KEYWORDS.contains(&k.as_str()) {
                return Err(err(
                    v.span(),
                    format!(
                        "unknown connection keyword {k:?}; expected a libpq keyword: {}",
                        CONN_KEYWORDS.join(", ")
                    ),
                ));
            }
            let is_system_root = k == "sslrootcert" && v.get_ref() == "system";
            if FILE_KEYWORDS.contains(&k.as_str()) && !is_system_root {
                check_file(v, k)?;
            }
            if v.get_ref().starts_with('@')
                && !FILE_KEYWORDS.contains(&k.as_str())
                && !(k == "host" && v.get_ref() == SOCKET_HOST)
            {
                return Err(err(
                    v.span(),
                    format!("{k} = {v:?}: `@` values are `host = \"{SOCKET_HOST}\"` and `@missing` for files", v = v.get_ref()),
                ));
            }
            if k == "hostaddr" && v.get_ref() == "::1" && !server.ipv6 {
                return Err(err(
                    v.span(),
                    "hostaddr ::1 needs `ipv6 = true` in [server]".into(),
                ));
            }
        }
        Ok(())
    };
    check_conn(&file.defaults.conn)?;

    let mut ids = BTreeSet::new();
    let mut cases = Vec::new();
    for def in file.cases {
        let id = def.id.get_ref().clone();
        let line = line_of(&source, def.id.span().start);
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
        {
            return Err(err(
                def.id.span(),
                format!("case id {id:?} must be non-empty and use only letters, digits, - _ . +"),
            ));
        }
        if !ids.insert(id.clone()) {
            return Err(err(def.id.span(), format!("duplicate case id {id:?}")));
        }
        check_conn(&def.conn)?;
        for (k, v) in &def.env {
            if !ENV_KEYS.contains(&k.as_str()) {
                return Err(err(
                    v.span(),
                    format!(
                        "unknown environment variable {k:?}; expected one of: {}",
                        ENV_KEYS.join(", ")
                    ),
                ));
            }
            check_file(v, k)?;
        }
        let mut overrides = Vec::new();
        for o in def.overrides {
            let oline = line_of(&source, o.when.span().start);
            if o.reason.trim().is_empty() {
                return Err(err(
                    o.when.span(),
                    format!("override in case {id:?} needs a reason"),
                ));
            }
            if o.when.get_ref().conditions().is_empty() {
                return Err(err(
                    o.when.span(),
                    format!("override in case {id:?} selects nothing: name at least one fact"),
                ));
            }
            o.when
                .get_ref()
                .check_versions()
                .map_err(|m| err(o.when.span(), m))?;
            if o.expect == Expect::Accepted {
                return Err(err(o.when.span(), ACCEPTED_IN_CASE.into()));
            }
            overrides.push(super::load::CaseOverride {
                selector: o.when.into_inner(),
                expect: o.expect,
                server_log: o.server_log,
                message: o.message,
                reason: o.reason,
                line: oline,
            });
        }
        let mut conn: BTreeMap<String, String> = file
            .defaults
            .conn
            .iter()
            .map(|(k, v)| (k.clone(), v.get_ref().clone()))
            .collect();
        conn.extend(def.conn.into_iter().map(|(k, v)| (k, v.into_inner())));
        if def.expect == Expect::Accepted {
            return Err(err(def.id.span(), ACCEPTED_IN_CASE.into()));
        }
        cases.push(Case {
            id: format!("{name}/{id}"),
            doc: def.doc,
            group: def.group.or(file.group).unwrap_or(super::Group::Other),
            line,
            conn,
            env: def
                .env
                .into_iter()
                .map(|(k, v)| (k, v.into_inner()))
                .collect(),
            expect: def.expect,
            server_log: def.server_log,
            overrides,
        });
    }
    let event_overrides = file
        .startup
        .iter()
        .chain(file.reload.iter().map(|r| &r.expect))
        .flat_map(|e| e.overrides.iter());
    for o in event_overrides {
        if let Err(m) = o.when.check_versions() {
            // Not spanned (flattened tables): point at the reason, which is unique text.
            let line = source
                .find(o.reason.as_str())
                .map(|at| line_of(&source, at));
            return Err(LoadError {
                file: path.to_path_buf(),
                line,
                message: m,
            });
        }
    }
    let startup_fails = file.startup.as_ref().is_some_and(|s| s.fails);
    if cases.is_empty() && !startup_fails {
        return Err(LoadError {
            file: path.to_path_buf(),
            line: None,
            message: "no [[case]] tables: a scenario needs at least one case, or `[startup] fails = true`".into(),
        });
    }
    if startup_fails && (!cases.is_empty() || file.reload.is_some()) {
        return Err(LoadError {
            file: path.to_path_buf(),
            line: None,
            message:
                "a server that must not start cannot run cases or reloads: drop them or `[startup]`"
                    .into(),
        });
    }
    if let Some(reload) = &file.reload {
        for (value, what) in [(&reload.cert, "reload.cert"), (&reload.key, "reload.key")] {
            if let Some(v) = value {
                check_file(v, what)?;
            }
        }
    }
    Ok(Scenario {
        name,
        path: path.to_path_buf(),
        doc: file.doc,
        pki,
        server: file.server,
        startup: file.startup,
        reload: file.reload,
        cases,
    })
}

/// The valid names closest to a wrong one first, so the hint stays short.
fn nearest(wrong: &str, valid: &BTreeSet<String>) -> String {
    let mut scored: Vec<(usize, &String)> = valid
        .iter()
        .map(|v| {
            let common = v
                .chars()
                .zip(wrong.chars())
                .take_while(|(a, b)| a == b)
                .count();
            (usize::MAX - common, v)
        })
        .collect();
    scored.sort();
    let shown: Vec<&str> = scored.iter().take(8).map(|(_, v)| v.as_str()).collect();
    let more = valid.len().saturating_sub(shown.len());
    if more > 0 {
        format!(
            "{} (and {more} more; `pgssl certs --out DIR` lists them all)",
            shown.join(", ")
        )
    } else {
        shown.join(", ")
    }
}

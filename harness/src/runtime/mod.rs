//! Runtimes start server builds. One trait; `local` runs the machine's own PostgreSQL.

mod admin;
mod container;
pub mod docker;
pub mod docker_exec;
mod local;
pub mod tls_library;

pub use admin::Admin;
pub use container::ContainerRuntime;
pub use local::LocalRuntime;

use crate::facts::ServerFacts;
use crate::scenario::Role;
use anyhow::Result;
use std::path::PathBuf;

/// A server configuration resolved to files and settings, ready for a runtime to apply.
#[derive(Debug, Clone, Default)]
pub struct ServerSetup {
    /// Also listen on ::1 (needs a restart to change).
    pub ipv6: bool,
    /// postgresql.conf settings, unquoted values.
    pub settings: Vec<(String, String)>,
    /// Files to place under the data directory's `pgssl/` folder: (name there, source).
    /// Settings refer to them as `pgssl/<name>`.
    pub files: Vec<(String, PathBuf)>,
    pub hba: Vec<String>,
    pub ident: Vec<String>,
    pub roles: Vec<Role>,
    pub databases: Vec<String>,
}

/// The server itself refused to start with a setup: it exited and its log says why (a FATAL
/// line). That is an outcome a scenario can expect (`server_start_failed`); every other start
/// error (files, ports, a server killed or never ready) is the harness's and exits 2.
#[derive(Debug)]
pub struct ServerRefused(pub String);

impl std::fmt::Display for ServerRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerRefused {}

/// Whether a start error is the server's own refusal ([`ServerRefused`]).
pub fn refused(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ServerRefused>().is_some()
}

/// Starts servers of one build.
pub trait Runtime: Send + Sync {
    /// Name of the server build, for reports and selectors (`server.build`).
    fn build_name(&self) -> &str;

    /// Facts about the build without starting a server (for `pgssl lint`).
    fn detect_facts(&self) -> Result<ServerFacts>;

    /// The TLS library of the build's server (`openssl`, `nss`, `none`), which decides how
    /// its TLS settings are written (`server_tls`).
    fn tls_library(&self) -> Result<String> {
        Ok(self.detect_facts()?.tls_library)
    }

    /// Starts a server with `setup` applied. Blocking.
    fn start(&self, setup: &ServerSetup) -> Result<Box<dyn Server>>;
}

/// A running server. Dropping it stops it and removes its files.
pub trait Server: Send {
    fn facts(&self) -> &ServerFacts;

    /// TCP port on 127.0.0.1 (and ::1 when asked for).
    fn port(&self) -> u16;

    /// Directory of the server's Unix socket (`.s.PGSQL.<port>`), visible on the host.
    fn socket_dir(&self) -> &std::path::Path;

    /// Whether `setup` can be applied by [`Server::reload`] rather than a new server.
    fn can_reload_into(&self, setup: &ServerSetup) -> bool;

    /// Applies `setup` with a configuration reload and waits until the server has taken it.
    fn reload(&mut self, setup: &ServerSetup) -> Result<()>;

    /// How the server ended, once it has (`None` while it runs).
    fn exited(&mut self) -> Option<String>;

    /// The server's log so far.
    fn log(&self) -> String;

    /// A reader of the log that attempts can hold while the server is used elsewhere.
    fn log_source(&self) -> LogSource;
}

/// Returns the whole server log so far.
pub type LogSource = std::sync::Arc<dyn Fn() -> String + Send + Sync>;

/// Builds a runtime from a `--server` spec.
pub fn runtime_by_spec(
    spec: &str,
    pg_bindir: Option<PathBuf>,
) -> Result<std::sync::Arc<dyn Runtime>> {
    match spec {
        "local" => Ok(std::sync::Arc::new(LocalRuntime::discover(pg_bindir)?)),
        // Any other name is a server build in a container: image pgssl/<name> (ci/images/).
        build => Ok(std::sync::Arc::new(ContainerRuntime::new(build)?)),
    }
}

//! The `container` runtime: a server build from the image `pgssl/<build>` (made offline by
//! `pgssl images build`), started through testcontainers on the host's network. PostgreSQL
//! is the container's main process (`exec` from the shell that finds its binary), so a stop
//! signal reaches it and it does not wait out Docker's grace period.
//!
//! The data directory lives in this run's directory on the host and is bind-mounted at the same
//! path, owned by the image's `postgres` uid: the harness writes configuration and PKI files
//! with the ownership and modes PostgreSQL demands, reloads through the admin socket in the
//! same directory, and the local runtime's config writer serves both runtimes.

use super::docker;
use super::local::{
    chown_tree, free_port, openssl_version_in, private_dirs, refused_by_itself, reload_config,
    start_until_ready, write_config,
};
use super::{Admin, Runtime, Server, ServerSetup};
use crate::cleanup::{self, Registration};
use crate::facts::ServerFacts;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

pub struct ContainerRuntime {
    build: String,
    image: String,
    run_dir: tempfile::TempDir,
    _run_dir_reg: Registration,
    /// initdb'ed cluster of this image, the (uid, gid) of its `postgres` user, and the
    /// parameters its server knows.
    template: OnceLock<Result<Template, String>>,
    template_lock: Mutex<()>,
    next_slot: AtomicUsize,
}

#[derive(Clone)]
struct Template {
    data: PathBuf,
    owner: (u32, u32),
    parameters: std::sync::Arc<HashSet<String>>,
}

/// The setup without the settings this server does not know whose value is empty. The core
/// resets every file setting it does not use to `''` (so a reload clears the last scenario's);
/// for a parameter the version lacks (`ssl_crl_dir` before 14) that reset would stop the
/// server from starting, while a real value for it must still reach the server and fail there.
fn known_settings(setup: &ServerSetup, parameters: &HashSet<String>) -> ServerSetup {
    let mut setup = setup.clone();
    setup
        .settings
        .retain(|(k, v)| !v.is_empty() || parameters.contains(k.as_str()));
    setup
}

impl ContainerRuntime {
    pub fn new(build: &str) -> Result<Self> {
        let image = docker::image_for(build)?;
        let (run_dir, reg) = cleanup::create_run_dir().context("creating the run directory")?;
        Ok(ContainerRuntime {
            build: build.to_string(),
            image,
            _run_dir_reg: reg,
            run_dir,
            template: OnceLock::new(),
            template_lock: Mutex::new(()),
            next_slot: AtomicUsize::new(0),
        })
    }

    fn template(&self) -> Result<Template> {
        let _guard = self
            .template_lock
            .lock()
            .map_err(|_| anyhow!("template lock poisoned"))?;
        self.template
            .get_or_init(|| self.make_template().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow!(e))
    }

    /// Runs initdb inside the image, as its `postgres` user, into a directory of this run;
    /// the owner of what initdb made is the uid every server's files must carry.
    fn make_template(&self) -> Result<Template> {
        let work = self.run_dir.path().join("initdb");
        std::fs::create_dir_all(&work)?;
        // initdb (as the image's postgres user, whose uid we do not know yet) creates data/ here.
        std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777))?;
        let data = work.join("data");
        let described = docker::probe(
            &self.image,
            &format!(
                "/usr/lib/postgresql/*/bin/initdb -U postgres -A trust -E UTF8 --locale=C --no-sync -D {} >&2 && exec /usr/lib/postgresql/*/bin/postgres --describe-config",
                data.display()
            ),
            Some("postgres"),
            &[(work.as_path(), false)],
        )
        .context("initdb in the container")?;
        let meta = std::fs::metadata(&data)?;
        std::fs::write(
            data.join("postgresql.conf"),
            std::fs::read_to_string(data.join("postgresql.conf"))?
                + "\n# pgssl writes the scenario's settings here\ninclude_if_exists = 'pgssl.conf'\n",
        )?;
        let parameters = described
            .lines()
            .filter_map(|l| l.split('\t').next())
            .map(str::to_string)
            .collect();
        Ok(Template {
            data,
            owner: (meta.uid(), meta.gid()),
            parameters: std::sync::Arc::new(parameters),
        })
    }
}

impl Runtime for ContainerRuntime {
    fn build_name(&self) -> &str {
        &self.build
    }

    /// Asks a throwaway container of the image (for `pgssl lint`, which starts no server).
    fn detect_facts(&self) -> Result<ServerFacts> {
        let out = docker::probe(
            &self.image,
            "/usr/lib/postgresql/*/bin/postgres --version; dpkg-query -W -f '${Package} ${Version}\\n' 'libssl*'",
            None,
            &[],
        )?;
        let pg_version = out
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_default()
            .to_string();
        let tls_version = out
            .lines()
            .skip(1)
            .filter(|l| !l.contains("-dev"))
            .find_map(|l| l.split_whitespace().nth(1))
            .map(|v| v.split('-').next().unwrap_or(v).to_string())
            .unwrap_or_default();
        Ok(ServerFacts {
            build: self.build.clone(),
            runtime: "container".into(),
            pg_version,
            tls_library: "openssl".into(),
            tls_version,
        })
    }

    fn start(&self, setup: &ServerSetup) -> Result<Box<dyn Server>> {
        let (mut server, admin, version) = start_until_ready(
            setup,
            || self.spawn(setup),
            |s| s.wait_ready(Duration::from_secs(60)),
        )?;
        server.admin = Some(admin);
        server.facts.pg_version = version;
        let (lib, ver) = detect_tls(&server.slot.join("data"));
        server.facts.tls_library = lib;
        server.facts.tls_version = ver;
        Ok(Box::new(server))
    }
}

impl ContainerRuntime {
    /// Makes a server directory and starts the server's container, registered for clean-up;
    /// nothing is created once clean-up has begun (see [`cleanup::creating`]).
    fn spawn(&self, setup: &ServerSetup) -> Result<ContainerServer> {
        let _creating = cleanup::creating()?;
        let Template {
            data: template,
            owner,
            parameters,
        } = self.template()?;
        let setup = &known_settings(setup, &parameters);
        let slot = self.run_dir.path().join(format!(
            "srv-{}",
            self.next_slot.fetch_add(1, Ordering::Relaxed)
        ));
        // Not create_dir_all: a run directory removed by clean-up must stay removed.
        std::fs::create_dir(&slot).with_context(|| format!("creating {}", slot.display()))?;
        let data = slot.join("data");
        let sock = slot.join("sock");
        let prepared = (|| -> Result<u16> {
            std::fs::create_dir(&sock)?;
            crate::pki::copy_tree(&template, &data)
                .with_context(|| format!("copying the cluster into {}", data.display()))?;
            private_dirs(&slot)?;
            let port = free_port(setup.ipv6)?;
            write_config(&data, &sock, port, setup)?;
            chown_tree(&slot, Some(owner))?;
            Ok(port)
        })();
        let port = match prepared {
            Ok(port) => port,
            Err(e) => {
                std::fs::remove_dir_all(&slot).ok();
                return Err(e);
            }
        };
        let req = docker::request(
            &self.image,
            vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "exec /usr/lib/postgresql/*/bin/postgres -D {}",
                    data.display()
                ),
            ],
            &[(slot.as_path(), false)],
        )
        .with_user(format!("{}:{}", owner.0, owner.1));
        let (container, registration) = match docker::start(req) {
            Ok(started) => started,
            Err(e) => {
                std::fs::remove_dir_all(&slot).ok();
                return Err(e);
            }
        };
        Ok(ContainerServer {
            container: Some(std::sync::Arc::new(container)),
            _registration: registration,
            slot,
            sock,
            port,
            ipv6: setup.ipv6,
            owner,
            parameters,
            admin: None,
            facts: ServerFacts {
                build: self.build.clone(),
                runtime: "container".into(),
                pg_version: String::new(),
                tls_library: String::new(),
                tls_version: String::new(),
            },
        })
    }
}

/// The postmaster's host pid: the process whose command line names our data directory.
fn postmaster_pid(data: &Path) -> Option<u32> {
    let needle = format!("-D\0{}", data.display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(&needle)
            .then_some(pid)
    })
}

/// TLS library and version from the libraries the postmaster has mapped, read through its
/// own root (`/proc/PID/root`): the container's libcrypto, not the host's.
fn detect_tls(data: &Path) -> (String, String) {
    let Some(pid) = postmaster_pid(data) else {
        return ("unknown".into(), String::new());
    };
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let lib_path = |needle: &str| {
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .find(|p| p.contains(needle))
            .map(str::to_string)
    };
    if lib_path("libssl.so").is_none() {
        return ("none".into(), String::new());
    }
    let version = lib_path("libcrypto.so")
        .and_then(|p| std::fs::read(format!("/proc/{pid}/root{p}")).ok())
        .and_then(|bytes| openssl_version_in(&bytes))
        .unwrap_or_else(|| "unknown".into());
    ("openssl".into(), version)
}

struct ContainerServer {
    container: Option<std::sync::Arc<ContainerAsync<GenericImage>>>,
    _registration: Registration,
    slot: PathBuf,
    sock: PathBuf,
    port: u16,
    ipv6: bool,
    owner: (u32, u32),
    parameters: std::sync::Arc<HashSet<String>>,
    /// The superuser connection reloads reuse.
    admin: Option<Admin>,
    facts: ServerFacts,
}

impl ContainerServer {
    fn wait_ready(&mut self, limit: Duration) -> Result<Admin> {
        let start = Instant::now();
        loop {
            match Admin::connect(&self.sock, self.port) {
                Ok(a) => return Ok(a),
                Err(e) => {
                    let c = self.container.clone().expect("container");
                    let running = docker::block_on(async move { c.is_running().await });
                    if !matches!(running, Ok(true)) {
                        let log = self.log();
                        if refused_by_itself(&log) {
                            bail!(super::ServerRefused(format!(
                                "server failed to start; its log:\n{log}"
                            )));
                        }
                        bail!("the server's container {} stopped during start-up, not by refusing the configuration; its log:\n{log}", self.slot.display());
                    }
                    if start.elapsed() > limit {
                        bail!("server not ready after {limit:?}: {e}\n{}", self.log());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

impl Server for ContainerServer {
    fn facts(&self) -> &ServerFacts {
        &self.facts
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn socket_dir(&self) -> &Path {
        &self.sock
    }

    fn can_reload_into(&self, setup: &ServerSetup) -> bool {
        setup.ipv6 == self.ipv6
    }

    fn reload(&mut self, setup: &ServerSetup) -> Result<()> {
        let setup = &known_settings(setup, &self.parameters);
        let data = self.slot.join("data");
        reload_config(
            &data,
            &self.sock,
            self.port,
            Some(self.owner),
            setup,
            &self.log_source(),
            &mut self.admin,
        )
    }

    fn exited(&mut self) -> Option<String> {
        let c = self.container.clone()?;
        let id = c.id().to_string();
        match docker::block_on(async move { c.is_running().await }) {
            Ok(true) => None,
            Ok(false) => Some(format!("container {id} stopped")),
            Err(e) => Some(format!("container {id}: {e}")),
        }
    }

    fn log(&self) -> String {
        (self.log_source())()
    }

    /// The container's stderr, where PostgreSQL logs.
    fn log_source(&self) -> super::LogSource {
        let c = self.container.clone();
        std::sync::Arc::new(move || {
            let Some(c) = c.clone() else {
                return String::new();
            };
            let bytes =
                docker::block_on(async move { c.stderr_to_vec().await }).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }
}

impl Drop for ContainerServer {
    fn drop(&mut self) {
        self.admin = None;
        if let Some(c) = self.container.take() {
            docker::remove_shared(c);
        }
        std::fs::remove_dir_all(&self.slot).ok();
    }
}

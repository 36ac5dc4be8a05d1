//! The `local` runtime: the machine's own PostgreSQL binaries. initdb runs once (cached by
//! binary version), each server is a copy of that cluster on a free port of 127.0.0.1.

use super::{Admin, Runtime, Server, ServerSetup};
use crate::cleanup::{self, Registration};
use crate::facts::ServerFacts;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub struct LocalRuntime {
    bindir: PathBuf,
    /// uid/gid to run PostgreSQL as when we are root (it refuses to run as root).
    owner: Option<(u32, u32)>,
    version: String,
    run_dir: tempfile::TempDir,
    _run_dir_reg: Registration,
    template: OnceLock<Result<PathBuf, String>>,
    template_lock: Mutex<()>,
    next_slot: AtomicUsize,
    facts: OnceLock<ServerFacts>,
}

/// Finds the PostgreSQL binaries: `--pg-bindir`, `pg_config --bindir`, `postgres` on PATH,
/// then the newest `/usr/lib/postgresql/*/bin`.
fn find_bindir(explicit: Option<PathBuf>) -> Result<PathBuf> {
    let has_postgres = |d: &Path| d.join("postgres").is_file() && d.join("initdb").is_file();
    if let Some(d) = explicit {
        return if has_postgres(&d) {
            Ok(d)
        } else {
            Err(anyhow!(
                "--pg-bindir {}: no postgres and initdb there",
                d.display()
            ))
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_postgres(&d) {
            return Ok(d);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if has_postgres(&d) {
                // Debian's PATH entries are wrappers; resolve to the real directory.
                let real = d
                    .join("postgres")
                    .canonicalize()
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf));
                return Ok(real.unwrap_or(d));
            }
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|it| {
            it.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|d| has_postgres(d))
                .collect()
        })
        .unwrap_or_default();
    candidates.sort_by(|a, b| {
        crate::facts::compare_versions(
            &a.to_string_lossy().replace("/usr/lib/postgresql/", ""),
            &b.to_string_lossy().replace("/usr/lib/postgresql/", ""),
        )
    });
    candidates
        .pop()
        .ok_or_else(|| anyhow!("no PostgreSQL server found: install postgresql (Debian: apt-get install postgresql) or pass --pg-bindir"))
}

fn server_owner() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::env::var("PGSSL_PG_USER").unwrap_or_else(|_| "postgres".into());
    let cname = std::ffi::CString::new(name.clone())?;
    // SAFETY: getpwnam with a valid C string; fields copied out immediately.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        bail!("running as root, and PostgreSQL refuses to: no user {name:?} to run it as (create it, or set PGSSL_PG_USER)");
    }
    // SAFETY: non-null passwd entry.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

pub(super) fn chown_tree(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), Some((uid, gid)))?;
        }
    }
    Ok(())
}

pub(super) fn free_port(ipv6: bool) -> Result<u16> {
    for _ in 0..50 {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        if !ipv6 || std::net::TcpListener::bind(("::1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free TCP port on loopback")
}

impl LocalRuntime {
    pub fn discover(explicit_bindir: Option<PathBuf>) -> Result<Self> {
        let bindir = find_bindir(explicit_bindir)?;
        let out = Command::new(bindir.join("postgres"))
            .arg("--version")
            .output()?;
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let owner = server_owner()?;
        let (run_dir, reg) = cleanup::create_run_dir().context("creating the run directory")?;
        Ok(LocalRuntime {
            bindir,
            owner,
            version,
            _run_dir_reg: reg,
            run_dir,
            template: OnceLock::new(),
            template_lock: Mutex::new(()),
            next_slot: AtomicUsize::new(0),
            facts: OnceLock::new(),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        // Untranslated messages, and no PG* variable of the caller leaking in.
        cmd.env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT");
        cmd
    }

    /// The initdb'ed cluster every server copies, cached across runs by binary version.
    fn template(&self) -> Result<PathBuf> {
        let _guard = self
            .template_lock
            .lock()
            .map_err(|_| anyhow!("template lock poisoned"))?;
        self.template
            .get_or_init(|| self.make_template().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow!(e))
    }

    fn make_template(&self) -> Result<PathBuf> {
        // The baked objects are part of the content: a change to them is a new template.
        let key = hex::encode(
            &Sha256::digest(
                format!(
                    "{}\n{}\n{}\n{}",
                    self.bindir.display(),
                    self.version,
                    super::admin::QUERY_SUPPORT,
                    TEMPLATE_LAYOUT
                )
                .as_bytes(),
            )[..8],
        );
        // initdb runs in this run's directory (owned by the server's user), then the cluster
        // is copied into the shared cache's staging directory.
        let work = self.run_dir.path().join("initdb");
        let dir = crate::cache::get_or_build(
            &crate::pki::cache_root(),
            &format!("initdb-{key}"),
            None,
            |staging| {
                self.run_initdb(&work)?;
                self.bake(&work)?;
                crate::pki::copy_tree(&work.join("data"), staging)
            },
        );
        std::fs::remove_dir_all(&work).ok();
        dir
    }

    /// initdb into `work/data`, with the include line the config writer relies on.
    fn run_initdb(&self, work: &Path) -> Result<()> {
        std::fs::create_dir_all(work)?;
        chown_tree(work, self.owner)?;
        let data = work.join("data");
        let out = self
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                // Every server copies the cluster: 1 MB of WAL instead of 16.
                "--wal-segsize=1",
                "-D",
            ])
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // initdb's postgresql.conf is 30 KB of comments around a dozen settings, and every
        // process of a server lexes it again on each reload: keep only the settings.
        let conf = data.join("postgresql.conf");
        let initdb_settings: String = std::fs::read_to_string(&conf)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(
            &conf,
            format!(
                "# initdb's settings\n{initdb_settings}\n# pgssl writes the scenario's settings here\ninclude_if_exists = 'pgssl.conf'\n"
            ),
        )?;
        Ok(())
    }
}

impl LocalRuntime {
    /// Installs what every server needs once into the fresh cluster (`work/data`), so that a
    /// server start copies it instead of creating it: a server on a private socket only,
    /// stopped cleanly (a shutdown checkpoint, so copies start without recovery).
    fn bake(&self, work: &Path) -> Result<()> {
        let sock = work.join("bake-sock");
        std::fs::create_dir_all(&sock)?;
        chown_tree(&sock, self.owner)?;
        let port = free_port(false)?;
        let mut child = self
            .command("postgres")
            .arg("-D")
            .arg(work.join("data"))
            .args(["-c", "listen_addresses=", "-c"])
            .arg(format!("unix_socket_directories={}", sock.display()))
            .args(["-c", &format!("port={port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .context("starting postgres to prepare the template cluster")?;
        let _registration = cleanup::register_process(child.id() as i32);
        let start = Instant::now();
        let installed = loop {
            if let Some(status) = child.try_wait()? {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err).ok();
                }
                bail!("postgres ended while preparing the template cluster ({status}): {err}");
            }
            match Admin::connect(&sock, port) {
                Ok(admin) => {
                    break admin
                        .install_query_support(&sock, port)
                        .and_then(|()| admin.drop_template0())
                }
                Err(e) if start.elapsed() > Duration::from_secs(60) => {
                    break Err(e.context("postgres preparing the template cluster not ready"))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        // SAFETY: signalling the postmaster we started: fast shutdown, with its checkpoint.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait()?;
        installed?;
        if !status.success() {
            bail!("postgres preparing the template cluster did not stop cleanly ({status})");
        }
        std::fs::remove_dir_all(&sock).ok();
        Ok(())
    }
}

impl LocalRuntime {
    /// The build's facts from its binaries: version, and the TLS library postgres links.
    fn read_facts(&self) -> Result<ServerFacts> {
        // "postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)"
        let pg_version = self
            .version
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_string();
        let ldd = Command::new("ldd")
            .arg(self.bindir.join("postgres"))
            .output()?;
        let (tls_library, tls_version) = super::tls_library::detect(
            &super::tls_library::ldd_libraries(&String::from_utf8_lossy(&ldd.stdout)),
            super::tls_library::read_cached,
        );
        Ok(ServerFacts {
            build: "local".into(),
            runtime: "local".into(),
            pg_version,
            tls_library,
            tls_version,
        })
    }
}

impl Runtime for LocalRuntime {
    fn build_name(&self) -> &str {
        "local"
    }

    fn detect_facts(&self) -> Result<ServerFacts> {
        if let Some(f) = self.facts.get() {
            return Ok(f.clone());
        }
        let facts = self.read_facts()?;
        Ok(self.facts.get_or_init(|| facts).clone())
    }

    fn start(&self, setup: &ServerSetup) -> Result<Box<dyn Server>> {
        let (mut server, admin, version) = start_until_ready(
            setup,
            || self.spawn(setup),
            |s| s.wait_ready(Duration::from_secs(60)),
        )?;
        server.admin = Some(admin);
        server.facts.pg_version = version;
        let (lib, ver) = super::tls_library::detect(
            &super::tls_library::mapped_libraries(server.child.id()),
            super::tls_library::read_cached,
        );
        server.facts.tls_library = lib;
        server.facts.tls_version = ver;
        Ok(Box::new(server))
    }
}

impl LocalRuntime {
    /// Makes a server directory and starts postgres in it, registered for clean-up. Nothing is
    /// created once clean-up has begun, and clean-up waits for a start under way.
    fn spawn(&self, setup: &ServerSetup) -> Result<LocalServer> {
        let _creating = cleanup::creating()?;
        let template = self.template()?;
        let slot = self.run_dir.path().join(format!(
            "srv-{}",
            self.next_slot.fetch_add(1, Ordering::Relaxed)
        ));
        // Not create_dir_all: a run directory removed by clean-up must stay removed.
        std::fs::create_dir(&slot).with_context(|| format!("creating {}", slot.display()))?;
        let made = self.spawn_in(&slot, &template, setup);
        if made.is_err() {
            std::fs::remove_dir_all(&slot).ok();
        }
        made
    }

    fn spawn_in(&self, slot: &Path, template: &Path, setup: &ServerSetup) -> Result<LocalServer> {
        let data = slot.join("data");
        let sock = slot.join("sock");
        std::fs::create_dir(&sock)?;
        crate::pki::copy_tree(template, &data)
            .with_context(|| format!("copying the cluster into {}", data.display()))?;
        private_dirs(slot)?;
        let port = free_port(setup.ipv6)?;
        write_config(&data, &sock, port, setup)?;
        chown_tree(slot, self.owner)?;
        let log_path = slot.join("server.log");
        let log = std::fs::File::create(&log_path)?;
        chown_tree(&log_path, self.owner)?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Own process group: a terminal's Ctrl-C reaches us, and we stop the server.
            .process_group(0)
            .spawn()
            .context("starting postgres")?;
        let registration = cleanup::register_process(child.id() as i32);
        Ok(LocalServer {
            child,
            _registration: registration,
            slot: slot.to_path_buf(),
            sock,
            port,
            ipv6: setup.ipv6,
            log_path,
            owner: self.owner,
            admin: None,
            facts: ServerFacts {
                build: "local".into(),
                runtime: "local".into(),
                pg_version: String::new(),
                tls_library: String::new(),
                tls_version: String::new(),
            },
        })
    }
}

/// Spawns servers until one is ready, again on a new port while another process took the port
/// between our probe and postgres's bind (at most [`PORT_TRIES`]); then installs what per-case
/// queries need and the setup's roles and databases. Returns the server, its admin connection
/// (kept for reloads) and its version.
pub(super) fn start_until_ready<S: Server>(
    setup: &ServerSetup,
    mut spawn: impl FnMut() -> Result<S>,
    wait_ready: impl Fn(&mut S) -> Result<Admin>,
) -> Result<(S, Admin, String)> {
    let mut tries = 0;
    let (server, admin) = loop {
        tries += 1;
        let mut server = spawn()?;
        match wait_ready(&mut server) {
            Ok(admin) => break (server, admin),
            Err(_) if tries < PORT_TRIES && port_taken(&server.log()) => continue,
            Err(e) => return Err(e),
        }
    };
    admin.install_query_support(server.socket_dir(), server.port())?;
    admin.ensure_objects(&setup.roles, &setup.databases)?;
    let version = admin.value("SHOW server_version")?;
    let version = version.split_whitespace().next().unwrap_or("").to_string();
    Ok((server, admin, version))
}

/// Starts tried per server: the free port is released before postgres binds it, and another
/// process can take it in between ("Address already in use").
pub(super) const PORT_TRIES: usize = 3;

/// Whether a server's log says another process holds its port.
pub(super) fn port_taken(log: &str) -> bool {
    log.contains("Address already in use")
}

/// Whether a server that stopped during start-up refused the configuration itself (a FATAL
/// line that is not about its port), rather than being killed or losing its port.
pub(super) fn refused_by_itself(log: &str) -> bool {
    log.lines().any(|l| l.contains("FATAL:")) && !port_taken(log)
}

/// A server directory (`slot`) and its socket directory: the server's user and the harness
/// (root, or the same user) only. The admin socket lives there.
pub(super) fn private_dirs(slot: &Path) -> Result<()> {
    for dir in [slot.to_path_buf(), slot.join("sock"), slot.join("data")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// The harness's own user name, which pg_ident.conf maps to `postgres` for the admin socket.
fn harness_user() -> String {
    // SAFETY: getpwuid with our uid; the name is copied out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return "root".into();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// Rewrites the configuration in `data`, has the server reload it (`pg_reload_conf()`), waits
/// until it has (`pg_conf_load_time()` moves), refuses what its log calls an error, and then
/// creates the roles and databases the new setup needs. Shared by every runtime: the data
/// directory and the socket are on this machine even when the server runs in a container.
pub(super) fn reload_config(
    data: &Path,
    sock: &Path,
    port: u16,
    owner: Option<(u32, u32)>,
    setup: &ServerSetup,
    log: &super::LogSource,
    kept: &mut Option<Admin>,
) -> Result<()> {
    // The connection kept from the start or the last reload, if it still answers.
    let admin = match kept.take() {
        Some(a) if a.value("SELECT 1").is_ok() => a,
        _ => Admin::connect(sock, port)?,
    };
    let log_offset = log().len();
    write_config(data, sock, port, setup)?;
    chown_tree(&data.join("pgssl"), owner)?;
    for f in ["pgssl.conf", "pg_hba.conf", "pg_ident.conf"] {
        chown_tree(&data.join(f), owner)?;
    }
    // The server's clock before the signal: the postmaster's reload time is later.
    let sent = admin.value("SELECT clock_timestamp()::text")?;
    admin.query("SELECT pg_reload_conf()")?;
    drop(admin);
    // A session that existed before the reload reports its own re-read time, which comes
    // before the postmaster reloads its SSL context: only a session forked after the
    // postmaster finished reloading sees the postmaster's time.
    let reloaded = format!(
        "SELECT pg_conf_load_time() > {}::timestamptz",
        super::admin::quote_literal(&sent)
    );
    let start = Instant::now();
    let admin = loop {
        std::thread::sleep(Duration::from_millis(2));
        let admin = Admin::connect(sock, port)?;
        if admin.value(&reloaded)? == "t" {
            break admin;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("server did not reload within 10 s");
        }
        std::thread::sleep(Duration::from_millis(8));
    };
    let problems = config_errors(&admin)?;
    if !problems.is_empty() {
        bail!(
            "server rejected the new configuration: {}",
            problems.join("; ")
        );
    }
    // SSL files have no view: the postmaster logs "SSL configuration was not reloaded" and
    // keeps the old context. A line this backend logs comes after everything the reload
    // logged (the postmaster finished it before forking us), also where the log arrives late
    // (a container's stderr through Docker): read up to that line.
    let marker = reload_marker();
    admin.query(&format!(
        "SET log_min_messages = log; DO $pgssl$BEGIN RAISE LOG '{marker}'; END$pgssl$"
    ))?;
    let text = loop {
        let text = log();
        let since = text.get(log_offset..).unwrap_or("").to_string();
        if let Some(end) = since.find(&marker) {
            break since[..end].to_string();
        }
        if start.elapsed() > Duration::from_secs(20) {
            bail!("the server's log did not show the reload check within 20 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if let Some(line) = text.lines().find(|l| {
        l.contains("not reloaded") || l.contains("contains errors") || l.contains("could not load")
    }) {
        bail!("server rejected the new configuration: {line}");
    }
    admin.ensure_objects(&setup.roles, &setup.databases)?;
    *kept = Some(admin);
    Ok(())
}

/// What the server finds wrong in the configuration files on disk: pg_hba.conf
/// (`pg_hba_file_rules`), pg_ident.conf (`pg_ident_file_mappings`, PostgreSQL 15+) and
/// postgresql.conf and its includes (`pg_file_settings`, e.g. a setting that needs a restart).
/// These run the parsers the reload ran, so the answer does not depend on log timing.
fn config_errors(admin: &Admin) -> Result<Vec<String>> {
    let mut sql = vec![
        "SELECT 'pg_hba.conf line ' || line_number || ': ' || error FROM pg_hba_file_rules WHERE error IS NOT NULL",
        "SELECT coalesce(sourcefile, '?') || ' line ' || coalesce(sourceline::text, '?') || ': ' || coalesce(name || ': ', '') || error FROM pg_file_settings WHERE error IS NOT NULL",
    ];
    if admin.value("SELECT to_regclass('pg_catalog.pg_ident_file_mappings') IS NOT NULL")? == "t" {
        sql.push("SELECT 'pg_ident.conf line ' || line_number || ': ' || error FROM pg_ident_file_mappings WHERE error IS NOT NULL");
    }
    let mut out = Vec::new();
    for q in sql {
        out.extend(admin.query(q)?.into_iter().flatten());
    }
    Ok(out)
}

/// A log text no other line contains.
fn reload_marker() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "pgssl reload check {}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes pgssl.conf, pg_hba.conf, pg_ident.conf and the scenario's files.
pub(super) fn write_config(data: &Path, sock: &Path, port: u16, setup: &ServerSetup) -> Result<()> {
    let quote = |v: &str| format!("'{}'", v.replace('\'', "''"));
    let listen = if setup.ipv6 {
        "127.0.0.1,::1"
    } else {
        "127.0.0.1"
    };
    let mut conf = String::from("# written by pgssl for one scenario\n");
    for (k, v) in [
        ("listen_addresses", listen.to_string()),
        ("port", port.to_string()),
        ("unix_socket_directories", sock.display().to_string()),
        ("unix_socket_permissions", "0700".into()),
        ("lc_messages", "C".into()),
        ("log_connections", "on".into()),
        ("log_line_prefix", "%m [%p] ".into()),
        ("fsync", "off".into()),
        // Servers live seconds: vacuum workers only cost CPU.
        ("autovacuum", "off".into()),
        ("max_connections", "60".into()),
    ] {
        conf.push_str(&format!("{k} = {}\n", quote(&v)));
    }
    for (k, v) in &setup.settings {
        conf.push_str(&format!("{k} = {}\n", quote(v)));
    }
    std::fs::write(data.join("pgssl.conf"), conf)?;
    // The superuser is the harness's alone: its own OS user (peer) over its private socket,
    // never over TCP, whatever the scenario's lines admit.
    let mut hba = String::from(
        "# pgssl's admin connection\nlocal all postgres peer map=pgssl_admin\nhost all postgres all reject\n",
    );
    for l in &setup.hba {
        hba.push_str(l);
        hba.push('\n');
    }
    std::fs::write(data.join("pg_hba.conf"), hba)?;
    let mut ident = format!("pgssl_admin {} postgres\n", harness_user());
    for l in &setup.ident {
        ident.push_str(l);
        ident.push('\n');
    }
    std::fs::write(data.join("pg_ident.conf"), ident)?;
    let files = data.join("pgssl");
    if files.exists() {
        std::fs::remove_dir_all(&files)?;
    }
    std::fs::create_dir_all(&files)?;
    std::fs::set_permissions(&files, std::fs::Permissions::from_mode(0o700))?;
    for (name, source) in &setup.files {
        let target = files.join(name);
        if source.is_dir() {
            crate::pki::copy_tree(source, &target)?;
        } else {
            std::fs::copy(source, &target)
                .with_context(|| format!("copying {}", source.display()))?;
            // PostgreSQL insists on private key files being private.
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Bump when the cached cluster's layout changes for the same binaries (the cache key).
const TEMPLATE_LAYOUT: &str = "postgresql.conf without comments; no template0";

struct LocalServer {
    child: Child,
    _registration: Registration,
    slot: PathBuf,
    sock: PathBuf,
    port: u16,
    ipv6: bool,
    log_path: PathBuf,
    owner: Option<(u32, u32)>,
    /// The superuser connection reloads reuse.
    admin: Option<Admin>,
    facts: ServerFacts,
}

impl LocalServer {
    fn wait_ready(&mut self, limit: Duration) -> Result<Admin> {
        use std::os::unix::process::ExitStatusExt;
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = self.log();
                if status.signal().is_none() && refused_by_itself(&log) {
                    bail!(super::ServerRefused(format!(
                        "server failed to start ({status}); its log:\n{log}"
                    )));
                }
                bail!(
                    "server {} ended during start-up ({status}), not by refusing the configuration; its log:\n{log}",
                    self.slot.display()
                );
            }
            match Admin::connect(&self.sock, self.port) {
                Ok(a) => return Ok(a),
                Err(e) if start.elapsed() > limit => {
                    bail!("server not ready after {limit:?}: {e}\n{}", self.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

impl Server for LocalServer {
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
        let data = self.slot.join("data");
        reload_config(
            &data,
            &self.sock,
            self.port,
            self.owner,
            setup,
            &self.log_source(),
            &mut self.admin,
        )
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(None) => None,
            Ok(Some(status)) => Some(format!("postmaster {} {status}", self.child.id())),
            Err(e) => Some(format!("postmaster {}: {e}", self.child.id())),
        }
    }

    fn log(&self) -> String {
        (self.log_source())()
    }

    fn log_source(&self) -> super::LogSource {
        let path = self.log_path.clone();
        std::sync::Arc::new(move || {
            String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned()
        })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.admin = None;
        // Its files are removed next: an immediate shutdown, no checkpoint to write.
        cleanup::discard_process(self.child.id() as i32);
        self.child.try_wait().ok();
        std::fs::remove_dir_all(&self.slot).ok();
    }
}

#[cfg(test)]
mod tests {
    /// PostgreSQL 15's own words for the three ways a start ends early.
    #[test]
    fn a_lost_port_is_not_a_refusal() {
        let port = "2026-12-01 16:00:00.000 UTC [42] LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n2026-12-01 16:00:00.000 UTC [42] HINT:  Is another postmaster already running on port 5432? If not, wait a few seconds and retry.\n2026-12-01 16:00:00.000 UTC [42] WARNING:  could not create listen socket for \"127.0.0.1\"\n2026-12-01 16:00:00.000 UTC [42] FATAL:  could not create any TCP/IP sockets\n";
        assert!(super::port_taken(port));
        assert!(!super::refused_by_itself(port));
        let refused = "2026-12-01 16:00:00.000 UTC [42] LOG:  invalid authentication method \"bogus\"\n2026-12-01 16:00:00.000 UTC [42] FATAL:  could not load pg_hba.conf\n";
        assert!(!super::port_taken(refused));
        assert!(super::refused_by_itself(refused));
        let killed = "2026-12-01 16:00:00.000 UTC [42] LOG:  starting PostgreSQL 15.18\n";
        assert!(!super::refused_by_itself(killed));
    }
}

//! The `local` runtime: the machine's own PostgreSQL binaries. initdb runs once (cached by
//! binary version), each server is a copy of that cluster on a free port of 127.0.0.1.

use super::{Admin, Runtime, Server, ServerSetup};
use crate::cleanup::{self, Registration};
use crate::facts::ServerFacts;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
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
        let run_dir = cleanup::create_run_dir().context("creating the run directory")?;
        std::fs::set_permissions(run_dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let reg = cleanup::register_dir(run_dir.path());
        Ok(LocalRuntime {
            bindir,
            owner,
            version,
            _run_dir_reg: reg,
            run_dir,
            template: OnceLock::new(),
            template_lock: Mutex::new(()),
            next_slot: AtomicUsize::new(0),
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
        let key = hex::encode(
            &Sha256::digest(format!("{}\n{}", self.bindir.display(), self.version).as_bytes())[..8],
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
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))?;
        writeln!(
            conf,
            "\n# pgssl writes the scenario's settings here\ninclude_if_exists = 'pgssl.conf'"
        )?;
        Ok(())
    }
}

impl Runtime for LocalRuntime {
    fn build_name(&self) -> &str {
        "local"
    }

    fn detect_facts(&self) -> Result<ServerFacts> {
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
        let ldd = String::from_utf8_lossy(&ldd.stdout);
        let path_of = |lib: &str| {
            ldd.lines()
                .find(|l| l.contains(lib))
                .and_then(|l| l.split("=>").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .map(str::to_string)
        };
        let (tls_library, tls_version) = match (path_of("libssl.so"), path_of("libcrypto.so")) {
            (Some(_), Some(crypto)) => (
                "openssl".to_string(),
                std::fs::read(crypto)
                    .ok()
                    .and_then(|b| openssl_version_in(&b))
                    .unwrap_or_default(),
            ),
            _ => ("none".to_string(), String::new()),
        };
        Ok(ServerFacts {
            build: "local".into(),
            runtime: "local".into(),
            pg_version,
            tls_library,
            tls_version,
        })
    }

    fn start(&self, setup: &ServerSetup) -> Result<Box<dyn Server>> {
        let template = self.template()?;
        let slot = self.run_dir.path().join(format!(
            "srv-{}",
            self.next_slot.fetch_add(1, Ordering::Relaxed)
        ));
        let data = slot.join("data");
        let sock = slot.join("sock");
        std::fs::create_dir_all(&sock)?;
        crate::pki::copy_tree(&template, &data)?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))?;
        let port = free_port(setup.ipv6)?;
        write_config(&data, &sock, port, setup)?;
        chown_tree(&slot, self.owner)?;
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
        let mut server = LocalServer {
            child,
            _registration: registration,
            slot,
            sock,
            port,
            ipv6: setup.ipv6,
            log_path,
            owner: self.owner,
            facts: ServerFacts {
                build: "local".into(),
                runtime: "local".into(),
                pg_version: String::new(),
                tls_library: String::new(),
                tls_version: String::new(),
            },
        };
        let admin = server.wait_ready(Duration::from_secs(60))?;
        Admin::install_query_support(&server.sock, server.port)?;
        admin.ensure_objects(&setup.roles, &setup.databases)?;
        let version = admin.value("SHOW server_version")?;
        server.facts.pg_version = version.split_whitespace().next().unwrap_or("").to_string();
        let (lib, ver) = detect_tls(server.child.id());
        server.facts.tls_library = lib;
        server.facts.tls_version = ver;
        Ok(Box::new(server))
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
) -> Result<()> {
    let admin = Admin::connect(sock, port)?;
    let before = admin.value("SELECT pg_conf_load_time()::text")?;
    let log_offset = log().len();
    write_config(data, sock, port, setup)?;
    chown_tree(&data.join("pgssl"), owner)?;
    for f in ["pgssl.conf", "pg_hba.conf", "pg_ident.conf"] {
        chown_tree(&data.join(f), owner)?;
    }
    admin.query("SELECT pg_reload_conf()")?;
    drop(admin);
    let start = Instant::now();
    let admin = loop {
        let admin = Admin::connect(sock, port)?;
        if admin.value("SELECT pg_conf_load_time()::text")? != before {
            break admin;
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("server did not reload within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = log();
    let since = text.get(log_offset..).unwrap_or("");
    if let Some(line) = since.lines().find(|l| {
        l.contains("not reloaded") || l.contains("contains errors") || l.contains("could not load")
    }) {
        bail!("server rejected the new configuration: {line}");
    }
    admin.ensure_objects(&setup.roles, &setup.databases)
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
        ("lc_messages", "C".into()),
        ("log_connections", "on".into()),
        ("log_line_prefix", "%m [%p] ".into()),
        ("fsync", "off".into()),
        ("max_connections", "60".into()),
    ] {
        conf.push_str(&format!("{k} = {}\n", quote(&v)));
    }
    for (k, v) in &setup.settings {
        conf.push_str(&format!("{k} = {}\n", quote(v)));
    }
    std::fs::write(data.join("pgssl.conf"), conf)?;
    let mut hba = String::from("# admin socket of the harness\nlocal all all trust\n");
    for l in &setup.hba {
        hba.push_str(l);
        hba.push('\n');
    }
    std::fs::write(data.join("pg_hba.conf"), hba)?;
    std::fs::write(
        data.join("pg_ident.conf"),
        setup
            .ident
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )?;
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

/// TLS library and version from the libraries the server process has mapped.
fn detect_tls(pid: u32) -> (String, String) {
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
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|bytes| openssl_version_in(&bytes))
        .unwrap_or_else(|| "unknown".into());
    ("openssl".into(), version)
}

/// Finds `OpenSSL 3.0.17 ` style version text inside a libcrypto binary.
pub fn openssl_version_in(bytes: &[u8]) -> Option<String> {
    let needle = b"OpenSSL ";
    let mut i = 0;
    while let Some(pos) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
        let start = i + pos + needle.len();
        let tail: Vec<u8> = bytes[start..]
            .iter()
            .take(16)
            .copied()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'.')
            .collect();
        let text = String::from_utf8_lossy(&tail).to_string();
        if text.chars().next().is_some_and(|c| c.is_ascii_digit())
            && text.matches('.').count() == 2
            && bytes.get(start + tail.len()) == Some(&b' ')
        {
            return Some(text);
        }
        i = start;
    }
    None
}

struct LocalServer {
    child: Child,
    _registration: Registration,
    slot: PathBuf,
    sock: PathBuf,
    port: u16,
    ipv6: bool,
    log_path: PathBuf,
    owner: Option<(u32, u32)>,
    facts: ServerFacts,
}

impl LocalServer {
    fn wait_ready(&mut self, limit: Duration) -> Result<Admin> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "server failed to start ({status}); its log:\n{}",
                    self.log()
                );
            }
            match Admin::connect(&self.sock, self.port) {
                Ok(a) => return Ok(a),
                Err(e) if start.elapsed() > limit => {
                    bail!("server not ready after {limit:?}: {e}\n{}", self.log())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(25)),
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
        )
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
        cleanup::stop_process(self.child.id() as i32, Duration::from_secs(10));
        self.child.try_wait().ok();
        std::fs::remove_dir_all(&self.slot).ok();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_openssl_version_text() {
        let blob = b"\0\0OpenSSL version: bad\0OpenSSL 3.0.17 1 Jul 2025\0";
        assert_eq!(super::openssl_version_in(blob).as_deref(), Some("3.0.17"));
        assert_eq!(
            super::openssl_version_in(b"OpenSSL 1.1.1w  11 Sep 2023").as_deref(),
            Some("1.1.1w")
        );
    }
}

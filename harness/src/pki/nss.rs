//! NSS certificate databases, built with NSS's own tools (certutil, pk12util, crlutil from
//! libnss3-tools) so that what lands in the database is exactly what NSS itself writes.
//! Every database is listed back after building and compared with what was asked for: the
//! tools have traps that otherwise go unnoticed (on a password-protected database `certutil -A`
//! without the password exits non-zero yet adds the certificate with its trust dropped;
//! pk12util also imports chain certificates; crlutil wants DER and the issuer present).

use anyhow::{bail, Context, Result};
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509Crl, X509};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What goes into one database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DbPlan {
    /// (nickname, PEM certificate, trust flags). Only the file's first certificate is used.
    pub certs: Vec<(String, PathBuf, String)>,
    /// (nickname, PEM certificate, private key file): imported together through PKCS#12.
    /// An encrypted key is read with the database's password.
    pub keys: Vec<(String, PathBuf, PathBuf)>,
    /// PEM files of CRLs (one or more lists each).
    pub crls: Vec<PathBuf>,
    /// Database password; `None` is an empty password.
    pub password: Option<String>,
}

/// What `certutil -L` and `crlutil -L` show for a database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Nickname to trust flags.
    pub certs: BTreeMap<String, String>,
    /// CRLs by the nickname of their issuer, sorted.
    pub crl_issuers: Vec<String>,
}

/// Runs an NSS tool with no terminal to prompt on and a deadline: a tool that wants a
/// password it was not given would otherwise wait forever.
fn run(cmd: &mut Command) -> Result<String> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("running {cmd:?} (is libnss3-tools installed?)"))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        // The tool and its operation, then what it said: the full command line (scratch
        // paths, password file) says nothing to a reader of the outcome.
        let op = cmd
            .get_args()
            .next()
            .map(|a| a.to_string_lossy().into_owned());
        bail!(
            "{} {} failed: {}{}",
            cmd.get_program().to_string_lossy(),
            op.unwrap_or_default(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sql:DIR`, the only database format current NSS writes.
pub fn db_arg(dir: &Path) -> String {
    format!("sql:{}", dir.display())
}

/// Builds a database in `dir` (created; must not hold one yet) and checks the result.
pub fn build(dir: &Path, plan: &DbPlan) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let scratch = tempfile::tempdir()?;
    let pwfile = scratch.path().join("pw");
    std::fs::write(&pwfile, plan.password.as_deref().unwrap_or(""))?;
    let db = db_arg(dir);
    let pw = pwfile.display().to_string();
    let mut init = Command::new("certutil");
    init.args(["-N", "-d", &db]);
    match &plan.password {
        Some(_) => init.args(["-f", &pw]),
        None => init.arg("--empty-password"),
    };
    run(&mut init)?;
    for (nick, pem, trust) in &plan.certs {
        let cert = X509::from_pem(&std::fs::read(pem)?)
            .with_context(|| format!("reading {}", pem.display()))?;
        let der = scratch.path().join(format!("{nick}.der"));
        std::fs::write(&der, cert.to_der()?)?;
        // -f always: without the password certutil drops the trust flags on a protected db.
        run(Command::new("certutil").args([
            "-A",
            "-d",
            &db,
            "-f",
            &pw,
            "-n",
            nick,
            "-t",
            trust,
            "-i",
            &der.display().to_string(),
        ]))?;
    }
    for (nick, cert, key) in &plan.keys {
        let cert = X509::from_pem(&std::fs::read(cert)?)
            .with_context(|| format!("reading {}", cert.display()))?;
        let pkey = read_key(key, plan.password.as_deref())
            .with_context(|| format!("reading {}", key.display()))?;
        // The leaf alone, no chain: pk12util would import chain certificates too.
        let p12 = Pkcs12::builder()
            .name(nick)
            .pkey(&pkey)
            .cert(&cert)
            .build2("pgssl")?;
        let file = scratch.path().join(format!("{nick}.p12"));
        std::fs::write(&file, p12.to_der()?)?;
        run(Command::new("pk12util").args([
            "-i",
            &file.display().to_string(),
            "-d",
            &db,
            "-k",
            &pw,
            "-W",
            "pgssl",
        ]))?;
    }
    for (n, pem) in plan.crls.iter().enumerate() {
        for (m, crl) in split_crls(pem)?.into_iter().enumerate() {
            let der = scratch.path().join(format!("crl-{n}-{m}.der"));
            std::fs::write(&der, crl)?;
            run(Command::new("crlutil").args([
                "-I",
                "-d",
                &db,
                "-f",
                &pw,
                "-t",
                "1",
                "-i",
                &der.display().to_string(),
            ]))?;
        }
    }
    // One login before the database is shared: the first one after the tools built it
    // writes to the key database, and several processes doing that write at once contend
    // on its SQLite lock until the attempt's deadline.
    if !plan.keys.is_empty() {
        run(Command::new("certutil").args(["-K", "-d", &db, "-f", &pw]))?;
    }
    Ok(())
}

/// A private key file in any of the PKI's encodings (PEM, DER, PKCS#8 encrypted under
/// `password`). Always read with a passphrase (empty when none is given): OpenSSL must never
/// prompt.
pub fn read_key(path: &Path, password: Option<&str>) -> Result<PKey<Private>> {
    let bytes = std::fs::read(path)?;
    let pw = password.unwrap_or("").as_bytes();
    Ok(PKey::private_key_from_pem_passphrase(&bytes, pw)
        .or_else(|_| PKey::private_key_from_der(&bytes))
        .or_else(|_| PKey::private_key_from_pkcs8_passphrase(&bytes, pw))?)
}

/// The database for `plan` under the cache directory `root`, from an earlier run or built
/// now (once, under the cache's lock, aside and renamed into place): concurrent runs never
/// see or remove a half-made one. Named by a digest of the plan, whose files are named by
/// their content.
pub fn cached(root: &Path, plan: &DbPlan) -> Result<PathBuf> {
    crate::cache::get_or_build(root, &cache_key(plan), None, |staging| build(staging, plan))
}

fn cache_key(plan: &DbPlan) -> String {
    format!("db-{}", digest(format!("{plan:?}").as_bytes()))
}

/// As [`cached`], and the built database listed back and compared with the plan (its CRLs
/// by their issuers' nicknames, `crl_issuers`) before anyone uses it.
pub fn cached_checked(root: &Path, plan: &DbPlan, crl_issuers: Vec<String>) -> Result<PathBuf> {
    crate::cache::get_or_build(root, &cache_key(plan), None, |staging| {
        build(staging, plan)?;
        let want = expected_listing(plan, crl_issuers);
        let got = list(staging)?;
        if got != want {
            bail!("NSS lists {got:?}, pgssl asked for {want:?}");
        }
        Ok(())
    })
}

/// A short content digest, for names of derived files and databases.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// Writes a derived file once; concurrent attempts may want the same one, so it is written
/// aside and renamed into place, never truncated under a reader. Private to the cache's owner
/// (0600): keys must not be readable by other users, and nothing here needs to be.
pub fn write_once(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let tmp = tmp.with_file_name(format!(
        "{}.{:?}",
        tmp.file_name().and_then(|n| n.to_str()).unwrap_or("f"),
        std::thread::current().id()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes));
    if written.is_ok() {
        let _ = std::fs::rename(&tmp, path);
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Every CRL in a PEM file, as DER (crlutil takes DER only).
pub fn split_crls(pem: &Path) -> Result<Vec<Vec<u8>>> {
    const END: &str = "-----END X509 CRL-----";
    let text =
        std::fs::read_to_string(pem).with_context(|| format!("reading {}", pem.display()))?;
    let mut out = Vec::new();
    for block in text.split_inclusive(END).filter(|b| b.contains(END)) {
        out.push(X509Crl::from_pem(block.trim_start().as_bytes())?.to_der()?);
    }
    Ok(out)
}

/// Reads a database back with `certutil -L` and `crlutil -L`.
pub fn list(dir: &Path) -> Result<Listing> {
    let db = db_arg(dir);
    let mut listing = Listing::default();
    let certs = run(Command::new("certutil").args(["-L", "-d", &db]))?;
    // Header lines, then "<nickname padded to a column><trust>".
    for line in certs.lines().skip(4) {
        let line = line.trim_end();
        if let Some((nick, trust)) = line.rsplit_once(char::is_whitespace) {
            listing
                .certs
                .insert(nick.trim().to_string(), trust.to_string());
        }
    }
    // crlutil -L fails on a database without CRLs; that is an empty list.
    if let Ok(crls) = run(Command::new("crlutil").args(["-L", "-d", &db])) {
        for line in crls.lines().skip(3) {
            if let Some(issuer) = line.trim_end().strip_suffix("CRL") {
                listing.crl_issuers.push(issuer.trim().to_string());
            }
        }
    }
    listing.crl_issuers.sort();
    Ok(listing)
}

/// What `list` must show for a plan whose CRL issuers are `crl_issuers` (nicknames).
pub fn expected_listing(plan: &DbPlan, crl_issuers: Vec<String>) -> Listing {
    let mut certs: BTreeMap<String, String> = plan
        .certs
        .iter()
        .map(|(n, _, t)| (n.clone(), t.clone()))
        .collect();
    for (n, _, _) in &plan.keys {
        certs.insert(n.clone(), "u,u,u".into());
    }
    let mut crl_issuers = crl_issuers;
    crl_issuers.sort();
    Listing { certs, crl_issuers }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Derived keys live in a cache other users may be able to list: only the owner reads them.
    #[test]
    fn derived_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc.key");
        write_once(&path, b"-----BEGIN PRIVATE KEY-----\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}

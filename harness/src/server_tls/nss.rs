//! NSS (the proposed NSS backend): the server reads one certificate database, `ssl_database`,
//! and finds its certificate there by nickname, `ssl_cert_file`; the key is the one NSS holds
//! for that certificate. The scenario's PEM material becomes that database, built with NSS's
//! tools (`pki::nss`) once per distinct content and cached beside the PKI it came from:
//!
//! - the server certificate with its key (PKCS#12) under its PKI name as nickname; the other
//!   certificates of the file (the chain the server sends) present without trust (`,,`);
//! - every certificate of the CA file as a trusted issuer of client certificates (`CT,C,C`,
//!   nicknamed `<file>#<n>`);
//! - every CRL of the CRL file and directory whose issuer is in the database (crlutil refuses
//!   others, as it does for any NSS user);
//! - an encrypted key's password (as the PKI spec declares it) as the database's password,
//!   which the server asks `ssl_passphrase_command` for when it reads the key.
//!
//! `ssl_key_file`, `ssl_ca_file`, `ssl_crl_file` and `ssl_crl_dir` stay empty: the backend
//! reads no files, and a non-empty `ssl_crl_file` makes it demand a CRL issued by the server
//! certificate's own subject.

use super::{ServerTls, TlsMaterial};
use crate::pki::nss::{digest, write_once, DbPlan};
use crate::pki::PkiDir;
use crate::runtime::ServerSetup;
use anyhow::{Context, Result};
use openssl::x509::{X509Crl, X509};
use std::path::{Path, PathBuf};

pub struct Nss;

/// The database's name in the data directory; `ssl_database` is relative to it (the backend's
/// working directory), so the same setting serves a local server and one in a container.
const DB: &str = "nssdb";

/// Trust flags (SSL, S/MIME, code signing) of an issuer the server trusts for client
/// certificates: `T` is "trusted CA for client authentication", `C` a CA for the rest.
const CLIENT_CA: &str = "CT,C,C";

impl ServerTls for Nss {
    fn library(&self) -> &'static str {
        "nss"
    }

    fn configure(&self, m: &TlsMaterial, pki: &PkiDir, setup: &mut ServerSetup) -> Result<()> {
        let (database, nickname) = match m.cert {
            Some(cert) => {
                let dir = database(m, pki).context("building the server's NSS database")?;
                setup.files.retain(|(f, _)| f != DB);
                setup.files.push((DB.into(), dir));
                (format!("pgssl/{DB}"), cert.to_string())
            }
            None => (String::new(), String::new()),
        };
        for (setting, value) in [
            ("ssl_database", database),
            ("ssl_cert_file", nickname),
            ("ssl_key_file", String::new()),
            ("ssl_ca_file", String::new()),
            ("ssl_crl_file", String::new()),
            ("ssl_crl_dir", String::new()),
        ] {
            setup.settings.push((setting.into(), value));
        }
        Ok(())
    }
}

/// Where a PKI's server databases live: beside it in the same cache (`nss-server/`).
fn cache_dir(pki: &PkiDir) -> PathBuf {
    pki.dir.parent().unwrap_or(&pki.dir).join("nss-server")
}

/// The database for `m`, built and checked on first use.
fn database(m: &TlsMaterial, pki: &PkiDir) -> Result<PathBuf> {
    let root = cache_dir(pki);
    let (plan, crl_issuers) = plan(m, pki, &root.join("files"))?;
    crate::pki::nss::cached_checked(&root, &plan, crl_issuers)
}

/// What goes into the database, and the nicknames of the CRLs' issuers (what `crlutil -L`
/// must show). Certificates split out of bundles and CRLs out of lists are written under
/// `files`, named by content, so the plan (and the database's cache key) is their content.
fn plan(m: &TlsMaterial, pki: &PkiDir, files: &Path) -> Result<(DbPlan, Vec<String>)> {
    std::fs::create_dir_all(files).with_context(|| format!("creating {}", files.display()))?;
    let mut plan = DbPlan {
        password: m.key_password.map(str::to_string),
        ..Default::default()
    };
    // (DER, subject DER, nickname) of every certificate planned, to merge duplicates and to
    // find CRL issuers.
    let mut planned: Vec<(Vec<u8>, Vec<u8>, String)> = Vec::new();
    let read_certs = |name: &str| -> Result<Vec<X509>> {
        let path = pki.path(name);
        let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        X509::stack_from_pem(&pem).with_context(|| format!("reading {}", path.display()))
    };
    let Some(cert) = m.cert else {
        return Ok((plan, Vec::new()));
    };
    let chain = read_certs(cert)?;
    let leaf = chain
        .first()
        .with_context(|| format!("{cert} holds no certificate"))?;
    match m.key {
        Some(key) => plan.keys.push((cert.into(), pki.path(cert), pki.path(key))),
        None => plan.certs.push((cert.into(), pki.path(cert), ",,".into())),
    }
    planned.push((
        leaf.to_der()?,
        leaf.subject_name().to_der()?,
        cert.to_string(),
    ));
    let mut add = |nick: String, c: &X509, trust: &str| -> Result<()> {
        let der = c.to_der()?;
        if let Some((_, _, existing)) = planned.iter().find(|(d, _, _)| *d == der) {
            // NSS holds a certificate once, under its first nickname: a CA-file certificate
            // that is also in the chain keeps that entry and gains the issuer's trust.
            if let Some(entry) = plan.certs.iter_mut().find(|(n, _, _)| n == existing) {
                if trust == CLIENT_CA {
                    entry.2 = trust.into();
                }
            }
            return Ok(());
        }
        let path = files.join(format!("{}.crt", digest(&der)));
        write_once(&path, &c.to_pem()?);
        planned.push((der, c.subject_name().to_der()?, nick.clone()));
        plan.certs.push((nick, path, trust.into()));
        Ok(())
    };
    for (i, c) in chain.iter().enumerate().skip(1) {
        add(format!("{cert}#{i}"), c, ",,")?;
    }
    if let Some(ca) = m.ca {
        for (i, c) in read_certs(ca)?.iter().enumerate() {
            add(format!("{ca}#{i}"), c, CLIENT_CA)?;
        }
    }
    let mut crl_files: Vec<PathBuf> = m.crl.map(|c| pki.path(c)).into_iter().collect();
    if let Some(d) = m.crl_dir {
        let dir = pki.path(d);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        crl_files.extend(entries);
    }
    let mut issuers = Vec::new();
    for file in crl_files {
        for der in crate::pki::nss::split_crls(&file)? {
            let crl = X509Crl::from_der(&der)?;
            let issuer = crl.issuer_name().to_der()?;
            let Some((_, _, nick)) = planned.iter().find(|(_, s, _)| *s == issuer) else {
                continue;
            };
            let path = files.join(format!("{}.crl", digest(&der)));
            write_once(&path, &crl.to_pem()?);
            if !plan.crls.contains(&path) {
                plan.crls.push(path);
                issuers.push(nick.clone());
            }
        }
    }
    Ok((plan, issuers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::nss::{list, Listing};
    use std::collections::BTreeMap;

    const SPEC: &str = r#"
[ca.root_ca]
subject = "/CN=root"

[ca.server_ca]
issuer = "root_ca"
subject = "/CN=server ca"

[ca.client_ca]
issuer = "root_ca"
subject = "/CN=client ca"

[cert.server]
issuer = "server_ca"
subject = "/CN=server.test"

[cert.client]
issuer = "client_ca"
subject = "/CN=client"

[crl.client]
issuer = "client_ca"
revoke = ["client"]

[crl.root]
issuer = "root_ca"

[crl.other]
issuer = "server_ca"

[bundle."server+server_ca"]
certs = ["server", "server_ca"]

[bundle."root+client_ca"]
certs = ["root_ca", "client_ca"]

[crl_bundle."root+client"]
crls = ["root", "client"]

[crl_dir."other-crldir"]
crls = ["other"]

[key_file."server-password.key"]
key = "server"
format = "pkcs8-encrypted-pem"
password = "secret1"
"#;

    fn sample_pki(cache: &Path) -> PkiDir {
        let spec_path = cache.join("pki.toml");
        std::fs::write(&spec_path, SPEC).unwrap();
        let spec = crate::pki::PkiSpec::load(&spec_path).unwrap();
        spec.materialize(&cache.join("cache")).unwrap()
    }

    fn setting<'a>(setup: &'a ServerSetup, name: &str) -> Option<&'a str> {
        setup
            .settings
            .iter()
            .rev()
            .find(|(s, _)| s == name)
            .map(|(_, v)| v.as_str())
    }

    /// The database holds the server's identity under its nickname, its chain untrusted, the
    /// CA file's certificates as client-certificate issuers and the CRLs whose issuers it
    /// holds; every setting is written, the file settings empty.
    #[test]
    fn server_database_and_settings() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = sample_pki(tmp.path());
        let mut setup = ServerSetup::default();
        let m = TlsMaterial {
            cert: Some("server+server_ca.crt"),
            key: Some("server-password.key"),
            key_password: Some("secret1"),
            ca: Some("root+client_ca.crt"),
            crl: Some("root+client.crl"),
            crl_dir: Some("other-crldir"),
        };
        Nss.configure(&m, &pki, &mut setup).unwrap();
        assert_eq!(setting(&setup, "ssl_database"), Some("pgssl/nssdb"));
        assert_eq!(
            setting(&setup, "ssl_cert_file"),
            Some("server+server_ca.crt")
        );
        for unset in ["ssl_key_file", "ssl_ca_file", "ssl_crl_file", "ssl_crl_dir"] {
            assert_eq!(setting(&setup, unset), Some(""), "{unset}");
        }
        let (_, db) = setup.files.iter().find(|(f, _)| f == "nssdb").unwrap();
        let want = Listing {
            certs: BTreeMap::from([
                ("server+server_ca.crt".into(), "u,u,u".into()),
                ("server+server_ca.crt#1".into(), ",,".into()),
                ("root+client_ca.crt#0".into(), "CT,C,C".into()),
                ("root+client_ca.crt#1".into(), "CT,C,C".into()),
            ]),
            crl_issuers: vec![
                "root+client_ca.crt#0".into(),
                "root+client_ca.crt#1".into(),
                "server+server_ca.crt#1".into(),
            ],
        };
        assert_eq!(list(db).unwrap(), want);
        // The key is under the database's password: the server must log in to find it.
        let no_login = std::process::Command::new("certutil")
            .args(["-K", "-d", &crate::pki::nss::db_arg(db)])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            !no_login.status.success(),
            "a key readable without password"
        );

        // The same material again is the same cached database; a reload's new identity
        // replaces the file and the nickname.
        let mut again = ServerSetup::default();
        Nss.configure(&m, &pki, &mut again).unwrap();
        assert_eq!(again.files, setup.files);
        let reloaded = TlsMaterial {
            cert: Some("server.crt"),
            key: Some("server.key"),
            key_password: None,
            ca: None,
            crl: None,
            crl_dir: None,
        };
        Nss.configure(&reloaded, &pki, &mut setup).unwrap();
        assert_eq!(setting(&setup, "ssl_cert_file"), Some("server.crt"));
        assert_eq!(setup.files.iter().filter(|(f, _)| f == "nssdb").count(), 1);
        let (_, db) = setup.files.iter().find(|(f, _)| f == "nssdb").unwrap();
        let listed = list(db).unwrap();
        assert_eq!(
            listed.certs,
            BTreeMap::from([("server.crt".into(), "u,u,u".into())])
        );
        assert!(listed.crl_issuers.is_empty());
    }

    /// Without a certificate there is no database, and the settings say so (a reload from
    /// a scenario with one clears it).
    #[test]
    fn no_certificate_no_database() {
        let pki = PkiDir {
            dir: "/nonexistent/pki".into(),
        };
        let mut setup = ServerSetup::default();
        Nss.configure(&TlsMaterial::default(), &pki, &mut setup)
            .unwrap();
        assert_eq!(setting(&setup, "ssl_database"), Some(""));
        assert_eq!(setting(&setup, "ssl_cert_file"), Some(""));
        assert!(setup.files.is_empty());
    }
}

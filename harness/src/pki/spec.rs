//! The PKI spec format (certs/*.toml): CAs, leaves, CRLs, bundles and key files, declared by
//! role. `docs/pki-format.md` describes it for authors.

use crate::scenario::LoadError;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A PKI spec as written.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    /// Certificate authorities; one without `issuer` is a self-signed root. Output `<name>.crt`
    /// and `<name>.key`.
    #[serde(default)]
    pub ca: BTreeMap<String, CertSpec>,
    /// End-entity certificates. Output `<name>.crt` and `<name>.key` (PKCS#8 PEM, mode 0600).
    #[serde(default)]
    pub cert: BTreeMap<String, CertSpec>,
    /// A CRL signed by `issuer`. Output `<name>.crl` (PEM).
    #[serde(default)]
    pub crl: BTreeMap<String, CrlSpec>,
    /// Concatenated certificates, in the order listed. Output `<name>.crt`.
    #[serde(default)]
    pub bundle: BTreeMap<String, BundleSpec>,
    /// Concatenated CRLs, in the order listed. Output `<name>.crl`.
    #[serde(default)]
    pub crl_bundle: BTreeMap<String, CrlBundleSpec>,
    /// A directory of CRLs in OpenSSL's hashed layout (`<issuer hash>.r<N>`). Output `<name>/`.
    #[serde(default)]
    pub crl_dir: BTreeMap<String, CrlBundleSpec>,
    /// A key in another encoding, or with other permissions. Output `<name>` exactly.
    #[serde(default)]
    pub key_file: BTreeMap<String, KeyFileSpec>,
    /// An NSS certificate database (sql: format). Output `<name>.nssdb/`.
    #[serde(default)]
    pub nss_db: BTreeMap<String, NssDbSpec>,
}

/// An NSS database: which certificates with which trust flags, which keys, which CRLs.
/// Every certificate's nickname is its name in this spec.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NssDbSpec {
    /// Certificates (CA or leaf names) and their trust flags as certutil writes them
    /// (`SSL,S/MIME,JAR`), e.g. `"CT,C,C"` for a trust anchor, `",,"` for none.
    #[serde(default)]
    pub trust: BTreeMap<String, String>,
    /// Leaves imported together with their private keys; certutil lists them as `u,u,u`.
    #[serde(default)]
    pub keys: Vec<String>,
    /// CRL names; each issuer must be among `trust` (crlutil needs the issuer present).
    #[serde(default)]
    pub crls: Vec<String>,
    /// Database password; without it the database has an empty password.
    pub password: Option<String>,
}

/// A certificate: CA or leaf.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertSpec {
    /// Subject in OpenSSL's slash form, attributes in order: `/CN=x/OU=a/OU=b/O=PGDG`.
    /// UTF-8 is allowed; `\/` is a literal slash.
    pub subject: String,
    /// The CA that signs it; absent for a self-signed root (CAs only).
    pub issuer: Option<String>,
    /// Key algorithm.
    #[serde(default)]
    pub key: KeyAlg,
    /// DNS subjectAltNames, verbatim (any text, including IP-looking text).
    #[serde(default)]
    pub dns: Vec<String>,
    /// IP address subjectAltNames (v4 or v6).
    #[serde(default)]
    pub ip: Vec<String>,
    /// Extended key usages.
    #[serde(default)]
    pub eku: Vec<Eku>,
    /// Validity relative to generation time.
    #[serde(default)]
    pub validity: Validity,
    /// Leaves only: add a basicConstraints extension saying CA:FALSE (as an OpenSSL `v3_req`
    /// section would), which sslinfo's `ssl_extension_info()` then reports.
    #[serde(default)]
    pub basic_constraints: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlg {
    /// RSA 2048.
    #[default]
    Rsa,
    /// ECDSA P-256.
    Ec,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Eku {
    ServerAuth,
    ClientAuth,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Validity {
    /// From a day before generation to ten years after.
    #[default]
    Valid,
    /// Ended a year before generation.
    Expired,
    /// Starts five years after generation.
    NotYetValid,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrlSpec {
    /// The CA that signs the list.
    pub issuer: String,
    /// Certificates (by name) listed as revoked; they must be issued by `issuer`.
    #[serde(default)]
    pub revoke: Vec<String>,
    /// nextUpdate lies in the past.
    #[serde(default)]
    pub expired: bool,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    /// CA or leaf names, in file order.
    pub certs: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CrlBundleSpec {
    /// CRL names, in order.
    pub crls: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyFileSpec {
    /// The CA or leaf whose key this is.
    pub key: String,
    /// Encoding.
    pub format: KeyFormat,
    /// Password, for the encrypted formats.
    pub password: Option<String>,
    /// Octal file mode; default `0600`.
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyFormat {
    /// `BEGIN PRIVATE KEY`.
    Pkcs8Pem,
    /// Binary PKCS#8.
    Pkcs8Der,
    /// `BEGIN RSA PRIVATE KEY` (RSA keys only).
    Pkcs1Pem,
    /// `BEGIN ENCRYPTED PRIVATE KEY`, PBES2 with PBKDF2-SHA256 and AES-256-CBC.
    Pkcs8EncryptedPem,
    /// The same, binary.
    Pkcs8EncryptedDer,
}

/// A loaded, validated spec: the parsed file plus what identifies its content.
#[derive(Debug, Clone)]
pub struct PkiSpec {
    pub path: PathBuf,
    pub source: String,
    pub file: SpecFile,
}

impl PkiSpec {
    /// Reads, parses and cross-checks a spec file.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let source = std::fs::read_to_string(path).map_err(|e| LoadError {
            file: path.to_path_buf(),
            line: None,
            message: format!("cannot read PKI spec: {e}"),
        })?;
        let file: SpecFile = crate::scenario::parse_toml(path, &source)?;
        let spec = PkiSpec {
            path: path.to_path_buf(),
            source,
            file,
        };
        spec.validate()?;
        Ok(spec)
    }

    fn fail(&self, needle: &str, message: String) -> LoadError {
        let line = self
            .source
            .find(needle)
            .map(|off| crate::scenario::line_of(&self.source, off));
        LoadError {
            file: self.path.clone(),
            line,
            message,
        }
    }

    fn validate(&self) -> Result<(), LoadError> {
        let f = &self.file;
        // Names become file names in the cache: nothing that leaves its directory.
        for name in self.entry_names() {
            let plain = name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c));
            if !plain {
                return Err(self.fail(
                    name,
                    format!("{name:?} is not a plain file name: use letters, digits, - _ . + (starting with a letter or digit), no / or .."),
                ));
            }
        }
        let names = |m: &BTreeMap<String, _>| m.keys().cloned().collect::<Vec<String>>();
        let list = |v: Vec<String>| v.join(", ");
        for (name, c) in f.ca.iter().chain(f.cert.iter()) {
            if let Some(issuer) = &c.issuer {
                if !f.ca.contains_key(issuer) {
                    return Err(self.fail(
                        &format!("issuer = \"{issuer}\""),
                        format!(
                            "{name}: issuer {issuer:?} is not a [ca.*]; expected one of: {}",
                            list(names(&f.ca))
                        ),
                    ));
                }
            } else if f.cert.contains_key(name) {
                return Err(self.fail(
                    name,
                    format!("cert {name}: an end-entity certificate needs an issuer"),
                ));
            }
            super::generate::parse_subject(&c.subject)
                .map_err(|m| self.fail(&c.subject, format!("{name}: {m}")))?;
            for ip in &c.ip {
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| self.fail(ip, format!("{name}: {ip:?} is not an IP address")))?;
            }
        }
        // CAs must be declared in an order where each issuer exists: reject cycles.
        for name in f.ca.keys() {
            let mut seen = BTreeSet::new();
            let mut cur = name.clone();
            while let Some(issuer) = f.ca[&cur].issuer.clone() {
                if !seen.insert(cur.clone()) {
                    return Err(self.fail(name, format!("ca {name}: issuer chain loops")));
                }
                cur = issuer;
            }
        }
        let certs: BTreeSet<&String> = f.ca.keys().chain(f.cert.keys()).collect();
        for (name, crl) in &f.crl {
            if !f.ca.contains_key(&crl.issuer) {
                return Err(self.fail(
                    name,
                    format!("crl {name}: issuer {:?} is not a [ca.*]", crl.issuer),
                ));
            }
            for r in &crl.revoke {
                let issued_by =
                    f.ca.get(r)
                        .or(f.cert.get(r))
                        .and_then(|c| c.issuer.as_ref());
                if issued_by != Some(&crl.issuer) {
                    return Err(self.fail(
                        r,
                        format!(
                            "crl {name}: revokes {r:?}, which is not a certificate issued by {:?}",
                            crl.issuer
                        ),
                    ));
                }
            }
        }
        for (name, b) in &f.bundle {
            for c in &b.certs {
                if !certs.contains(c) {
                    return Err(
                        self.fail(name, format!("bundle {name}: {c:?} is not a certificate"))
                    );
                }
            }
        }
        for (name, b) in f.crl_bundle.iter().chain(f.crl_dir.iter()) {
            for c in &b.crls {
                if !f.crl.contains_key(c) {
                    return Err(self.fail(
                        name,
                        format!(
                            "{name}: {c:?} is not a [crl.*]; expected one of: {}",
                            f.crl.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        for (name, k) in &f.key_file {
            let owner = f.ca.get(&k.key).or(f.cert.get(&k.key));
            let Some(owner) = owner else {
                return Err(self.fail(
                    name,
                    format!("key_file {name}: {:?} is not a certificate", k.key),
                ));
            };
            let encrypted = matches!(
                k.format,
                KeyFormat::Pkcs8EncryptedPem | KeyFormat::Pkcs8EncryptedDer
            );
            if encrypted != k.password.is_some() {
                return Err(self.fail(name, format!("key_file {name}: a password goes with, and only with, the encrypted formats")));
            }
            if k.format == KeyFormat::Pkcs1Pem && owner.key != KeyAlg::Rsa {
                return Err(self.fail(name, format!("key_file {name}: pkcs1-pem needs an RSA key")));
            }
            if let Some(m) = &k.mode {
                let mode = u32::from_str_radix(m, 8).map_err(|_| {
                    self.fail(m, format!("key_file {name}: mode {m:?} is not octal"))
                })?;
                if mode > 0o777 {
                    return Err(self.fail(
                        m,
                        format!("key_file {name}: mode {m:?} sets more than permission bits (at most 0777)"),
                    ));
                }
            }
        }
        for (name, db) in &f.nss_db {
            for c in db.trust.keys().chain(db.keys.iter()) {
                if !certs.contains(c) {
                    return Err(
                        self.fail(name, format!("nss_db {name}: {c:?} is not a certificate"))
                    );
                }
            }
            for (c, flags) in &db.trust {
                if !valid_trust(flags) {
                    return Err(self.fail(
                        flags,
                        format!("nss_db {name}: trust {flags:?} for {c} is not three comma-separated sets of pPcCTu flags"),
                    ));
                }
            }
            for k in &db.keys {
                if db.trust.contains_key(k) || !f.cert.contains_key(k) {
                    return Err(self.fail(
                        name,
                        format!(
                            "nss_db {name}: key {k:?} must be a [cert.*] not also listed in trust"
                        ),
                    ));
                }
            }
            for c in &db.crls {
                let Some(crl) = f.crl.get(c) else {
                    return Err(self.fail(name, format!("nss_db {name}: {c:?} is not a [crl.*]")));
                };
                if !db.trust.contains_key(&crl.issuer) {
                    return Err(self.fail(
                        name,
                        format!("nss_db {name}: CRL {c:?} needs its issuer {:?} in trust (crlutil refuses a CRL whose issuer is absent)", crl.issuer),
                    ));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for n in self.file_list() {
            if !seen.insert(n.clone()) {
                return Err(self.fail(&n, format!("two entries produce the file {n:?}")));
            }
        }
        Ok(())
    }

    /// The name of every entry, of every kind.
    fn entry_names(&self) -> impl Iterator<Item = &String> {
        let f = &self.file;
        f.ca.keys()
            .chain(f.cert.keys())
            .chain(f.crl.keys())
            .chain(f.bundle.keys())
            .chain(f.crl_bundle.keys())
            .chain(f.crl_dir.keys())
            .chain(f.key_file.keys())
            .chain(f.nss_db.keys())
    }

    fn file_list(&self) -> Vec<String> {
        let f = &self.file;
        let mut out = Vec::new();
        for n in f.ca.keys().chain(f.cert.keys()) {
            out.push(format!("{n}.crt"));
            out.push(format!("{n}.key"));
        }
        out.extend(f.crl.keys().map(|n| format!("{n}.crl")));
        out.extend(f.bundle.keys().map(|n| format!("{n}.crt")));
        out.extend(f.crl_bundle.keys().map(|n| format!("{n}.crl")));
        out.extend(f.crl_dir.keys().cloned());
        out.extend(f.key_file.keys().cloned());
        out.extend(f.nss_db.keys().map(|n| format!("{n}.nssdb")));
        out
    }

    /// Every file or directory name the spec produces; scenarios refer to these.
    pub fn file_names(&self) -> BTreeSet<String> {
        self.file_list().into_iter().collect()
    }
}

/// certutil's trust syntax: three comma-separated fields of flags from `pPcCTu`.
fn valid_trust(flags: &str) -> bool {
    let parts: Vec<&str> = flags.split(',').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| p.chars().all(|c| "pPcCTu".contains(c)))
}

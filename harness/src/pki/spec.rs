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
    /// The certificate that signs it: a `[ca.*]`, or a `[cert.*]` for an issuer that is not a
    /// CA. Absent for a self-signed root (CAs only).
    pub issuer: Option<String>,
    /// Key algorithm; default `rsa`. Not with `key_from`.
    pub key: Option<KeyAlg>,
    /// Use the key of another certificate (by name) instead of a new one: the same subject
    /// and key under two issuers is a cross-signed certificate.
    pub key_from: Option<String>,
    /// Signature hash the issuer signs with; default `sha256`.
    #[serde(default)]
    pub signature: SignatureAlg,
    /// DNS subjectAltNames, verbatim (any text, including IP-looking text).
    #[serde(default)]
    pub dns: Vec<String>,
    /// IP address subjectAltNames (v4 or v6).
    #[serde(default)]
    pub ip: Vec<String>,
    /// Extended key usages: `server_auth`, `client_auth`, `code_signing`,
    /// `email_protection`, `any` (anyExtendedKeyUsage) or a dotted OID. Empty: no extension.
    #[serde(default)]
    pub eku: Vec<String>,
    /// keyUsage bits (`digital_signature`, `content_commitment`, `key_encipherment`,
    /// `data_encipherment`, `key_agreement`, `key_cert_sign`, `crl_sign`). Absent: CAs get
    /// key_cert_sign, crl_sign and digital_signature, leaves no extension; `[]`: none.
    pub key_usage: Option<Vec<KeyUsage>>,
    /// Validity relative to generation time.
    #[serde(default)]
    pub validity: Validity,
    /// Leaves only: add a basicConstraints extension saying CA:FALSE (as an OpenSSL `v3_req`
    /// section would), which sslinfo's `ssl_extension_info()` then reports.
    #[serde(default)]
    pub basic_constraints: bool,
    /// CAs only: pathLenConstraint in basicConstraints.
    pub path_len: Option<u8>,
    /// CAs only: the nameConstraints extension (critical).
    pub name_constraints: Option<NameConstraintsSpec>,
    /// Further extensions, each with an ASN.1 NULL value: an OID no client knows, marked
    /// critical, is one a verifier must refuse.
    #[serde(default)]
    pub extra_extensions: Vec<ExtraExtension>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NameConstraintsSpec {
    /// DNS subtrees names must lie in (`example.test` covers it and its subdomains).
    #[serde(default)]
    pub permitted_dns: Vec<String>,
    /// DNS subtrees names must not lie in.
    #[serde(default)]
    pub excluded_dns: Vec<String>,
    /// IP subnets (CIDR, `192.0.2.0/24`) addresses must lie in.
    #[serde(default)]
    pub permitted_ip: Vec<String>,
    /// IP subnets addresses must not lie in.
    #[serde(default)]
    pub excluded_ip: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtraExtension {
    /// Dotted OID.
    pub oid: String,
    /// Marked critical.
    #[serde(default)]
    pub critical: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyUsage {
    DigitalSignature,
    ContentCommitment,
    KeyEncipherment,
    DataEncipherment,
    KeyAgreement,
    KeyCertSign,
    CrlSign,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlg {
    /// RSA 2048.
    #[default]
    Rsa,
    /// ECDSA P-256.
    Ec,
    /// RSA 1024 (legacy: below OpenSSL 3's default security level 2; made with OpenSSL).
    Rsa1024,
    /// RSA 2048 as an RSA-PSS key (id-RSASSA-PSS, as `openssl genpkey -algorithm rsa-pss`
    /// makes; PostgreSQL's 002 test serves one). Made with OpenSSL.
    RsaPss,
}

impl KeyAlg {
    /// rcgen can neither make these keys nor sign with them; OpenSSL does both.
    pub fn needs_openssl(self) -> bool {
        matches!(self, KeyAlg::Rsa1024 | KeyAlg::RsaPss)
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureAlg {
    /// SHA-256 (with the issuer's key type: RSA PKCS#1 v1.5, ECDSA or RSA-PSS).
    #[default]
    Sha256,
    /// SHA-1 (legacy: refused at OpenSSL 3's security level 1 and above). Made with OpenSSL.
    Sha1,
    /// SHA-384, which also makes SHA-384 the hash of tls-server-end-point channel binding.
    /// Made with OpenSSL.
    Sha384,
    /// SHA-512, likewise. Made with OpenSSL.
    Sha512,
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
    /// Serials of certificates (by name) from other issuers, listed as revoked all the same.
    #[serde(default)]
    pub revoke_foreign: Vec<String>,
    /// thisUpdate: `past` (a day before generation, default) or `future` (in a year).
    #[serde(default)]
    pub this_update: CrlTime,
    /// nextUpdate: `future` (default), `past` (thirty days ago) or `absent` (no nextUpdate).
    #[serde(default = "CrlTime::future")]
    pub next_update: CrlTime,
    /// A delta CRL (critical deltaCRLIndicator naming base CRL number 1; its own number 2).
    #[serde(default)]
    pub delta: bool,
    /// Sign with this certificate's key instead of the issuer's (the issuer name stays).
    pub signed_with: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CrlTime {
    #[default]
    Past,
    Future,
    Absent,
}

impl CrlTime {
    fn future() -> Self {
        CrlTime::Future
    }
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleSpec {
    /// CA or leaf names, in file order.
    pub certs: Vec<String>,
    /// Private keys (of CA or leaf names) appended after the certificates, PKCS#8 PEM: a
    /// certificate and its key in one file.
    #[serde(default)]
    pub keys: Vec<String>,
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
        let certs: BTreeSet<&String> = f.ca.keys().chain(f.cert.keys()).collect();
        // Every issuer chain must end in a self-signed root: reject cycles (first, as the
        // checks below follow issuers).
        for name in &certs {
            let mut seen = BTreeSet::new();
            let mut cur = (*name).clone();
            while let Some(issuer) = self.cert(&cur).and_then(|c| c.issuer.clone()) {
                if !seen.insert(cur.clone()) {
                    return Err(self.fail(name, format!("{name}: issuer chain loops")));
                }
                cur = issuer;
            }
        }
        for (name, c) in f.ca.iter().chain(f.cert.iter()) {
            let is_ca = f.ca.contains_key(name);
            if let Some(issuer) = &c.issuer {
                if !certs.contains(issuer) {
                    return Err(self.fail(
                        &format!("issuer = \"{issuer}\""),
                        format!(
                            "{name}: issuer {issuer:?} is not a [ca.*] or [cert.*]; expected one of: {}",
                            list(names(&f.ca))
                        ),
                    ));
                }
            } else if !is_ca {
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
            self.validate_extensions(name, c, is_ca)?;
        }
        let certs: BTreeSet<&String> = f.ca.keys().chain(f.cert.keys()).collect();
        for (name, crl) in &f.crl {
            if !f.ca.contains_key(&crl.issuer) {
                return Err(self.fail(
                    name,
                    format!("crl {name}: issuer {:?} is not a [ca.*]", crl.issuer),
                ));
            }
            for other in crl.signed_with.iter().chain(&crl.revoke_foreign) {
                if !certs.contains(other) {
                    return Err(self.fail(
                        other,
                        format!("crl {name}: {other:?} is not a [ca.*] or [cert.*]"),
                    ));
                }
            }
            if crl.next_update == CrlTime::Past && crl.this_update == CrlTime::Future
                || crl.this_update == CrlTime::Absent
            {
                return Err(self.fail(
                    name,
                    format!(
                        "crl {name}: this_update is past or future and comes before next_update"
                    ),
                ));
            }
            if self.uses_openssl(&crl.issuer)
                || crl
                    .signed_with
                    .as_ref()
                    .is_some_and(|s| self.uses_openssl(s))
            {
                return Err(self.fail(
                    name,
                    format!("crl {name}: CRLs are signed by rcgen, which cannot sign with an rsa1024 or rsa-pss key nor for a CA made with OpenSSL"),
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
            for c in b.certs.iter().chain(&b.keys) {
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
            if self.cert(&k.key).is_none() {
                return Err(self.fail(
                    name,
                    format!("key_file {name}: {:?} is not a certificate", k.key),
                ));
            }
            let encrypted = matches!(
                k.format,
                KeyFormat::Pkcs8EncryptedPem | KeyFormat::Pkcs8EncryptedDer
            );
            if encrypted != k.password.is_some() {
                return Err(self.fail(name, format!("key_file {name}: a password goes with, and only with, the encrypted formats")));
            }
            if k.format == KeyFormat::Pkcs1Pem
                && !matches!(self.key_alg(&k.key), KeyAlg::Rsa | KeyAlg::Rsa1024)
            {
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

    /// A CA or leaf by name.
    pub fn cert(&self, name: &str) -> Option<&CertSpec> {
        self.file.ca.get(name).or(self.file.cert.get(name))
    }

    /// The algorithm of a certificate's key, following `key_from`.
    pub fn key_alg(&self, name: &str) -> KeyAlg {
        let mut cur = name;
        for _ in 0..64 {
            let Some(c) = self.cert(cur) else { break };
            match &c.key_from {
                Some(from) => cur = from,
                None => return c.key.unwrap_or_default(),
            }
        }
        KeyAlg::default()
    }

    /// Whether the certificate is made with OpenSSL rather than rcgen: its key or signature
    /// is one rcgen cannot handle, or so is its issuer's (whose name is then copied exactly).
    pub fn uses_openssl(&self, name: &str) -> bool {
        let Some(c) = self.cert(name) else {
            return false;
        };
        self.key_alg(name).needs_openssl()
            || c.signature != SignatureAlg::Sha256
            || c.issuer.as_deref().is_some_and(|i| self.uses_openssl(i))
    }

    fn validate_extensions(&self, name: &str, c: &CertSpec, is_ca: bool) -> Result<(), LoadError> {
        if let Some(from) = &c.key_from {
            let Some(other) = self.cert(from) else {
                return Err(self.fail(
                    &format!("key_from = \"{from}\""),
                    format!("{name}: key_from {from:?} is not a [ca.*] or [cert.*]"),
                ));
            };
            if other.key_from.is_some() || c.key.is_some() || from == name {
                return Err(self.fail(
                    &format!("key_from = \"{from}\""),
                    format!("{name}: key_from must name a certificate with its own key, and goes without `key`"),
                ));
            }
        }
        if !is_ca && (c.path_len.is_some() || c.name_constraints.is_some()) {
            return Err(self.fail(
                name,
                format!("cert {name}: path_len and name_constraints belong to [ca.*]"),
            ));
        }
        if is_ca && c.basic_constraints {
            return Err(self.fail(
                name,
                format!("ca {name}: basic_constraints (CA:FALSE) is for leaves; a [cert.*] can be an issuer"),
            ));
        }
        for e in &c.eku {
            if super::generate::eku_oid(e).is_none() {
                return Err(self.fail(
                    e,
                    format!("{name}: eku {e:?} is not server_auth, client_auth, code_signing, email_protection, any or a dotted OID"),
                ));
            }
        }
        for x in &c.extra_extensions {
            if super::generate::parse_oid(&x.oid).is_none() {
                return Err(self.fail(
                    &x.oid,
                    format!("{name}: extension OID {:?} is not dotted decimal", x.oid),
                ));
            }
        }
        if let Some(nc) = &c.name_constraints {
            for cidr in nc.permitted_ip.iter().chain(&nc.excluded_ip) {
                if cidr.parse::<rcgen::CidrSubnet>().is_err() || !cidr.contains('/') {
                    return Err(self.fail(
                        cidr,
                        format!("{name}: name constraint {cidr:?} is not a CIDR subnet like 192.0.2.0/24"),
                    ));
                }
            }
        }
        if self.uses_openssl(name)
            && (c.name_constraints.is_some() || !c.extra_extensions.is_empty())
        {
            return Err(self.fail(
                name,
                format!("{name}: name_constraints and extra_extensions are not supported on certificates made with OpenSSL (legacy keys or signatures)"),
            ));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn load(body: &str) -> Result<PkiSpec, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pki.toml");
        std::fs::write(&path, body).unwrap();
        PkiSpec::load(&path)
    }

    const ROOT: &str = "[ca.root]\nsubject = \"/CN=r\"\n";

    fn error(body: &str) -> String {
        let e = load(&format!("{ROOT}{body}")).expect_err("must not load");
        format!(
            "{}:{}: {}",
            e.file.display(),
            e.line.unwrap_or(0),
            e.message
        )
    }

    #[test]
    fn extensions_load() {
        let spec = load(&format!(
            "{ROOT}[ca.cross]\nissuer = \"root\"\nkey_from = \"leaf\"\nsubject = \"/CN=x\"\npath_len = 0\n\
             name_constraints = {{ permitted_dns = [\"a.test\"], excluded_ip = [\"192.0.2.0/24\"] }}\n\
             [cert.leaf]\nissuer = \"root\"\nsubject = \"/CN=l\"\neku = [\"any\", \"1.2.3.4\"]\nkey_usage = []\n\
             extra_extensions = [{{ oid = \"1.3.6.1.4.1.55555.1\", critical = true }}]\n\
             [cert.below-leaf]\nissuer = \"leaf\"\nsubject = \"/CN=b\"\nsignature = \"sha1\"\n\
             [crl.c]\nissuer = \"root\"\nnext_update = \"absent\"\ndelta = true\nsigned_with = \"leaf\"\nrevoke_foreign = [\"below-leaf\"]\n\
             [bundle.both]\ncerts = [\"leaf\"]\nkeys = [\"leaf\"]\n"
        ))
        .unwrap();
        assert!(spec.uses_openssl("below-leaf"));
        assert!(!spec.uses_openssl("leaf"));
        assert_eq!(spec.key_alg("cross"), KeyAlg::Rsa);
    }

    #[test]
    fn bad_extensions_are_located() {
        let e = error("[cert.l]\nissuer = \"root\"\nsubject = \"/CN=l\"\nkey_from = \"nobody\"\n");
        assert!(e.contains(":6: l: key_from \"nobody\""), "{e}");
        let e = error("[cert.l]\nissuer = \"root\"\nsubject = \"/CN=l\"\neku = [\"serverauth\"]\n");
        assert!(e.contains(":6:") && e.contains("dotted OID"), "{e}");
        let e = error("[ca.i]\nissuer = \"root\"\nsubject = \"/CN=i\"\nname_constraints = { permitted_ip = [\"192.0.2.1\"] }\n");
        assert!(e.contains(":6:") && e.contains("CIDR"), "{e}");
        let e = error("[cert.l]\nissuer = \"root\"\nsubject = \"/CN=l\"\npath_len = 1\n");
        assert!(e.contains("belong to [ca.*]"), "{e}");
        let e =
            error("[ca.old]\nsubject = \"/CN=o\"\nkey = \"rsa-pss\"\n[crl.c]\nissuer = \"old\"\n");
        assert!(e.contains("crl c:") && e.contains("rsa-pss"), "{e}");
        let e =
            error("[crl.c]\nissuer = \"root\"\nthis_update = \"future\"\nnext_update = \"past\"\n");
        assert!(e.contains("this_update"), "{e}");
        let e = error("[cert.a]\nissuer = \"b\"\nsubject = \"/CN=a\"\n[cert.b]\nissuer = \"a\"\nsubject = \"/CN=b\"\n");
        assert!(e.contains("loops"), "{e}");
    }
}

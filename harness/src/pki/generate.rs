//! Turns a PKI spec into files: rcgen for certificates and CRLs, the pkcs8 crate for key
//! encodings rcgen does not write, and OpenSSL's name hash for the hashed CRL directory layout.

use super::spec::{CertSpec, Eku, KeyAlg, KeyFormat, PkiSpec, Validity};
use anyhow::{anyhow, Context, Result};
use pkcs8::der::pem::LineEnding;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use time::{Duration, OffsetDateTime};

/// Parses `/CN=a/OU=b/OU=c/O=d` into (attribute, value) pairs, in order.
pub fn parse_subject(subject: &str) -> Result<Vec<(String, String)>, String> {
    let body = subject
        .strip_prefix('/')
        .ok_or_else(|| format!("subject {subject:?} must start with '/' (OpenSSL slash form)"))?;
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            '/' => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("subject part {p:?} is not ATTR=value"))?;
            if dn_oid(k).is_none() {
                return Err(format!("unknown subject attribute {k:?}; expected one of CN, O, OU, C, ST, L, emailAddress, DC"));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn dn_oid(attr: &str) -> Option<&'static [u64]> {
    Some(match attr {
        "CN" => &[2, 5, 4, 3],
        "C" => &[2, 5, 4, 6],
        "L" => &[2, 5, 4, 7],
        "ST" => &[2, 5, 4, 8],
        "O" => &[2, 5, 4, 10],
        "OU" => &[2, 5, 4, 11],
        "emailAddress" => &[1, 2, 840, 113549, 1, 9, 1],
        "DC" => &[0, 9, 2342, 19200300, 100, 1, 25],
        _ => return None,
    })
}

/// rcgen keys a DN by attribute type, so a repeated attribute (OU twice) is pushed a second
/// time under the custom-OID spelling of the same type: the encoding is identical.
fn distinguished_name(subject: &str) -> Result<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (attr, value) in parse_subject(subject).map_err(|e| anyhow!(e))? {
        let count = seen.entry(attr.clone()).or_default();
        *count += 1;
        let oid = dn_oid(&attr).expect("validated");
        let ty = match (*count, attr.as_str()) {
            (1, "CN") => DnType::CommonName,
            (1, "O") => DnType::OrganizationName,
            (1, "OU") => DnType::OrganizationalUnitName,
            (1, "C") => DnType::CountryName,
            (1, "ST") => DnType::StateOrProvinceName,
            (1, "L") => DnType::LocalityName,
            (1, _) | (2, "CN" | "O" | "OU" | "C" | "ST" | "L") => {
                DnType::CustomDnType(oid.to_vec())
            }
            _ => {
                return Err(anyhow!(
                "subject {subject:?}: attribute {attr} appears more often than rcgen can encode"
            ))
            }
        };
        dn.push(ty, value);
    }
    Ok(dn)
}

/// A stable serial per certificate name, so CRLs and session checks can rely on it.
pub fn serial_for(name: &str) -> Vec<u8> {
    let digest = Sha256::digest(format!("pgssl serial {name}").as_bytes());
    let mut bytes = digest[..8].to_vec();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    bytes
}

fn new_key(alg: KeyAlg) -> Result<KeyPair> {
    Ok(match alg {
        KeyAlg::Rsa => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
        }
        KeyAlg::Ec => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
    })
}

fn params_for(
    name: &str,
    spec: &CertSpec,
    is_ca: bool,
    now: OffsetDateTime,
) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name = distinguished_name(&spec.subject)?;
    p.serial_number = Some(SerialNumber::from_slice(&serial_for(name)));
    let (nb, na) = match spec.validity {
        Validity::Valid => (now - Duration::days(1), now + Duration::days(3650)),
        Validity::Expired => (now - Duration::days(730), now - Duration::days(365)),
        Validity::NotYetValid => (now + Duration::days(1825), now + Duration::days(3650)),
    };
    p.not_before = nb;
    p.not_after = na;
    for d in &spec.dns {
        p.subject_alt_names
            .push(SanType::DnsName(d.clone().try_into()?));
    }
    for ip in &spec.ip {
        p.subject_alt_names.push(SanType::IpAddress(ip.parse()?));
    }
    p.extended_key_usages = spec
        .eku
        .iter()
        .map(|e| match e {
            Eku::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Eku::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    if !is_ca && spec.basic_constraints {
        p.is_ca = IsCa::ExplicitNoCa;
    }
    if is_ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    }
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    Ok(p)
}

struct Issued {
    pem: String,
    der: Vec<u8>,
    key: KeyPair,
}

impl Issued {
    fn new(cert: &rcgen::Certificate, key: KeyPair) -> Self {
        Issued {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            key,
        }
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes every file of `spec` into the empty directory `out`.
pub fn generate(spec: &PkiSpec, out: &Path) -> Result<()> {
    let f = &spec.file;
    let now = OffsetDateTime::now_utc();
    let mut issued: BTreeMap<String, Issued> = BTreeMap::new();
    let mut issuers: BTreeMap<String, Issuer<'static, KeyPair>> = BTreeMap::new();

    // CAs in dependency order: repeatedly issue those whose issuer exists.
    let mut pending: Vec<&String> = f.ca.keys().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut still = Vec::new();
        for name in pending {
            let spec_ca = &f.ca[name];
            let ready = spec_ca
                .issuer
                .as_ref()
                .is_none_or(|i| issuers.contains_key(i));
            if !ready {
                still.push(name);
                continue;
            }
            let params = params_for(name, spec_ca, true, now)?;
            let key = new_key(spec_ca.key)?;
            let cert = match &spec_ca.issuer {
                None => params.self_signed(&key)?,
                Some(i) => params.signed_by(&key, &issuers[i])?,
            };
            let own_key = KeyPair::from_pem(&key.serialize_pem())?;
            issuers.insert(name.clone(), Issuer::new(params, own_key));
            issued.insert(name.clone(), Issued::new(&cert, key));
        }
        if still.len() == before {
            return Err(anyhow!("CA issuer chain cannot be resolved"));
        }
        pending = still;
    }
    for (name, leaf) in &f.cert {
        let params = params_for(name, leaf, false, now)?;
        let key = new_key(leaf.key)?;
        let issuer = leaf.issuer.as_ref().expect("validated");
        let cert = params.signed_by(&key, &issuers[issuer])?;
        issued.insert(name.clone(), Issued::new(&cert, key));
    }
    for (name, i) in &issued {
        write(&out.join(format!("{name}.crt")), i.pem.as_bytes(), 0o644)?;
        write(
            &out.join(format!("{name}.key")),
            i.key.serialize_pem().as_bytes(),
            0o600,
        )?;
    }

    let mut crls: BTreeMap<&String, (String, String)> = BTreeMap::new();
    for (name, c) in &f.crl {
        let next = if c.expired {
            now - Duration::days(30)
        } else {
            now + Duration::days(3650)
        };
        let params = CertificateRevocationListParams {
            this_update: now - Duration::days(if c.expired { 60 } else { 1 }),
            next_update: next,
            crl_number: SerialNumber::from_slice(&[1]),
            issuing_distribution_point: None,
            revoked_certs: c
                .revoke
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial_for(r)),
                    revocation_time: now - Duration::days(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuers[&c.issuer])?;
        let pem = crl.pem()?;
        write(&out.join(format!("{name}.crl")), pem.as_bytes(), 0o644)?;
        crls.insert(name, (pem, c.issuer.clone()));
    }
    for (name, b) in &f.bundle {
        let body: String = b.certs.iter().map(|c| issued[c].pem.as_str()).collect();
        write(&out.join(format!("{name}.crt")), body.as_bytes(), 0o644)?;
    }
    for (name, b) in &f.crl_bundle {
        let body: String = b.crls.iter().map(|c| crls[c].0.as_str()).collect();
        write(&out.join(format!("{name}.crl")), body.as_bytes(), 0o644)?;
    }
    for (name, b) in &f.crl_dir {
        let dir = out.join(name);
        fs::create_dir(&dir)?;
        let mut used: BTreeMap<u32, u32> = BTreeMap::new();
        for c in &b.crls {
            let (pem, issuer) = &crls[c];
            let hash = openssl::x509::X509::from_der(&issued[issuer].der)?.subject_name_hash();
            let n = used.entry(hash).or_default();
            write(&dir.join(format!("{hash:08x}.r{n}")), pem.as_bytes(), 0o644)?;
            *n += 1;
        }
    }
    for (name, k) in &f.key_file {
        let der = issued[&k.key].key.serialize_der();
        let bytes = encode_key(name, &der, k.format, k.password.as_deref())?;
        let mode = k
            .mode
            .as_deref()
            .map_or(0o600, |m| u32::from_str_radix(m, 8).unwrap_or(0o600));
        write(&out.join(name), &bytes, mode)?;
    }
    for (name, db) in &f.nss_db {
        nss_db(spec, out, name, db)?;
    }
    Ok(())
}

/// Builds a declared NSS database from the files generated above and checks that NSS lists
/// exactly what the spec declared.
fn nss_db(spec: &PkiSpec, out: &Path, name: &str, db: &super::spec::NssDbSpec) -> Result<()> {
    let plan = super::nss::DbPlan {
        certs: db
            .trust
            .iter()
            .map(|(c, t)| (c.clone(), out.join(format!("{c}.crt")), t.clone()))
            .collect(),
        keys: db
            .keys
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    out.join(format!("{k}.crt")),
                    out.join(format!("{k}.key")),
                )
            })
            .collect(),
        crls: db
            .crls
            .iter()
            .map(|c| out.join(format!("{c}.crl")))
            .collect(),
        password: db.password.clone(),
    };
    let dir = out.join(format!("{name}.nssdb"));
    super::nss::build(&dir, &plan).with_context(|| format!("nss_db {name}"))?;
    let issuers = db
        .crls
        .iter()
        .map(|c| spec.file.crl[c].issuer.clone())
        .collect();
    let want = super::nss::expected_listing(&plan, issuers);
    let got = super::nss::list(&dir)?;
    if got != want {
        anyhow::bail!("nss_db {name}: NSS lists {got:?}, the spec declares {want:?}");
    }
    Ok(())
}

fn encode_key(
    name: &str,
    pkcs8_der: &[u8],
    format: KeyFormat,
    password: Option<&str>,
) -> Result<Vec<u8>> {
    let pem = |label: &'static str, der: &[u8]| -> Result<Vec<u8>> {
        Ok(pkcs8::der::pem::encode_string(label, LineEnding::LF, der)
            .map_err(|e| anyhow!("{e}"))?
            .into_bytes())
    };
    let encrypt = || -> Result<Vec<u8>> {
        let info = pkcs8::PrivateKeyInfo::try_from(pkcs8_der).map_err(|e| anyhow!("{e}"))?;
        // Salt and IV derive from the file name: reproducible, and distinct per file.
        let seed = Sha256::digest(format!("pgssl key {name}").as_bytes());
        let iv: [u8; 16] = seed[16..32].try_into()?;
        let params =
            pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &seed[..16], &iv)
                .map_err(|e| anyhow!("{e}"))?;
        let doc = info
            .encrypt_with_params(params, password.unwrap_or_default())
            .map_err(|e| anyhow!("{e}"))?;
        Ok(doc.as_bytes().to_vec())
    };
    match format {
        KeyFormat::Pkcs8Pem => pem("PRIVATE KEY", pkcs8_der),
        KeyFormat::Pkcs8Der => Ok(pkcs8_der.to_vec()),
        KeyFormat::Pkcs1Pem => {
            let info = pkcs8::PrivateKeyInfo::try_from(pkcs8_der).map_err(|e| anyhow!("{e}"))?;
            pem("RSA PRIVATE KEY", info.private_key)
        }
        KeyFormat::Pkcs8EncryptedDer => encrypt(),
        KeyFormat::Pkcs8EncryptedPem => pem("ENCRYPTED PRIVATE KEY", &encrypt()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_keeps_order_and_escapes() {
        let parts = parse_subject("/CN=a\\/b/OU=x/OU=y/O=PGDG").unwrap();
        assert_eq!(parts[0], ("CN".into(), "a/b".into()));
        assert_eq!(parts[2], ("OU".into(), "y".into()));
        assert!(parse_subject("CN=x").is_err());
        assert!(parse_subject("/XX=1")
            .unwrap_err()
            .contains("unknown subject attribute"));
    }
}

//! Turns a PKI spec into files: rcgen for certificates and CRLs, the pkcs8 crate for key
//! encodings rcgen does not write, and OpenSSL's name hash for the hashed CRL directory layout.
//! OpenSSL (the openssl crate) makes what rcgen cannot: RSA-1024 and RSA-PSS keys, SHA-1
//! signatures, and it re-signs the CRLs x509-cert edits (no nextUpdate, delta CRLs).

use super::spec::{
    CertSpec, CrlSpec, CrlTime, KeyAlg, KeyFormat, KeyUsage, PkiSpec, SignatureAlg, Validity,
};
use anyhow::{anyhow, Context, Result};
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use pkcs8::der::pem::LineEnding;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CidrSubnet,
    CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, NameConstraints, RevokedCertParams, SanType,
    SerialNumber,
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

/// Dotted decimal to arcs; `None` unless at least two arcs.
pub fn parse_oid(text: &str) -> Option<Vec<u64>> {
    let arcs: Vec<u64> = text
        .split('.')
        .map(|a| a.parse().ok())
        .collect::<Option<_>>()?;
    (arcs.len() >= 2 && arcs[0] <= 2).then_some(arcs)
}

/// An extendedKeyUsage purpose by name, or a dotted OID.
pub fn eku_oid(name: &str) -> Option<Vec<u64>> {
    let kp = |n: u64| vec![1, 3, 6, 1, 5, 5, 7, 3, n];
    Some(match name {
        "server_auth" => kp(1),
        "client_auth" => kp(2),
        "code_signing" => kp(3),
        "email_protection" => kp(4),
        "any" => vec![2, 5, 29, 37, 0],
        other => parse_oid(other)?,
    })
}

fn dotted(arcs: &[u64]) -> String {
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// A private key as PKCS#8, which both rcgen and OpenSSL read.
#[derive(Clone)]
struct Key {
    pem: String,
    der: Vec<u8>,
}

impl Key {
    fn rcgen(&self) -> Result<KeyPair> {
        Ok(KeyPair::from_pem(&self.pem)?)
    }

    fn openssl(&self) -> Result<PKey<Private>> {
        Ok(PKey::private_key_from_pkcs8(&self.der)?)
    }

    /// The SubjectPublicKeyInfo, DER.
    fn spki(&self) -> Result<Vec<u8>> {
        Ok(self.openssl()?.public_key_to_der()?)
    }
}

fn new_key(alg: KeyAlg) -> Result<Key> {
    let from_rcgen = |k: KeyPair| Key {
        pem: k.serialize_pem(),
        der: k.serialize_der(),
    };
    let from_openssl = |k: PKey<Private>| -> Result<Key> {
        Ok(Key {
            pem: String::from_utf8(k.private_key_to_pem_pkcs8()?)?,
            der: k.private_key_to_pkcs8()?,
        })
    };
    match alg {
        KeyAlg::Rsa => Ok(from_rcgen(KeyPair::generate_rsa_for(
            &rcgen::PKCS_RSA_SHA256,
            rcgen::RsaKeySize::_2048,
        )?)),
        KeyAlg::Ec => Ok(from_rcgen(KeyPair::generate_for(
            &rcgen::PKCS_ECDSA_P256_SHA256,
        )?)),
        KeyAlg::Rsa1024 => from_openssl(PKey::from_rsa(openssl::rsa::Rsa::generate(1024)?)?),
        KeyAlg::RsaPss => {
            let mut ctx = PkeyCtx::new_id(Id::RSA_PSS)?;
            ctx.keygen_init()?;
            ctx.set_rsa_keygen_bits(2048)?;
            from_openssl(ctx.keygen()?)
        }
    }
}

fn validity(v: Validity, now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    match v {
        Validity::Valid => (now - Duration::days(1), now + Duration::days(3650)),
        Validity::Expired => (now - Duration::days(730), now - Duration::days(365)),
        Validity::NotYetValid => (now + Duration::days(1825), now + Duration::days(3650)),
    }
}

/// keyUsage as written, or the default: CAs sign certificates and CRLs, leaves say nothing.
fn key_usages(spec: &CertSpec, is_ca: bool) -> Vec<KeyUsage> {
    spec.key_usage.clone().unwrap_or(if is_ca {
        vec![
            KeyUsage::KeyCertSign,
            KeyUsage::CrlSign,
            KeyUsage::DigitalSignature,
        ]
    } else {
        Vec::new()
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
    (p.not_before, p.not_after) = validity(spec.validity, now);
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
        .map(|e| ExtendedKeyUsagePurpose::Other(eku_oid(e).expect("validated")))
        .collect();
    if !is_ca && spec.basic_constraints {
        p.is_ca = IsCa::ExplicitNoCa;
    }
    if is_ca {
        p.is_ca = IsCa::Ca(match spec.path_len {
            Some(n) => BasicConstraints::Constrained(n),
            None => BasicConstraints::Unconstrained,
        });
    }
    p.key_usages = key_usages(spec, is_ca)
        .into_iter()
        .map(|k| match k {
            KeyUsage::DigitalSignature => KeyUsagePurpose::DigitalSignature,
            KeyUsage::ContentCommitment => KeyUsagePurpose::ContentCommitment,
            KeyUsage::KeyEncipherment => KeyUsagePurpose::KeyEncipherment,
            KeyUsage::DataEncipherment => KeyUsagePurpose::DataEncipherment,
            KeyUsage::KeyAgreement => KeyUsagePurpose::KeyAgreement,
            KeyUsage::KeyCertSign => KeyUsagePurpose::KeyCertSign,
            KeyUsage::CrlSign => KeyUsagePurpose::CrlSign,
        })
        .collect();
    if let Some(nc) = &spec.name_constraints {
        let dns = |v: &[String]| -> Vec<GeneralSubtree> {
            v.iter()
                .map(|d| GeneralSubtree::DnsName(d.clone()))
                .collect()
        };
        let ip = |v: &[String]| -> Result<Vec<GeneralSubtree>> {
            v.iter()
                .map(|c| {
                    c.parse::<CidrSubnet>()
                        .map(GeneralSubtree::IpAddress)
                        .map_err(|_| anyhow!("{c:?} is not a CIDR subnet"))
                })
                .collect()
        };
        p.name_constraints = Some(NameConstraints {
            permitted_subtrees: dns(&nc.permitted_dns)
                .into_iter()
                .chain(ip(&nc.permitted_ip)?)
                .collect(),
            excluded_subtrees: dns(&nc.excluded_dns)
                .into_iter()
                .chain(ip(&nc.excluded_ip)?)
                .collect(),
        });
    }
    for x in &spec.extra_extensions {
        // The value is ASN.1 NULL: what matters is the OID and its criticality.
        let mut ext = CustomExtension::from_oid_content(
            &parse_oid(&x.oid).expect("validated"),
            vec![0x05, 0x00],
        );
        ext.set_criticality(x.critical);
        p.custom_extensions.push(ext);
    }
    p.use_authority_key_identifier_extension = true;
    p.key_identifier_method = KeyIdMethod::Sha256;
    Ok(p)
}

/// rcgen's key identifier (RFC 7093 method 1: SHA-256 of the SubjectPublicKeyInfo, cut to
/// 20 bytes), so certificates made by either library agree on SKI and AKI.
fn key_id(key: &Key) -> Result<Vec<u8>> {
    Ok(Sha256::digest(key.spki()?)[..20].to_vec())
}

/// A certificate made with OpenSSL, for what rcgen cannot sign: RSA-1024 and RSA-PSS keys
/// and SHA-1 signatures. The issuer name is copied from the issuer's certificate, byte for
/// byte, so chains built across both libraries match.
fn openssl_cert(
    name: &str,
    spec: &CertSpec,
    is_ca: bool,
    now: OffsetDateTime,
    key: &Key,
    issuer: Option<(&Issued, &Key)>,
) -> Result<(String, Vec<u8>)> {
    use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
    use openssl::bn::BigNum;
    use openssl::x509::extension as ext;
    use openssl::x509::{X509Extension, X509NameBuilder, X509};
    let pkey = key.openssl()?;
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = BigNum::from_slice(&serial_for(name))?;
    let serial = Asn1Integer::from_bn(&serial)?;
    b.set_serial_number(&serial)?;
    let mut subject = X509NameBuilder::new()?;
    for (attr, value) in parse_subject(&spec.subject).map_err(|e| anyhow!(e))? {
        subject.append_entry_by_text(&attr, &value)?;
    }
    let subject = subject.build();
    b.set_subject_name(&subject)?;
    let issuer_cert = issuer.map(|(i, _)| X509::from_der(&i.der)).transpose()?;
    match &issuer_cert {
        Some(c) => b.set_issuer_name(c.subject_name())?,
        None => b.set_issuer_name(&subject)?,
    }
    let (nb, na) = validity(spec.validity, now);
    let (nb, na) = (
        Asn1Time::from_unix(nb.unix_timestamp())?,
        Asn1Time::from_unix(na.unix_timestamp())?,
    );
    b.set_not_before(&nb)?;
    b.set_not_after(&na)?;
    b.set_pubkey(&pkey)?;
    if is_ca {
        let mut bc = ext::BasicConstraints::new();
        bc.critical().ca();
        if let Some(n) = spec.path_len {
            bc.pathlen(n.into());
        }
        b.append_extension(bc.build()?)?;
    } else if spec.basic_constraints {
        b.append_extension(ext::BasicConstraints::new().critical().build()?)?;
    }
    let usages = key_usages(spec, is_ca);
    if !usages.is_empty() {
        let mut ku = ext::KeyUsage::new();
        ku.critical();
        for u in usages {
            match u {
                KeyUsage::DigitalSignature => ku.digital_signature(),
                KeyUsage::ContentCommitment => ku.non_repudiation(),
                KeyUsage::KeyEncipherment => ku.key_encipherment(),
                KeyUsage::DataEncipherment => ku.data_encipherment(),
                KeyUsage::KeyAgreement => ku.key_agreement(),
                KeyUsage::KeyCertSign => ku.key_cert_sign(),
                KeyUsage::CrlSign => ku.crl_sign(),
            };
        }
        b.append_extension(ku.build()?)?;
    }
    if !spec.eku.is_empty() {
        let mut eku = ext::ExtendedKeyUsage::new();
        for e in &spec.eku {
            eku.other(&dotted(&eku_oid(e).expect("validated")));
        }
        b.append_extension(eku.build()?)?;
    }
    if !spec.dns.is_empty() || !spec.ip.is_empty() {
        let mut san = ext::SubjectAlternativeName::new();
        for d in &spec.dns {
            san.dns(d);
        }
        for ip in &spec.ip {
            san.ip(ip);
        }
        let ctx = b.x509v3_context(issuer_cert.as_deref(), None);
        let san = san.build(&ctx)?;
        b.append_extension(san)?;
    }
    let own_id = key_id(key)?;
    let issuer_id = match issuer {
        Some((_, k)) => key_id(k)?,
        None => own_id.clone(),
    };
    let raw_extension = |oid: &str, der: Vec<u8>| -> Result<X509Extension> {
        let oid = Asn1Object::from_str(oid)?;
        let value = Asn1OctetString::new_from_bytes(&der)?;
        Ok(X509Extension::new_from_der(&oid, false, &value)?)
    };
    let mut ski = vec![0x04, own_id.len() as u8];
    ski.extend(&own_id);
    b.append_extension(raw_extension("2.5.29.14", ski)?)?;
    let mut aki = vec![0x30, issuer_id.len() as u8 + 2, 0x80, issuer_id.len() as u8];
    aki.extend(&issuer_id);
    b.append_extension(raw_extension("2.5.29.35", aki)?)?;
    let signer = match issuer {
        Some((_, k)) => k.openssl()?,
        None => pkey,
    };
    let digest = match spec.signature {
        SignatureAlg::Sha256 => MessageDigest::sha256(),
        SignatureAlg::Sha1 => MessageDigest::sha1(),
        SignatureAlg::Sha384 => MessageDigest::sha384(),
        SignatureAlg::Sha512 => MessageDigest::sha512(),
    };
    b.sign(&signer, digest)?;
    let cert = b.build();
    Ok((String::from_utf8(cert.to_pem()?)?, cert.to_der()?))
}

struct Issued {
    pem: String,
    der: Vec<u8>,
    key: Key,
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The rcgen issuer for `name`: its parameters (for its name and key identifier) and a key,
/// its own or, for a CRL signed by a stranger, another one.
fn rcgen_issuer(
    spec: &PkiSpec,
    name: &str,
    key: &Key,
    now: OffsetDateTime,
) -> Result<Issuer<'static, KeyPair>> {
    let c = spec.cert(name).expect("validated");
    let mut params = params_for(name, c, spec.file.ca.contains_key(name), now)?;
    // rcgen refuses to sign for an issuer whose keyUsage lacks keyCertSign or cRLSign; the
    // spec may want exactly such a certificate or list, so the check is left to the clients.
    params.key_usages.clear();
    Ok(Issuer::new(params, key.rcgen()?))
}

/// Writes every file of `spec` into the empty directory `out`.
pub fn generate(spec: &PkiSpec, out: &Path) -> Result<()> {
    let f = &spec.file;
    let now = OffsetDateTime::now_utc();
    let all: BTreeMap<&String, (&CertSpec, bool)> =
        f.ca.iter()
            .map(|(n, c)| (n, (c, true)))
            .chain(f.cert.iter().map(|(n, c)| (n, (c, false))))
            .collect();
    // Keys first, so `key_from` can name any certificate.
    let mut keys: BTreeMap<&String, Key> = BTreeMap::new();
    for (name, (c, _)) in &all {
        if c.key_from.is_none() {
            keys.insert(name, new_key(c.key.unwrap_or_default())?);
        }
    }
    for (name, (c, _)) in &all {
        if let Some(from) = &c.key_from {
            let k = keys[from].clone();
            keys.insert(name, k);
        }
    }
    let mut issued: BTreeMap<String, Issued> = BTreeMap::new();
    // In dependency order: repeatedly issue those whose issuer exists.
    let mut pending: Vec<&String> = all.keys().copied().collect();
    while !pending.is_empty() {
        let before = pending.len();
        let mut still = Vec::new();
        for name in pending {
            let (c, is_ca) = all[name];
            if c.issuer.as_ref().is_some_and(|i| !issued.contains_key(i)) {
                still.push(name);
                continue;
            }
            let key = &keys[name];
            let (pem, der) = if spec.uses_openssl(name) {
                let issuer = c.issuer.as_ref().map(|i| (&issued[i], &keys[i]));
                openssl_cert(name, c, is_ca, now, key, issuer)?
            } else {
                let params = params_for(name, c, is_ca, now)?;
                let cert = match &c.issuer {
                    None => params.self_signed(&key.rcgen()?)?,
                    Some(i) => {
                        params.signed_by(&key.rcgen()?, &rcgen_issuer(spec, i, &keys[i], now)?)?
                    }
                };
                (cert.pem(), cert.der().to_vec())
            };
            issued.insert(
                name.clone(),
                Issued {
                    pem,
                    der,
                    key: key.clone(),
                },
            );
        }
        if still.len() == before {
            return Err(anyhow!("issuer chain cannot be resolved"));
        }
        pending = still;
    }
    for (name, i) in &issued {
        write(&out.join(format!("{name}.crt")), i.pem.as_bytes(), 0o644)?;
        write(
            &out.join(format!("{name}.key")),
            i.key.pem.as_bytes(),
            0o600,
        )?;
    }

    let mut crls: BTreeMap<&String, (String, String)> = BTreeMap::new();
    for (name, c) in &f.crl {
        let pem = crl(spec, c, &issued, now)?;
        write(&out.join(format!("{name}.crl")), pem.as_bytes(), 0o644)?;
        crls.insert(name, (pem, c.issuer.clone()));
    }
    for (name, b) in &f.bundle {
        let mut body: String = b.certs.iter().map(|c| issued[c].pem.as_str()).collect();
        body.extend(b.keys.iter().map(|k| issued[k].key.pem.as_str()));
        // A file with a private key in it is private, as libpq demands of key files.
        let mode = if b.keys.is_empty() { 0o644 } else { 0o600 };
        write(&out.join(format!("{name}.crt")), body.as_bytes(), mode)?;
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
        let der = &issued[&k.key].key.der;
        let bytes = encode_key(name, der, k.format, k.password.as_deref())?;
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

/// One CRL, PEM. rcgen writes it; what rcgen cannot say (no nextUpdate, a delta CRL) is
/// edited into the encoded list afterwards and signed again with OpenSSL.
fn crl(
    spec: &PkiSpec,
    c: &CrlSpec,
    issued: &BTreeMap<String, Issued>,
    now: OffsetDateTime,
) -> Result<String> {
    let this_update = match c.this_update {
        CrlTime::Future => now + Duration::days(365),
        CrlTime::Past | CrlTime::Absent => {
            now - Duration::days(if c.next_update == CrlTime::Past {
                60
            } else {
                1
            })
        }
    };
    let next_update = match c.next_update {
        CrlTime::Past => now - Duration::days(30),
        // rcgen needs one; an absent nextUpdate is removed below.
        CrlTime::Future | CrlTime::Absent => this_update + Duration::days(3650),
    };
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from_slice(&[if c.delta { 2 } else { 1 }]),
        issuing_distribution_point: None,
        revoked_certs: c
            .revoke
            .iter()
            .chain(&c.revoke_foreign)
            .map(|r| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial_for(r)),
                revocation_time: now - Duration::days(1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let signer = &issued[c.signed_with.as_ref().unwrap_or(&c.issuer)].key;
    let list = params.signed_by(&rcgen_issuer(spec, &c.issuer, signer, now)?)?;
    if c.next_update != CrlTime::Absent && !c.delta {
        return Ok(list.pem()?);
    }
    use x509_cert::der::{Decode, Encode};
    let mut decoded = x509_cert::crl::CertificateList::from_der(list.der())
        .map_err(|e| anyhow!("decoding rcgen's CRL: {e}"))?;
    let tbs = &mut decoded.tbs_cert_list;
    if c.next_update == CrlTime::Absent {
        tbs.next_update = None;
    }
    if c.delta {
        // deltaCRLIndicator, critical: BaseCRLNumber 1.
        tbs.crl_extensions
            .get_or_insert_with(Vec::new)
            .push(x509_cert::ext::Extension {
                extn_id: x509_cert::der::asn1::ObjectIdentifier::new_unwrap("2.5.29.27"),
                critical: true,
                extn_value: x509_cert::der::asn1::OctetString::new(vec![0x02, 0x01, 0x01])
                    .map_err(|e| anyhow!("{e}"))?,
            });
    }
    let tbs_der = tbs.to_der().map_err(|e| anyhow!("{e}"))?;
    let signing_key = signer.openssl()?;
    let mut signer_ctx = openssl::sign::Signer::new(MessageDigest::sha256(), &signing_key)?;
    let sig = signer_ctx.sign_oneshot_to_vec(&tbs_der)?;
    decoded.signature =
        x509_cert::der::asn1::BitString::from_bytes(&sig).map_err(|e| anyhow!("{e}"))?;
    let der = decoded.to_der().map_err(|e| anyhow!("{e}"))?;
    pkcs8::der::pem::encode_string("X509 CRL", LineEnding::LF, &der).map_err(|e| anyhow!("{e}"))
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

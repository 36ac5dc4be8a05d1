//! tokio-postgres with rustls (through tokio-postgres-rustls), configured the way a user of
//! that driver would port libpq settings: the conninfo string goes to `tokio_postgres::Config`,
//! and the TLS options become a `rustls::ClientConfig` verified by webpki
//! (`WebPkiServerVerifier`, which also takes the CRLs). What rustls cannot express is reported
//! as `unsupported` or as the error a user would hit.

use super::{server_messages, ClientStack, ConnectRequest};
use crate::error_class::ErrorClass;
use crate::facts::ClientFacts;
use crate::outcome::{Outcome, Session};
use futures_util::future::BoxFuture;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
};
use std::collections::HashMap;
use std::error::Error as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Options this stack takes from the request itself rather than from the conninfo string.
const TLS_KEYS: &[&str] = &[
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
];

pub struct Rustls {
    facts: ClientFacts,
    /// Client configurations by TLS options: parsing the trust store and CRLs costs more than
    /// a handshake, and an application builds its `ClientConfig` once too.
    configs: Arc<Mutex<HashMap<ConfigKey, Arc<ClientConfig>>>>,
}

/// Everything a `ClientConfig` is built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConfigKey {
    root: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    crl: Option<String>,
    crl_dir: Option<String>,
    min: Option<String>,
    max: Option<String>,
    verify: Verify,
    direct: bool,
}

/// How much of the server's certificate is checked (libpq's sslmode semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Verify {
    /// require/prefer without a root file: encryption only.
    Nothing,
    /// verify-ca, and require/prefer with a root file.
    Chain,
    /// verify-full.
    ChainAndName,
}

impl Rustls {
    pub fn new() -> Self {
        Rustls {
            facts: ClientFacts {
                name: "rustls".into(),
                tls_library: "rustls".into(),
                tls_version: locked_version("rustls"),
                libpq_version: String::new(),
            },
            configs: Arc::default(),
        }
    }
}

impl Default for Rustls {
    fn default() -> Self {
        Self::new()
    }
}

/// rustls exposes no version constant; the version linked is the one Cargo.lock pins.
fn locked_version(krate: &str) -> String {
    include_str!("../../../Cargo.lock")
        .split("[[package]]")
        .find(|p| p.contains(&format!("\nname = \"{krate}\"\n")))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map_or_else(|| "unknown".into(), |v| v.trim_end_matches('"').to_string())
}

impl ClientStack for Rustls {
    fn facts(&self) -> &ClientFacts {
        &self.facts
    }

    fn connect(&self, request: ConnectRequest) -> BoxFuture<'static, Outcome> {
        let configs = self.configs.clone();
        Box::pin(async move {
            match connect(&request, &configs).await {
                Ok(session) => Outcome::Connected(Box::new(session)),
                Err(outcome) => outcome,
            }
        })
    }
}

async fn connect(
    request: &ConnectRequest,
    cache: &Mutex<HashMap<ConfigKey, Arc<ClientConfig>>>,
) -> Result<Session, Outcome> {
    let sslmode = request.get("sslmode").unwrap_or("prefer");
    // The driver knows disable/prefer/require; the rest of libpq's sslmode semantics is what
    // its users build into the verifier, as libpq documents them: verify-full checks chain and
    // name, verify-ca the chain, and require/prefer check the chain only when a root file
    // exists (else nothing).
    let (driver_mode, verify) = match sslmode {
        "verify-ca" => ("require", Verify::Chain),
        "verify-full" => ("require", Verify::ChainAndName),
        other => {
            let root_exists = request
                .get("sslrootcert")
                .is_some_and(|r| r == "system" || Path::new(r).exists());
            let v = if root_exists {
                Verify::Chain
            } else {
                Verify::Nothing
            };
            (other, v)
        }
    };
    let config = super::tokio_postgres_config(&request.params, TLS_KEYS, driver_mode)
        .map_err(|e| classify(&e))?;

    let key = ConfigKey {
        root: request.get("sslrootcert").map(str::to_string),
        cert: request.get("sslcert").map(str::to_string),
        key: request.get("sslkey").map(str::to_string),
        crl: request.get("sslcrl").map(str::to_string),
        crl_dir: request.get("sslcrldir").map(str::to_string),
        min: request.get("ssl_min_protocol_version").map(str::to_string),
        max: request.get("ssl_max_protocol_version").map(str::to_string),
        verify,
        direct: request.get("sslnegotiation") == Some("direct"),
    };
    if request.get("sslpassword").is_some() {
        return Err(Outcome::failed(
            ErrorClass::ClientKeyInvalid,
            "rustls takes only unencrypted private keys; it has no key password option",
        ));
    }
    let cached = cache.lock().expect("config cache").get(&key).cloned();
    let tls = match cached {
        Some(c) => c,
        None => {
            let c = Arc::new(build_config(&key)?);
            cache.lock().expect("config cache").insert(key, c.clone());
            c
        }
    };
    let (client, connection) = config
        .connect(super::last_words::LastWordsConnect(MakeRustlsConnect::new(
            (*tls).clone(),
        )))
        .await
        .map_err(|e| classify(&e))?;
    super::tokio_postgres_session(
        &request.session_sql(),
        client,
        tokio::spawn(connection),
        classify,
    )
    .await
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The `ClientConfig` a tokio-postgres-rustls user would build from these options.
fn build_config(key: &ConfigKey) -> Result<ClientConfig, Outcome> {
    let provider = provider();
    let webpki = if key.verify == Verify::Nothing {
        None
    } else {
        let roots = Arc::new(load_roots(key.root.as_deref())?);
        let crls = load_crls(key.crl.as_deref(), key.crl_dir.as_deref())?;
        let v = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .with_crls(crls)
            .build()
            .map_err(|e| {
                // An empty store is refused before connecting: the root file gave no anchor.
                let class = match e {
                    rustls::client::VerifierBuilderError::NoRootAnchors => {
                        ErrorClass::RootCertInvalid
                    }
                    _ => ErrorClass::ServerCertUntrusted,
                };
                Outcome::failed(class, format!("WebPkiServerVerifier: {e}"))
            })?;
        Some(v)
    };
    let versions = protocol_versions(key.min.as_deref(), key.max.as_deref())?;
    let schemes = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| Outcome::failed(ErrorClass::ProtocolVersion, e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            webpki,
            check_name: key.verify == Verify::ChainAndName,
            schemes,
        }));
    let mut config = match (&key.cert, &key.key) {
        (Some(cert), Some(private)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    Outcome::failed(ErrorClass::ClientKeyInvalid, format!("{cert}: {e}"))
                })?;
            let private = load_key(private)?;
            builder
                .with_client_auth_cert(chain, private)
                .map_err(|e| Outcome::failed(ErrorClass::ClientKeyInvalid, e.to_string()))?
        }
        // rustls takes a certificate only with its key; it has no key file default to look
        // in, so a certificate without one is refused rather than silently not sent.
        (Some(cert), None) if Path::new(cert).exists() => {
            return Err(Outcome::failed(
                ErrorClass::ClientKeyInvalid,
                format!(
                    "{cert}: sslcert without sslkey; with_client_auth_cert needs the private key"
                ),
            ))
        }
        _ => builder.with_no_client_auth(),
    };
    if key.direct {
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    Ok(config)
}

/// sslrootcert as a trust store; `system` (or nothing) means the platform store.
fn load_roots(root: Option<&str>) -> Result<RootCertStore, Outcome> {
    let mut store = RootCertStore::empty();
    match root {
        Some(path) if path != "system" => {
            if !Path::new(path).exists() {
                return Err(Outcome::failed(
                    ErrorClass::RootCertMissing,
                    format!("root certificate file {path:?} does not exist"),
                ));
            }
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    Outcome::failed(ErrorClass::RootCertInvalid, format!("{path}: {e}"))
                })?;
            for c in certs {
                store.add(c).map_err(|e| {
                    Outcome::failed(ErrorClass::ServerCertUntrusted, format!("{path}: {e}"))
                })?;
            }
        }
        _ => {
            // Without sslrootcert a rustls user trusts the platform's store.
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
        }
    }
    Ok(store)
}

/// sslcrl (PEM lists, concatenated) and every list in sslcrldir. As in libpq, a file or
/// directory that does not exist contributes nothing.
fn load_crls(
    file: Option<&str>,
    dir: Option<&str>,
) -> Result<Vec<CertificateRevocationListDer<'static>>, Outcome> {
    let mut paths = Vec::new();
    if let Some(f) = file.filter(|f| Path::new(f).exists()) {
        paths.push(Path::new(f).to_path_buf());
    }
    if let Some(d) = dir {
        if let Ok(entries) = std::fs::read_dir(d) {
            let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            files.sort();
            paths.extend(files);
        }
    }
    let mut out = Vec::new();
    for p in paths {
        let lists = CertificateRevocationListDer::pem_file_iter(&p)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                Outcome::failed(
                    ErrorClass::InvalidOption,
                    format!("{}: not a PEM CRL file: {e}", p.display()),
                )
            })?;
        out.extend(lists);
    }
    Ok(out)
}

/// A private key in any encoding rustls-pki-types reads: PEM (PKCS#1, PKCS#8, SEC1), else DER.
fn load_key(path: &str) -> Result<PrivateKeyDer<'static>, Outcome> {
    let bytes = std::fs::read(path)
        .map_err(|e| Outcome::failed(ErrorClass::ClientKeyInvalid, format!("{path}: {e}")))?;
    if let Ok(k) = PrivateKeyDer::from_pem_slice(&bytes) {
        return Ok(k);
    }
    PrivateKeyDer::try_from(bytes).map_err(|e| {
        Outcome::failed(
            ErrorClass::ClientKeyInvalid,
            format!("{path}: no usable private key: {e}"),
        )
    })
}

/// libpq's ssl_min/max_protocol_version onto the versions rustls implements (1.2 and 1.3).
fn protocol_versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, Outcome> {
    let rank = |v: &str| -> Result<u8, Outcome> {
        // libpq compares these names without case.
        Ok(match v.to_ascii_lowercase().as_str() {
            "tlsv1" => 0,
            "tlsv1.1" => 1,
            "tlsv1.2" => 2,
            "tlsv1.3" => 3,
            "" => return Ok(u8::MAX),
            other => {
                return Err(Outcome::failed(
                    ErrorClass::InvalidOption,
                    format!("invalid TLS protocol version {other:?}"),
                ))
            }
        })
    };
    let lo = match min {
        Some(v) if rank(v)? != u8::MAX => rank(v)?,
        _ => 2,
    };
    let hi = match max {
        Some(v) if rank(v)? != u8::MAX => rank(v)?,
        _ => 3,
    };
    if lo > hi {
        return Err(Outcome::failed(
            ErrorClass::ProtocolVersion,
            format!("invalid TLS protocol version range {min:?}..{max:?}"),
        ));
    }
    let mut out = Vec::new();
    if lo <= 2 && hi >= 2 {
        out.push(&rustls::version::TLS12);
    }
    if hi >= 3 {
        out.push(&rustls::version::TLS13);
    }
    if out.is_empty() {
        return Err(Outcome::failed(
            ErrorClass::ProtocolVersion,
            format!("rustls implements only TLS 1.2 and 1.3; {min:?}..{max:?} leaves none"),
        ));
    }
    Ok(out)
}

/// webpki verification to the depth sslmode asks for. Handshake signatures are always
/// checked; only the certificate verdict is waived (entirely, or the name alone).
#[derive(Debug)]
struct Verifier {
    /// `None`: no chain verification (require without a root file).
    webpki: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    schemes: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.schemes)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.schemes)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.supported_schemes()
    }
}

/// The rustls error inside a tokio-postgres error, if the handshake produced one.
fn rustls_error(e: &tokio_postgres::Error) -> Option<&rustls::Error> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(r);
            }
        }
        src = s.source();
    }
    None
}

/// The class of a rustls handshake error, by its typed variant.
fn classify_rustls(e: &rustls::Error) -> Option<ErrorClass> {
    use rustls::Error as E;
    use CertificateError as C;
    Some(match e {
        E::InvalidCertificate(c) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => ErrorClass::HostnameMismatch,
            C::Revoked => ErrorClass::ServerCertRevoked,
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => ErrorClass::ServerCertExpired,
            _ => ErrorClass::ServerCertUntrusted,
        },
        E::AlertReceived(a) => match a {
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateExpired
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown => ErrorClass::ClientCertUntrusted,
            AlertDescription::CertificateRevoked => ErrorClass::ClientCertRevoked,
            AlertDescription::CertificateRequired => ErrorClass::ClientCertRequired,
            AlertDescription::ProtocolVersion => ErrorClass::ProtocolVersion,
            // No signature scheme or cipher in common (e.g. an RSA-PSS server key).
            AlertDescription::HandshakeFailure => ErrorClass::ProtocolVersion,
            _ => return None,
        },
        E::PeerIncompatible(_) => ErrorClass::ProtocolVersion,
        // A list it could not use (bad signature, unsupported form): no verdict on the server.
        E::InvalidCertRevocationList(_) => ErrorClass::ServerCertUntrusted,
        _ => return None,
    })
}

/// tokio-postgres / rustls errors to classes.
fn classify(e: &tokio_postgres::Error) -> Outcome {
    let raw = super::error_chain(e);
    if let Some(db) = e.as_db_error() {
        if let Some(class) = server_messages::classify(db.message()) {
            return Outcome::failed(class, raw);
        }
    }
    if let Some(class) = rustls_error(e).and_then(classify_rustls) {
        return Outcome::failed(class, raw);
    }
    const TABLE: &[(&str, ErrorClass)] = &[
        ("server does not support TLS", ErrorClass::SslNotSupported),
        // rustls turns the host into a ServerName first; text that is neither a DNS name
        // nor an IP address it accepts is refused before any byte is sent.
        ("invalid dns name", ErrorClass::InvalidOption),
        ("tls handshake eof", ErrorClass::IoError),
    ];
    let class = super::classify_text(&raw, &[TABLE, super::DRIVER_ERRORS]);
    Outcome::failed(class, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_fact_comes_from_the_lockfile() {
        assert!(locked_version("rustls").starts_with("0.23."));
    }

    #[test]
    fn alerts_and_crl_errors_are_classified() {
        let alert = |a| classify_rustls(&rustls::Error::AlertReceived(a));
        assert_eq!(
            alert(AlertDescription::HandshakeFailure),
            Some(ErrorClass::ProtocolVersion)
        );
        assert_eq!(
            alert(AlertDescription::BadCertificate),
            Some(ErrorClass::ClientCertUntrusted)
        );
        assert_eq!(alert(AlertDescription::DecodeError), None);
        let crl =
            rustls::Error::InvalidCertRevocationList(rustls::CertRevocationListError::BadSignature);
        assert_eq!(classify_rustls(&crl), Some(ErrorClass::ServerCertUntrusted));
    }

    #[test]
    fn protocol_bounds() {
        assert_eq!(protocol_versions(None, None).unwrap().len(), 2);
        assert_eq!(protocol_versions(Some("TLSv1.3"), None).unwrap().len(), 1);
        assert!(protocol_versions(None, Some("TLSv1.1")).is_err());
        assert!(protocol_versions(Some("TLSv1.3"), Some("TLSv1.2")).is_err());
    }
}

//! tokio-postgres with postgres-native-tls (OpenSSL underneath on Linux), configured the way a
//! user of that driver would: the conninfo string goes to `tokio_postgres::Config`, and the
//! TLS file options become `native_tls::TlsConnector` settings. What the driver has no knob for
//! is reported as `unsupported`.

use super::{server_messages, ClientStack, ConnectRequest};
use crate::error_class::ErrorClass;
use crate::facts::ClientFacts;
use crate::outcome::{Outcome, Session};
use futures_util::future::BoxFuture;
use native_tls::{Certificate, Identity, TlsConnector};
use postgres_native_tls::MakeTlsConnector;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Options this stack takes from the request itself rather than from the conninfo string.
const TLS_KEYS: &[&str] = &[
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
    "sslcrldir",
];

pub struct NativeTls {
    facts: ClientFacts,
    /// Connectors by TLS configuration: building one loads the trust store, which costs far
    /// more than a handshake, and an application builds it once too.
    connectors: Arc<Mutex<HashMap<ConnectorKey, TlsConnector>>>,
}

/// Everything a connector is built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConnectorKey {
    root: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    check_hostname: bool,
    direct: bool,
}

impl NativeTls {
    pub fn new() -> Self {
        NativeTls {
            facts: ClientFacts {
                name: "native-tls".into(),
                tls_library: "openssl".into(),
                tls_version: super::openssl_version(),
                libpq_version: String::new(),
            },
            connectors: Arc::default(),
        }
    }
}

impl Default for NativeTls {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientStack for NativeTls {
    fn facts(&self) -> &ClientFacts {
        &self.facts
    }

    fn connect(&self, request: ConnectRequest) -> BoxFuture<'static, Outcome> {
        let connectors = self.connectors.clone();
        Box::pin(async move {
            match connect(&request, &connectors).await {
                Ok(session) => Outcome::Connected(Box::new(session)),
                Err(outcome) => outcome,
            }
        })
    }
}

async fn connect(
    request: &ConnectRequest,
    cache: &Mutex<HashMap<ConnectorKey, TlsConnector>>,
) -> Result<Session, Outcome> {
    let sslmode = request.get("sslmode").unwrap_or("prefer");
    // The driver knows disable/prefer/require; the verify-* modes are what its users build
    // from `require` plus the connector's own verification.
    let (driver_mode, check_hostname) = match sslmode {
        "verify-ca" => ("require", false),
        "verify-full" => ("require", true),
        other => (other, true),
    };
    let config = super::tokio_postgres_config(&request.params, TLS_KEYS, driver_mode)
        .map_err(|e| classify(&e))?;

    for key in ["sslcrl", "sslcrldir"] {
        if request.get(key).is_some() {
            return Err(Outcome::failed(
                ErrorClass::Unsupported,
                format!("native-tls offers no certificate revocation list option ({key})"),
            ));
        }
    }
    let key = ConnectorKey {
        root: request.get("sslrootcert").map(str::to_string),
        cert: request.get("sslcert").map(str::to_string),
        key: request.get("sslkey").map(str::to_string),
        check_hostname,
        direct: request.get("sslnegotiation") == Some("direct"),
    };
    let cached = cache.lock().expect("connector cache").get(&key).cloned();
    let connector = match cached {
        Some(c) => c,
        None => {
            let c = build_connector(request, check_hostname)?;
            cache
                .lock()
                .expect("connector cache")
                .insert(key, c.clone());
            c
        }
    };
    let (client, connection) = config
        .connect(super::last_words::LastWordsConnect(MakeTlsConnector::new(
            connector,
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

/// The connector a postgres-native-tls user would build from these options.
fn build_connector(
    request: &ConnectRequest,
    check_hostname: bool,
) -> Result<TlsConnector, Outcome> {
    let mut builder = TlsConnector::builder();
    builder.danger_accept_invalid_hostnames(!check_hostname);
    if let Some(root) = request.get("sslrootcert") {
        if root == "system" {
            // The connector's default: the system trust store.
        } else {
            let pem = std::fs::read(root).map_err(|e| {
                Outcome::failed(
                    ErrorClass::RootCertMissing,
                    format!("could not read {root}: {e}"),
                )
            })?;
            let certs = Certificate::stack_from_pem(&pem).map_err(|e| {
                Outcome::failed(
                    ErrorClass::RootCertInvalid,
                    format!("bad root file {root}: {e}"),
                )
            })?;
            builder.disable_built_in_roots(true);
            for c in certs {
                builder.add_root_certificate(c);
            }
        }
    }
    if let (Some(cert), None) = (request.get("sslcert"), request.get("sslkey")) {
        // Identity::from_pkcs8 takes a certificate only with its key, and native-tls has no
        // key file default: refused rather than silently sending no certificate.
        if std::path::Path::new(cert).exists() {
            return Err(Outcome::failed(
                ErrorClass::ClientKeyInvalid,
                format!(
                    "{cert}: sslcert without sslkey; Identity::from_pkcs8 needs the private key"
                ),
            ));
        }
    }
    if let (Some(cert), Some(key)) = (request.get("sslcert"), request.get("sslkey")) {
        let read = |p: &str| {
            std::fs::read(p).map_err(|e| {
                Outcome::failed(
                    ErrorClass::ClientKeyInvalid,
                    format!("could not read {p}: {e}"),
                )
            })
        };
        let (cert, key) = (read(cert)?, read(key)?);
        let identity = Identity::from_pkcs8(&cert, &key).map_err(|e| {
            Outcome::failed(
                ErrorClass::ClientKeyInvalid,
                format!("Identity::from_pkcs8: {e}"),
            )
        })?;
        builder.identity(identity);
    }
    if request.get("sslnegotiation") == Some("direct") {
        postgres_native_tls::set_postgresql_alpn(&mut builder);
    }
    builder.build().map_err(|e| {
        const TABLE: &[(&str, ErrorClass)] =
            &[("key values mismatch", ErrorClass::ClientKeyInvalid)];
        let raw = format!("TlsConnector::build: {e}");
        Outcome::failed(
            super::classify_text(&raw, &[TABLE, super::OPENSSL_ALERTS]),
            raw,
        )
    })
}

/// tokio-postgres / native-tls / OpenSSL errors to classes.
fn classify(e: &tokio_postgres::Error) -> Outcome {
    let raw = super::error_chain(e);
    if let Some(db) = e.as_db_error() {
        if let Some(class) = server_messages::classify(db.message()) {
            return Outcome::failed(class, raw);
        }
    }
    const TABLE: &[(&str, ErrorClass)] = &[
        ("server does not support TLS", ErrorClass::SslNotSupported),
        ("hostname mismatch", ErrorClass::HostnameMismatch),
        ("ip address mismatch", ErrorClass::HostnameMismatch),
        ("certificate has expired", ErrorClass::ServerCertExpired),
        (
            "certificate is not yet valid",
            ErrorClass::ServerCertExpired,
        ),
        ("certificate revoked", ErrorClass::ClientCertRevoked),
        ("alert unknown ca", ErrorClass::ClientCertUntrusted),
        ("alert certificate expired", ErrorClass::ClientCertUntrusted),
        ("certificate verify failed", ErrorClass::ServerCertUntrusted),
        ("unsupported protocol", ErrorClass::ProtocolVersion),
        ("alert protocol version", ErrorClass::ProtocolVersion),
        ("no protocols available", ErrorClass::ProtocolVersion),
    ];
    let class = super::classify_text(&raw, &[TABLE, super::OPENSSL_ALERTS, super::DRIVER_ERRORS]);
    Outcome::failed(class, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_alerts_and_build_errors_are_classified() {
        let c = |raw: &str| super::super::classify_text(raw, &[super::super::OPENSSL_ALERTS]);
        assert_eq!(
            c("error:0A000412:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate"),
            ErrorClass::ClientCertUntrusted
        );
        assert_eq!(
            c("error:0A00041B:SSL routines:ssl3_read_bytes:tlsv1 alert decrypt error"),
            ErrorClass::ClientCertUntrusted
        );
        assert_eq!(
            c("error:0A000126:SSL routines::ssl3 ext invalid servername"),
            ErrorClass::InvalidOption
        );
        assert_eq!(
            c("TlsConnector::build: error:0A00018F:SSL routines:SSL_CTX_use_certificate:ee key too small"),
            ErrorClass::ClientKeyInvalid
        );
        assert_eq!(c("anything else"), ErrorClass::Unclassified);
    }
}

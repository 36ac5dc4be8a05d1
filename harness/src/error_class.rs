//! The fixed vocabulary of failure classes. Every client adapter maps its native errors onto
//! these; anything it cannot map becomes `Unclassified`, which never satisfies an expectation.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! error_classes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )*) => {
        /// Why a connection attempt failed, normalised across client stacks.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorClass {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl ErrorClass {
            /// Every class, in documentation order.
            pub const ALL: &'static [ErrorClass] = &[$(ErrorClass::$variant),*];

            /// The name used in scenario files and reports.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorClass::$variant => $name,)* }
            }

            /// One line of documentation, for `pgssl lint --classes` and docs.
            pub fn doc(self) -> &'static str {
                match self { $(ErrorClass::$variant => concat!($($doc),*).trim_start(),)* }
            }
        }
    };
}

error_classes! {
    /// The client did not trust the server's certificate chain.
    ServerCertUntrusted = "server_cert_untrusted",
    /// The server certificate is valid but names another host.
    HostnameMismatch = "hostname_mismatch",
    /// The server certificate carries no name the client could check.
    ServerNameMissing = "server_name_missing",
    /// The client found the server certificate on a revocation list.
    ServerCertRevoked = "server_cert_revoked",
    /// The server certificate is outside its validity period.
    ServerCertExpired = "server_cert_expired",
    /// Verification was asked for but the client has no root certificate file.
    RootCertMissing = "root_cert_missing",
    /// The client's root certificate file exists but gives no trust anchor (no certificate in it, or not PEM).
    RootCertInvalid = "root_cert_invalid",
    /// The server demanded a client certificate and none was sent.
    ClientCertRequired = "client_cert_required",
    /// The server did not accept the client certificate: unknown CA, expired certificate, or a CRL it could not use.
    ClientCertUntrusted = "client_cert_untrusted",
    /// The server found the client certificate on a revocation list.
    ClientCertRevoked = "client_cert_revoked",
    /// The client certificate was trusted but did not authenticate the user (cert auth, clientcert=verify-full).
    CertAuthFailed = "cert_auth_failed",
    /// Password or SCRAM authentication failed.
    AuthFailed = "auth_failed",
    /// The client refused the authentication method the server asked for (require_auth).
    AuthMethodRefused = "auth_method_refused",
    /// No pg_hba.conf line matched the connection.
    HbaRejected = "hba_rejected",
    /// SSL was required by the client but the server does not offer it.
    SslNotSupported = "ssl_not_supported",
    /// The server requires SSL (only hostssl lines match) but the client did not use it.
    SslRequired = "ssl_required",
    /// GSSAPI encryption was required but cannot be had: no credentials, no server support, or a Unix socket.
    GssEncryptionUnavailable = "gss_encryption_unavailable",
    /// Client and server share no TLS protocol version (or no signature algorithm or cipher), or the client's bounds are invalid.
    ProtocolVersion = "protocol_version",
    /// The client rejected a connection option or its value before connecting.
    InvalidOption = "invalid_option",
    /// sslcertmode=require, but the client sent no certificate (it had none, or was not asked).
    ClientCertNotSent = "client_cert_not_sent",
    /// The client's certificate or private key could not be loaded.
    ClientKeyInvalid = "client_key_invalid",
    /// The client's private key file is readable by group or others.
    ClientKeyPermissions = "client_key_permissions",
    /// Channel binding was required and could not be done.
    ChannelBinding = "channel_binding",
    /// The attempt did not finish within its deadline.
    Timeout = "timeout",
    /// Server-side event: the server refused to start with the scenario's configuration.
    ServerStartFailed = "server_start_failed",
    /// Server-side event: the server rejected a configuration reload and kept the old one.
    ServerReloadFailed = "server_reload_failed",
    /// A transport failure: refused, reset, closed without a reason.
    IoError = "io_error",
    /// The client stack cannot express this case at all (declared per stack, with a reason).
    Unsupported = "unsupported",
    /// The adapter could not map the native error; this always fails the case, showing the raw text.
    Unclassified = "unclassified",
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde() {
        for class in ErrorClass::ALL {
            let json = serde_json::to_string(class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
            let back: ErrorClass = serde_json::from_str(&json).unwrap();
            assert_eq!(back, *class);
            assert!(!class.doc().is_empty());
        }
    }
}

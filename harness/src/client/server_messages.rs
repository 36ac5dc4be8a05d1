//! Server-side rejections arrive as the server's own FATAL text, whichever client connects;
//! this maps them once for every adapter.

use crate::error_class::ErrorClass;

/// The classes [`classify`] can give.
pub fn classes() -> Vec<ErrorClass> {
    let mut out: Vec<ErrorClass> = TABLE.iter().map(|(_, c)| *c).collect();
    out.push(ErrorClass::SslRequired);
    out
}

const TABLE: &[(&str, ErrorClass)] = &[
    (
        "connection requires a valid client certificate",
        ErrorClass::ClientCertRequired,
    ),
    (
        "certificate authentication failed for user",
        ErrorClass::CertAuthFailed,
    ),
    (
        "certificate validation (clientcert=verify-full) failed",
        ErrorClass::CertAuthFailed,
    ),
    // trust only fails through clientcert=verify-full: the certificate named another user.
    (
        "\"trust\" authentication failed for user",
        ErrorClass::CertAuthFailed,
    ),
    (
        "password authentication failed for user",
        ErrorClass::AuthFailed,
    ),
    ("no pg_hba.conf entry for", ErrorClass::HbaRejected),
    ("pg_hba.conf rejects connection", ErrorClass::HbaRejected),
];

/// Classifies a message the server sent (or that quotes one). `None` when it is not one.
pub fn classify(msg: &str) -> Option<ErrorClass> {
    let (_, class) = TABLE.iter().find(|(needle, _)| msg.contains(needle))?;
    // A hostssl-only pg_hba.conf turns unencrypted connections away with this suffix
    // (PostgreSQL 14+; 13 and older say "SSL off").
    if *class == ErrorClass::HbaRejected
        && (msg.contains("no encryption") || msg.contains("SSL off"))
    {
        return Some(ErrorClass::SslRequired);
    }
    Some(*class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_fatal_texts_are_classified() {
        let fatal = |m: &str| classify(&format!("connection to server failed: FATAL:  {m}"));
        for (text, want) in [
            (
                "connection requires a valid client certificate",
                ErrorClass::ClientCertRequired,
            ),
            (
                "certificate authentication failed for user \"anotheruser\"",
                ErrorClass::CertAuthFailed,
            ),
            (
                "certificate validation (clientcert=verify-full) failed for user \"u\": CN mismatch",
                ErrorClass::CertAuthFailed,
            ),
            (
                "\"trust\" authentication failed for user \"u\"",
                ErrorClass::CertAuthFailed,
            ),
            (
                "password authentication failed for user \"u\"",
                ErrorClass::AuthFailed,
            ),
            (
                "no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"d\", SSL encryption",
                ErrorClass::HbaRejected,
            ),
            (
                "no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"d\", no encryption",
                ErrorClass::SslRequired,
            ),
            (
                "no pg_hba.conf entry for host \"127.0.0.1\", user \"u\", database \"d\", SSL off",
                ErrorClass::SslRequired,
            ),
            (
                "pg_hba.conf rejects connection for host \"127.0.0.1\"",
                ErrorClass::HbaRejected,
            ),
        ] {
            assert_eq!(fatal(text), Some(want), "{text}");
        }
        assert_eq!(classify("SSL error: certificate verify failed"), None);
        for (_, class) in TABLE {
            assert!(classes().contains(class));
        }
    }
}

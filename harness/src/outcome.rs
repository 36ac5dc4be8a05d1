//! What a connection attempt produced, normalised, and how it is judged against an expectation.

use crate::error_class::ErrorClass;
use crate::scenario::{Expect, SessionExpect};
use serde::Serialize;

/// The SQL every connected attempt runs: what the server recorded about this session.
pub const SESSION_QUERY: &str =
    "SELECT s.ssl::text, coalesce(s.version, ''), coalesce(s.cipher, ''), \
     coalesce(s.client_dn, ''), coalesce(s.issuer_dn, ''), coalesce(s.client_serial::text, ''), \
     current_user::text FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()";

/// A session as the server saw it (pg_stat_ssl for this backend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Session {
    pub ssl: bool,
    pub tls_version: String,
    pub cipher: String,
    pub client_dn: String,
    pub issuer_dn: String,
    pub client_serial: String,
    pub user: String,
}

impl Session {
    /// Builds a session from the text columns of [`SESSION_QUERY`], in order.
    pub fn from_row(cols: &[String]) -> Result<Self, String> {
        if cols.len() != 7 {
            return Err(format!(
                "session query returned {} columns, expected 7",
                cols.len()
            ));
        }
        Ok(Session {
            ssl: cols[0] == "true" || cols[0] == "t",
            tls_version: cols[1].clone(),
            cipher: cols[2].clone(),
            client_dn: cols[3].clone(),
            issuer_dn: cols[4].clone(),
            client_serial: cols[5].clone(),
            user: cols[6].clone(),
        })
    }
}

/// The normalised result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Connected(Box<Session>),
    /// A server-side check: the server accepted the configuration it was expected to refuse.
    Accepted,
    Failed {
        class: ErrorClass,
        /// The native message, verbatim.
        raw: String,
    },
}

impl Outcome {
    pub fn failed(class: ErrorClass, raw: impl Into<String>) -> Self {
        Outcome::Failed {
            class,
            raw: raw.into().trim().to_string(),
        }
    }

    /// Short form for reports: `connected (ssl, TLSv1.3)` or `failed: hostname_mismatch`.
    pub fn summary(&self) -> String {
        match self {
            Outcome::Connected(s) if s.ssl => format!("connected (ssl, {})", s.tls_version),
            Outcome::Connected(_) => "connected (no ssl)".into(),
            Outcome::Failed { class, .. } => format!("failed: {class}"),
            Outcome::Accepted => "server accepted the configuration".into(),
        }
    }
}

/// Does `actual` satisfy `expected`? `Err` says why not.
pub fn judge(expected: &Expect, actual: &Outcome) -> Result<(), String> {
    match (expected, actual) {
        (
            _,
            Outcome::Failed {
                class: ErrorClass::Unclassified,
                raw,
            },
        ) => Err(format!(
            "the adapter could not classify this error; extend its error map: {raw}"
        )),
        (Expect::Failed(want), Outcome::Failed { class, .. }) if want == class => Ok(()),
        (Expect::Failed(want), Outcome::Failed { class, .. }) => {
            Err(format!("expected failure {want}, got failure {class}"))
        }
        (Expect::Failed(want), Outcome::Connected(_)) => Err(format!(
            "expected failure {want}, but the connection succeeded"
        )),
        (Expect::Connected(_), Outcome::Failed { class, .. }) => {
            Err(format!("expected a connection, got failure {class}"))
        }
        (Expect::Connected(want), Outcome::Connected(got)) => judge_session(want, got),
        (Expect::Failed(want), Outcome::Accepted) => Err(format!(
            "expected {want}, but the server accepted the configuration"
        )),
        (Expect::Connected(_), Outcome::Accepted) => {
            Err("expected a connection, not a server event".into())
        }
    }
}

fn judge_session(want: &SessionExpect, got: &Session) -> Result<(), String> {
    let mut wrong = Vec::new();
    let mut check = |name: &str, want: Option<&str>, got: &str| {
        if let Some(w) = want {
            if w != got {
                wrong.push(format!("{name}: expected {w:?}, got {got:?}"));
            }
        }
    };
    let ssl = if got.ssl { "true" } else { "false" };
    check(
        "ssl",
        want.ssl.map(|b| if b { "true" } else { "false" }),
        ssl,
    );
    check("tls_version", want.tls_version.as_deref(), &got.tls_version);
    check("client_dn", want.client_dn.as_deref(), &got.client_dn);
    check("issuer_dn", want.issuer_dn.as_deref(), &got.issuer_dn);
    check("user", want.user.as_deref(), &got.user);
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// Checks that every `wanted` substring occurs in `log`; `Err` names the missing ones.
pub fn judge_log(wanted: &[String], log: &str) -> Result<(), String> {
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !log.contains(w.as_str()))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .take(6)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Err(format!(
        "server log lacks {:?}; its last lines for this attempt:\n{}",
        missing,
        tail.join("\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unclassified_never_passes() {
        let actual = Outcome::failed(ErrorClass::Unclassified, "boom");
        assert!(judge(&Expect::Failed(ErrorClass::Unclassified), &actual).is_err());
    }

    #[test]
    fn session_properties_are_checked() {
        let got = Session {
            ssl: true,
            tls_version: "TLSv1.3".into(),
            ..Default::default()
        };
        let want = SessionExpect {
            ssl: Some(true),
            ..Default::default()
        };
        assert!(judge(
            &Expect::Connected(want),
            &Outcome::Connected(Box::new(got.clone()))
        )
        .is_ok());
        let want = SessionExpect {
            ssl: Some(false),
            ..Default::default()
        };
        assert!(judge(&Expect::Connected(want), &Outcome::Connected(Box::new(got))).is_err());
    }

    #[test]
    fn wrong_class_fails() {
        let actual = Outcome::failed(ErrorClass::HostnameMismatch, "x");
        assert!(judge(&Expect::Failed(ErrorClass::ServerCertUntrusted), &actual).is_err());
    }
}

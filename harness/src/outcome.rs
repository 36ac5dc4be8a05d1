//! What a connection attempt produced, normalised, and how it is judged against an expectation.

use crate::error_class::ErrorClass;
use crate::scenario::{Expect, QueryResult, SessionExpect, QUERY_QUOTE};
use serde::{Deserialize, Serialize};

/// The SQL every connected attempt runs: what the server recorded about this session. The
/// function behind the `pg_stat_ssl` view, asked for this backend alone: a new backend would
/// otherwise load and expand the view's stored rule on every attempt (about a tenth of a
/// fresh connection's server CPU), for the same row.
pub const SESSION_QUERY: &str =
    "SELECT s.ssl::text, coalesce(s.sslversion, ''), coalesce(s.sslcipher, ''), \
     coalesce(s.ssl_client_dn, ''), coalesce(s.ssl_issuer_dn, ''), \
     coalesce(s.ssl_client_serial::text, ''), current_user::text \
     FROM pg_stat_get_activity(pg_backend_pid()) s";

/// [`SESSION_QUERY`] with one more column per case query: `pgssl_try()` (installed in every
/// database by the runtime) runs it in this session and reports its value, NULL or SQLSTATE,
/// so a failing query does not abort the session query.
pub fn session_sql(queries: &[String]) -> String {
    if queries.is_empty() {
        return SESSION_QUERY.to_string();
    }
    let extra: String = queries
        .iter()
        .map(|q| format!(", public.pgssl_try({QUERY_QUOTE}{q}{QUERY_QUOTE})"))
        .collect();
    SESSION_QUERY.replacen(
        " FROM pg_stat_get_activity",
        &format!("{extra} FROM pg_stat_get_activity"),
        1,
    )
}

/// A session as the server saw it (pg_stat_ssl for this backend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Session {
    pub ssl: bool,
    pub tls_version: String,
    pub cipher: String,
    pub client_dn: String,
    pub issuer_dn: String,
    pub client_serial: String,
    pub user: String,
    /// Results of the case's queries, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queries: Vec<QueryResult>,
}

impl Session {
    /// The session query's row this session was read from (the inverse of [`Self::from_row`]).
    pub fn to_row(&self) -> Vec<String> {
        let mut row = vec![
            self.ssl.to_string(),
            self.tls_version.clone(),
            self.cipher.clone(),
            self.client_dn.clone(),
            self.issuer_dn.clone(),
            self.client_serial.clone(),
            self.user.clone(),
        ];
        row.extend(self.queries.iter().map(QueryResult::to_wire));
        row
    }

    /// Builds a session from the text columns of [`SESSION_QUERY`], in order.
    pub fn from_row(cols: &[String]) -> Result<Self, String> {
        if cols.len() < 7 {
            return Err(format!(
                "session query returned {} columns, expected at least 7",
                cols.len()
            ));
        }
        let queries = cols[7..]
            .iter()
            .map(|c| QueryResult::from_wire(c).ok_or_else(|| format!("pgssl_try gave {c:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Session {
            ssl: cols[0] == "true" || cols[0] == "t",
            tls_version: cols[1].clone(),
            cipher: cols[2].clone(),
            client_dn: cols[3].clone(),
            issuer_dn: cols[4].clone(),
            client_serial: cols[5].clone(),
            user: cols[6].clone(),
            queries,
        })
    }
}

/// The normalised result of one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        (Expect::Accepted, Outcome::Accepted) => Ok(()),
        (Expect::Accepted, Outcome::Failed { class, .. }) => Err(format!(
            "expected the server to accept the configuration, got {class}"
        )),
        (Expect::Accepted, Outcome::Connected(_)) => {
            Err("expected a server event, not a connection".into())
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
    check("cipher", want.cipher.as_deref(), &got.cipher);
    check(
        "client_serial",
        want.client_serial.as_deref(),
        &got.client_serial,
    );
    check("client_dn", want.client_dn.as_deref(), &got.client_dn);
    check("issuer_dn", want.issuer_dn.as_deref(), &got.issuer_dn);
    check("user", want.user.as_deref(), &got.user);
    for (i, q) in want.query.iter().enumerate() {
        match got.queries.get(i) {
            Some(r) if *r == q.result => {}
            Some(r) => wrong.push(format!("query {:?}: expected {}, got {r}", q.sql, q.result)),
            None => wrong.push(format!("query {:?}: no result", q.sql)),
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

/// Checks that a failure's native message contains each `wanted` text.
pub fn judge_message(wanted: &[String], actual: &Outcome) -> Result<(), String> {
    let raw = match actual {
        Outcome::Failed { raw, .. } => raw.as_str(),
        _ if wanted.is_empty() => return Ok(()),
        _ => return Err("a message is expected, but the attempt did not fail".into()),
    };
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !raw.contains(w.as_str()))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("message lacks {missing:?}: {raw}"))
    }
}

/// Checks the `wanted` log texts against `log`: each must occur, except those written with a
/// leading `!`, which must not. `Err` names what is wrong.
pub fn judge_log(wanted: &[String], log: &str) -> Result<(), String> {
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|w| !w.starts_with('!') && !log.contains(w.as_str()))
        .collect();
    let present: Vec<&str> = wanted
        .iter()
        .filter_map(|w| w.strip_prefix('!'))
        .filter(|w| log.contains(w))
        .collect();
    if missing.is_empty() && present.is_empty() {
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
    let mut why = Vec::new();
    if !missing.is_empty() {
        why.push(format!("server log lacks {missing:?}"));
    }
    if !present.is_empty() {
        why.push(format!(
            "server log contains {present:?}, which must not appear"
        ));
    }
    Err(format!(
        "{}; its last lines for this attempt:\n{}",
        why.join("; "),
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
    fn case_queries_become_columns_and_results() {
        let sql = session_sql(&["SELECT ssl_is_used()".into()]);
        assert!(sql.contains(
            ", public.pgssl_try($pgssl_q$SELECT ssl_is_used()$pgssl_q$) FROM pg_stat_get_activity"
        ));
        let mut row: Vec<String> = ["t", "TLSv1.3", "", "", "", "", "u"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        row.extend(["value true".into(), "null".into(), "error 22023".into()]);
        let s = Session::from_row(&row).unwrap();
        assert_eq!(
            s.queries,
            vec![
                QueryResult::Returns("true".into()),
                QueryResult::Null,
                QueryResult::Error("22023".into())
            ]
        );
        row.push("garbage".into());
        assert!(Session::from_row(&row).is_err());
    }

    #[test]
    fn wrong_class_fails() {
        let actual = Outcome::failed(ErrorClass::HostnameMismatch, "x");
        assert!(judge(&Expect::Failed(ErrorClass::ServerCertUntrusted), &actual).is_err());
    }
}

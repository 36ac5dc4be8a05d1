//! libpq of a server build, inside a container of that build's image: `psql` through
//! `docker exec`, so libpq 13, 15, 17 and 18 (with their own OpenSSL) are client stacks too.
//! Its error texts are libpq's, so the local adapter's `classify` maps them with the same
//! `stacks/libpq/errors.toml`.
//!
//! One long-lived container per stack (host network; the PKI cache bind-mounted read-only at
//! the same path, so the paths a case names resolve inside it), started when the stack is
//! built; attempts are `exec`s into it, bounded by `timeout` inside and the core's deadline
//! outside.

use super::error_table::ErrorTable;
use super::libpq::{classify, ISOLATION_DEFAULTS};
use super::{ClientStack, ConnectRequest};
use crate::error_class::ErrorClass;
use crate::facts::ClientFacts;
use crate::outcome::{Outcome, Session};
use crate::runtime::docker;
use anyhow::{Context, Result};
use futures_util::future::BoxFuture;
use std::sync::Arc;
use testcontainers::core::ExecCommand;
use testcontainers::{ContainerAsync, GenericImage};

/// Prefix of the stack's name: `libpq:<build>`.
pub const PREFIX: &str = "libpq:";

/// Separates psql's output columns (a DN may contain `|` or `,`).
const FIELD_SEP: &str = "\x1f";

/// Marks the exit status line the wrapper shell appends to stderr.
const EXIT_MARK: &str = "pgssl-exit=";

pub struct ContainerLibpq {
    facts: ClientFacts,
    errors: Arc<ErrorTable>,
    container: Option<Arc<ContainerAsync<GenericImage>>>,
    _registration: crate::cleanup::Registration,
}

impl ContainerLibpq {
    /// Starts the client container of `build` and detects its libpq and OpenSSL versions.
    /// `errors`: the libpq stack's `errors.toml`.
    pub fn new(build: &str, errors: ErrorTable) -> Result<Self> {
        let image = docker::image_for(build)?;
        let pki_root = crate::pki::cache_root();
        std::fs::create_dir_all(&pki_root)?;
        // `sleep` never exits by itself; removal kills it (rm -f), so its PID-1 signal
        // handling does not matter.
        // The run directories' root too (read-only): the servers' Unix sockets live there, for
        // cases that connect with `host = "@socket"`.
        let tmp = crate::cleanup::run_root();
        let req = docker::request(
            &image,
            vec!["sleep".into(), "infinity".into()],
            &[(pki_root.as_path(), true), (tmp.as_path(), true)],
        );
        let (container, registration) = docker::start(req)?;
        let container = Arc::new(container);
        let c = container.clone();
        let out = docker::block_on(async move {
            let mut r = c
                .exec(ExecCommand::new([
                    "dpkg-query",
                    "-W",
                    "-f",
                    "${Package} ${Version}\\n",
                    "libpq5",
                    "libssl*",
                ]))
                .await?;
            r.stdout_to_vec().await
        })
        .context("detecting the container's libpq and OpenSSL")?;
        let out = String::from_utf8_lossy(&out);
        let version_of = |pred: &dyn Fn(&str) -> bool| {
            out.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(p, v)| pred(p) && !v.is_empty())
                .map(|(_, v)| upstream_version(v))
                .unwrap_or_default()
        };
        let libpq_version = version_of(&|p| p == "libpq5");
        let tls_version = version_of(&|p| p.starts_with("libssl") && !p.contains("-dev"));
        Ok(ContainerLibpq {
            errors: Arc::new(errors),
            facts: ClientFacts {
                name: format!("{PREFIX}{build}"),
                tls_library: "openssl".into(),
                tls_version,
                libpq_version,
            },
            container: Some(container),
            _registration: registration,
        })
    }
}

impl Drop for ContainerLibpq {
    /// Removes the container now, on the Docker runtime (testcontainers' own drop needs a
    /// runtime around, and the last owner of a stack may be plain `main`).
    fn drop(&mut self) {
        if let Some(c) = self.container.take() {
            docker::remove_shared(c);
        }
    }
}

/// `13.22-0+deb11u1` -> `13.22`; `1:3.0.17-1~deb12u2` -> `3.0.17`.
pub(crate) fn upstream_version(v: &str) -> String {
    let v = v.split_once(':').map_or(v, |(_, rest)| rest);
    v.split(['-', '+', '~']).next().unwrap_or(v).to_string()
}

/// One libpq connection string: `key='value'`, quotes and backslashes escaped.
fn conninfo(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

impl ClientStack for ContainerLibpq {
    fn facts(&self) -> &ClientFacts {
        &self.facts
    }

    fn in_process(&self) -> bool {
        false
    }

    fn connect(&self, request: ConnectRequest) -> BoxFuture<'static, Outcome> {
        let mut request = request;
        let env = std::mem::take(&mut request.env);
        for (k, v) in ISOLATION_DEFAULTS {
            let crl_dir_given = *k == "sslcrl" && request.get("sslcrldir").is_some();
            if request.get(k).is_none() && !crl_dir_given {
                request.params.push((k.to_string(), v.to_string()));
            }
        }
        let secs = request.timeout.as_secs().max(1).to_string();
        // The exit status comes back as the last line of stderr: ExecResult::exit_code borrows
        // a value that is not Sync across an await, which a Send future cannot hold.
        let cmd = vec![
            "sh".to_string(),
            "-c".into(),
            format!("\"$@\"; echo \"{EXIT_MARK}$?\" >&2"),
            "sh".into(),
            "timeout".into(),
            "-k".into(),
            "1".into(),
            secs,
            "psql".into(),
            // No psqlrc, unaligned tuples only, never prompt (no terminal is there to answer).
            "-X".into(),
            "-A".into(),
            "-t".into(),
            "-q".into(),
            "-w".into(),
            "-F".into(),
            FIELD_SEP.into(),
            "-c".into(),
            request.session_sql(),
            "-d".into(),
            conninfo(&request.params),
        ];
        let c = self.container.clone().expect("container until drop");
        let errors = self.errors.clone();
        Box::pin(async move {
            let run = docker::run(async move {
                let mut r = c
                    .exec(
                        ExecCommand::new(cmd)
                            .with_env_vars(env.into_iter().chain([("LC_ALL".into(), "C".into())])),
                    )
                    .await?;
                let out = r.stdout_to_vec().await?;
                let err = r.stderr_to_vec().await?;
                Ok::<_, testcontainers::TestcontainersError>((out, err))
            })
            .await;
            match run {
                Ok(Ok((out, err))) => {
                    let err = String::from_utf8_lossy(&err);
                    let (err, code) = match err.trim_end().rsplit_once(EXIT_MARK) {
                        Some((rest, code)) => (rest.to_string(), code.trim().parse().ok()),
                        None => (err.to_string(), None),
                    };
                    outcome(&errors, code, &out, err.as_bytes())
                }
                Ok(Err(e)) => {
                    Outcome::failed(ErrorClass::Unclassified, format!("docker exec: {e}"))
                }
                Err(e) => Outcome::failed(ErrorClass::Unclassified, format!("{e:#}")),
            }
        })
    }
}

fn outcome(errors: &ErrorTable, code: Option<i64>, out: &[u8], err: &[u8]) -> Outcome {
    let out = String::from_utf8_lossy(out);
    let err = String::from_utf8_lossy(err);
    match code {
        Some(0) => {
            let line = out.trim_end_matches('\n');
            let cols: Vec<String> = line.split(FIELD_SEP).map(str::to_string).collect();
            match Session::from_row(&cols) {
                Ok(s) => Outcome::Connected(Box::new(s)),
                Err(e) => Outcome::failed(ErrorClass::Unclassified, format!("{e}: {line:?}")),
            }
        }
        Some(124) | Some(137) => Outcome::failed(ErrorClass::Timeout, "psql ran out of time"),
        _ => {
            // "psql: error: " leads libpq's own message since PostgreSQL 12.
            let msg = err.trim();
            classify(errors, msg.strip_prefix("psql: error: ").unwrap_or(msg))
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_and_conninfo() {
        assert_eq!(super::upstream_version("13.22-0+deb11u1"), "13.22");
        assert_eq!(super::upstream_version("3.0.17-1~deb12u2"), "3.0.17");
        assert_eq!(super::upstream_version("1.1.1w-0+deb11u3"), "1.1.1w");
        assert_eq!(
            super::conninfo(&[("a".into(), "x'y\\z".into()), ("b".into(), String::new())]),
            "a='x\\'y\\\\z' b=''"
        );
    }
}

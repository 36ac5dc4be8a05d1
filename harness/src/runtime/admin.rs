//! A superuser connection over the server's private Unix socket, for setup and checks. It never
//! touches the TCP listener the cases test.

use anyhow::{anyhow, Result};
use pq_sys as pq;
use std::ffi::{CStr, CString};
use std::path::Path;

pub struct Admin(*mut pq::PGconn);

const FILE_COPY: &str = "STRATEGY = FILE_COPY";

/// What per-case queries need in every database: the sslinfo extension and `pgssl_try()`,
/// which runs one statement and reports its first value as `value <text>`, `null`, or
/// `error <sqlstate>`, so that an expected error does not abort the session query.
pub(super) const QUERY_SUPPORT: &str = r#"
CREATE EXTENSION IF NOT EXISTS sslinfo;
CREATE OR REPLACE FUNCTION public.pgssl_try(q text) RETURNS text LANGUAGE plpgsql AS $pgssl$
DECLARE v text;
BEGIN
  EXECUTE q INTO v;
  RETURN CASE WHEN v IS NULL THEN 'null' ELSE 'value ' || v END;
EXCEPTION WHEN OTHERS THEN
  RETURN 'error ' || SQLSTATE;
END
$pgssl$;
"#;

// SAFETY: a PGconn may move between threads as long as one thread uses it at a time.
unsafe impl Send for Admin {}

impl Drop for Admin {
    fn drop(&mut self) {
        // SAFETY: conn from PQconnectdb, finished once.
        unsafe { pq::PQfinish(self.0) }
    }
}

/// Quotes an identifier for SQL.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes a literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

unsafe extern "C" fn ignore_notice(_: *mut std::ffi::c_void, _: *const std::ffi::c_char) {}

impl Admin {
    pub fn connect(socket_dir: &Path, port: u16) -> Result<Admin> {
        Self::connect_db(socket_dir, port, "postgres")
    }

    fn connect_db(socket_dir: &Path, port: u16, dbname: &str) -> Result<Admin> {
        let conninfo = format!(
            "host='{}' port={port} user=postgres dbname={dbname} connect_timeout=5 sslmode=disable gssencmode=disable",
            socket_dir.display()
        );
        let c = CString::new(conninfo)?;
        // SAFETY: NUL-terminated conninfo.
        let conn = Admin(unsafe { pq::PQconnectdb(c.as_ptr()) });
        // SAFETY: valid (possibly failed) conn.
        if unsafe { pq::PQstatus(conn.0) } != pq::ConnStatusType::CONNECTION_OK {
            return Err(anyhow!("admin connection failed: {}", conn.error()));
        }
        // Setup notices (e.g. PostgreSQL 18 on MD5 passwords) would go to stderr mid-report.
        // SAFETY: valid conn; the processor ignores its arguments.
        unsafe { pq::PQsetNoticeProcessor(conn.0, Some(ignore_notice), std::ptr::null_mut()) };
        Ok(conn)
    }

    fn error(&self) -> String {
        // SAFETY: valid conn.
        unsafe {
            CStr::from_ptr(pq::PQerrorMessage(self.0))
                .to_string_lossy()
                .trim()
                .to_string()
        }
    }

    /// Runs SQL; returns the rows of the last result as text.
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let c = CString::new(sql)?;
        // SAFETY: valid conn and SQL; result cleared below.
        unsafe {
            let res = pq::PQexec(self.0, c.as_ptr());
            let status = pq::PQresultStatus(res);
            let ok = matches!(
                status,
                pq::ExecStatusType::PGRES_TUPLES_OK | pq::ExecStatusType::PGRES_COMMAND_OK
            );
            if !ok {
                let msg = CStr::from_ptr(pq::PQresultErrorMessage(res))
                    .to_string_lossy()
                    .trim()
                    .to_string();
                pq::PQclear(res);
                return Err(anyhow!("admin SQL failed: {msg}\n  SQL: {sql}"));
            }
            let mut rows = Vec::new();
            for r in 0..pq::PQntuples(res) {
                rows.push(
                    (0..pq::PQnfields(res))
                        .map(|f| {
                            CStr::from_ptr(pq::PQgetvalue(res, r, f))
                                .to_string_lossy()
                                .into_owned()
                        })
                        .collect(),
                );
            }
            pq::PQclear(res);
            Ok(rows)
        }
    }

    /// The single value of a one-row, one-column query.
    pub fn value(&self, sql: &str) -> Result<String> {
        self.query(sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .ok_or_else(|| anyhow!("no value from: {sql}"))
    }

    /// Installs [`QUERY_SUPPORT`] in `postgres` and `template1` (and so in every database
    /// created later), unless the cluster was copied from a template that has it already.
    /// `self` is connected to `postgres`.
    pub fn install_query_support(&self, socket_dir: &Path, port: u16) -> Result<()> {
        if self.value("SELECT count(*) FROM pg_proc WHERE proname = 'pgssl_try'")? != "0" {
            return Ok(());
        }
        for db in ["template1", "postgres"] {
            Self::connect_db(socket_dir, port, db)?.query(QUERY_SUPPORT)?;
        }
        Ok(())
    }

    /// Removes `template0` from the cluster being baked: nothing here creates a database
    /// from it, and every server start copies (and later removes) the cluster, a third of
    /// which it was. `self` is connected to `postgres`.
    pub fn drop_template0(&self) -> Result<()> {
        if self.value("SELECT count(*) FROM pg_database WHERE datname = 'template0'")? == "0" {
            return Ok(());
        }
        self.query("ALTER DATABASE template0 IS_TEMPLATE false")?;
        self.query("DROP DATABASE template0")?;
        Ok(())
    }

    /// How new databases are copied: PostgreSQL 15's default (WAL_LOG) writes the template
    /// block by block into the WAL, which costs more CPU than copying its few files
    /// (FILE_COPY) on servers that live seconds with fsync off.
    fn has_file_copy(&self) -> bool {
        // SAFETY: a plain getter on our open connection.
        unsafe { pq::PQserverVersion(self.0) >= 150000 }
    }

    /// Creates (or updates) the roles and databases a scenario needs.
    pub fn ensure_objects(
        &self,
        roles: &[crate::scenario::Role],
        databases: &[String],
    ) -> Result<()> {
        for role in roles {
            let exists = self.value(&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname = {}",
                quote_literal(&role.name)
            ))? != "0";
            if !exists {
                self.query(&format!("CREATE ROLE {} LOGIN", quote_ident(&role.name)))?;
            }
            let pw = role
                .password
                .as_deref()
                .map_or("NULL".to_string(), quote_literal);
            self.query(&format!(
                "ALTER ROLE {} LOGIN PASSWORD {pw}",
                quote_ident(&role.name)
            ))?;
        }
        for db in databases {
            let exists = self.value(&format!(
                "SELECT count(*) FROM pg_database WHERE datname = {}",
                quote_literal(db)
            ))? != "0";
            if !exists {
                let plain = format!("CREATE DATABASE {}", quote_ident(db));
                // A development build of 15 from before the clause refuses it: copy plainly.
                if !self.has_file_copy() || self.query(&format!("{plain} {FILE_COPY}")).is_err() {
                    self.query(&plain)?;
                }
            }
        }
        Ok(())
    }
}

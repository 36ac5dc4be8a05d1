//! `errors.toml`: a stack's native errors as data. Ordered rows, each a pattern on the raw
//! message (a substring) or on the native code (equal), mapped to an error class; the first row
//! that matches wins, and a message no row matches stays `unclassified`. `include` puts the
//! rows of other tables first, so stacks over the same library share one table and add, after
//! it, only what they say differently.

use crate::error_class::ErrorClass;
use crate::scenario::load::{line_of, parse_toml, LoadError};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Other tables, relative to this file; their rows come before this file's rows.
    #[serde(default)]
    include: Vec<Spanned<String>>,
    #[serde(default)]
    error: Vec<Spanned<RawRow>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    message: Option<String>,
    code: Option<String>,
    class: ErrorClass,
}

/// What a row matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// The raw message contains this text (case-sensitive).
    Message(String),
    /// The native code equals this text.
    Code(String),
}

/// One row, with where it was written (for lint).
#[derive(Debug, Clone)]
pub struct Row {
    pub file: PathBuf,
    pub line: usize,
    pub pattern: Pattern,
    pub class: ErrorClass,
}

impl Row {
    fn matches(&self, message: &str, code: Option<&str>) -> bool {
        match &self.pattern {
            Pattern::Message(text) => message.contains(text.as_str()),
            Pattern::Code(c) => code == Some(c.as_str()),
        }
    }
}

/// A loaded table, includes expanded in order.
#[derive(Debug, Clone, Default)]
pub struct ErrorTable {
    pub rows: Vec<Row>,
}

impl ErrorTable {
    /// Loads `path` and, depth first, what it includes. An include cycle is an error.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let mut rows = Vec::new();
        load_into(path, &mut Vec::new(), &mut rows)?;
        Ok(ErrorTable { rows })
    }

    /// The first row matching the message or code.
    pub fn find(&self, message: &str, code: Option<&str>) -> Option<&Row> {
        self.rows.iter().find(|r| r.matches(message, code))
    }

    /// The class of the first matching row; `unclassified` when none matches.
    pub fn class_of(&self, message: &str, code: Option<&str>) -> ErrorClass {
        self.find(message, code)
            .map_or(ErrorClass::Unclassified, |r| r.class)
    }
}

fn load_into(path: &Path, seen: &mut Vec<PathBuf>, rows: &mut Vec<Row>) -> Result<(), LoadError> {
    let located = |line: Option<usize>, message: String| LoadError {
        file: path.to_path_buf(),
        line,
        message,
    };
    let canonical = path
        .canonicalize()
        .map_err(|e| located(None, format!("cannot read: {e}")))?;
    if seen.contains(&canonical) {
        return Err(located(None, "included twice (an include cycle?)".into()));
    }
    seen.push(canonical);
    let source =
        std::fs::read_to_string(path).map_err(|e| located(None, format!("cannot read: {e}")))?;
    let file: File = parse_toml(path, &source)?;
    for inc in &file.include {
        let target = path.parent().unwrap_or(Path::new(".")).join(inc.get_ref());
        if !target.is_file() {
            return Err(located(
                Some(line_of(&source, inc.span().start)),
                format!("include {:?}: no such file", inc.get_ref()),
            ));
        }
        let target = target.canonicalize().unwrap_or(target);
        load_into(&target, seen, rows)?;
    }
    for row in &file.error {
        let line = line_of(&source, row.span().start);
        let row = row.get_ref();
        let pattern = match (&row.message, &row.code) {
            (Some(m), None) if !m.is_empty() => Pattern::Message(m.clone()),
            (None, Some(c)) if !c.is_empty() => Pattern::Code(c.clone()),
            _ => {
                return Err(located(
                    Some(line),
                    "expected exactly one non-empty `message` or `code` in an [[error]] row".into(),
                ))
            }
        };
        rows.push(Row {
            file: path.to_path_buf(),
            line,
            pattern,
            class: row.class,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn includes_first_then_own_rows_and_codes() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base.toml",
            "[[error]]\nmessage = \"certificate verify failed\"\nclass = \"server_cert_untrusted\"\n",
        );
        let top = write(
            dir.path(),
            "top.toml",
            "include = [\"base.toml\"]\n[[error]]\nmessage = \"verify failed\"\nclass = \"hostname_mismatch\"\n[[error]]\ncode = \"28000\"\nclass = \"auth_failed\"\n",
        );
        let t = ErrorTable::load(&top).unwrap();
        assert_eq!(t.rows.len(), 3);
        assert_eq!(
            t.class_of("x: certificate verify failed", None),
            ErrorClass::ServerCertUntrusted
        );
        assert_eq!(
            t.class_of("verify failed", None),
            ErrorClass::HostnameMismatch
        );
        assert_eq!(
            t.class_of("anything", Some("28000")),
            ErrorClass::AuthFailed
        );
        assert_eq!(t.class_of("anything", None), ErrorClass::Unclassified);
        assert_eq!(t.rows[2].line, 5);
    }

    #[test]
    fn bad_rows_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "e.toml",
            "[[error]]\nmessage = \"a\"\nclass = \"server_cert_untrusted\"\n\n[[error]]\nclass = \"auth_failed\"\n",
        );
        let e = ErrorTable::load(&p).unwrap_err().to_string();
        assert!(e.contains("e.toml:5:"), "{e}");
        let p = write(
            dir.path(),
            "f.toml",
            "[[error]]\nmessage = \"a\"\nclass = \"no_such_class\"\n",
        );
        let e = ErrorTable::load(&p).unwrap_err().to_string();
        assert!(
            e.contains("f.toml:3:") && e.contains("server_cert_untrusted"),
            "{e}"
        );
        let p = write(dir.path(), "g.toml", "include = [\"g.toml\"]\n");
        assert!(ErrorTable::load(&p)
            .unwrap_err()
            .to_string()
            .contains("cycle"));
    }
}

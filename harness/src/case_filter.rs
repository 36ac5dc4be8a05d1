//! Which cases a run selects: any of several `--filter` texts (substrings of the id) and/or an
//! exact list of ids from a file (`--ids FILE`), so a user runs precisely what they need.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    /// A case matches when its id contains any of these (none: every case).
    substrings: Vec<String>,
    /// The exact ids wanted, each with the line of the file that named it.
    ids: Option<(PathBuf, BTreeMap<String, usize>)>,
}

impl CaseFilter {
    /// Every case.
    pub fn all() -> Self {
        Self::default()
    }

    /// Cases whose id contains any of `substrings`, restricted to the ids listed in `ids_file`
    /// (one id per line; blank lines and `#` comments ignored).
    pub fn new(substrings: Vec<String>, ids_file: Option<&Path>) -> Result<Self> {
        let ids = match ids_file {
            None => None,
            Some(path) => Some((path.to_path_buf(), read_ids(path)?)),
        };
        Ok(CaseFilter { substrings, ids })
    }

    /// Cases whose id contains `text`.
    pub fn substring(text: &str) -> Self {
        CaseFilter {
            substrings: vec![text.to_string()],
            ids: None,
        }
    }

    pub fn matches(&self, id: &str) -> bool {
        (self.substrings.is_empty() || self.substrings.iter().any(|s| id.contains(s.as_str())))
            && self
                .ids
                .as_ref()
                .is_none_or(|(_, ids)| ids.contains_key(id))
    }

    /// An id file naming a case that does not exist is a typo, not an empty selection:
    /// the first unknown id, with its file and line.
    pub fn check_known<'a>(&self, known: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let Some((path, ids)) = &self.ids else {
            return Ok(());
        };
        let known: std::collections::HashSet<&str> = known.into_iter().collect();
        let mut unknown: Vec<(usize, &String)> = ids
            .iter()
            .filter(|(id, _)| !known.contains(id.as_str()))
            .map(|(id, line)| (*line, id))
            .collect();
        unknown.sort();
        if let Some((line, id)) = unknown.first() {
            bail!(
                "{}:{line}: expected a case id (as `pgssl list` prints them), found {id:?}{}",
                path.display(),
                match unknown.len() {
                    1 => String::new(),
                    n => format!(" ({} more unknown ids)", n - 1),
                }
            );
        }
        Ok(())
    }

    /// How the selection was asked for, for messages.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .substrings
            .iter()
            .map(|s| format!("--filter {s:?}"))
            .collect();
        if let Some((path, ids)) = &self.ids {
            parts.push(format!("--ids {} ({} ids)", path.display(), ids.len()));
        }
        if parts.is_empty() {
            "the selection".into()
        } else {
            parts.join(" and ")
        }
    }
}

fn read_ids(path: &Path) -> Result<BTreeMap<String, usize>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut ids = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.split_whitespace().count() > 1 {
            bail!(
                "{}:{}: expected one case id per line, found {line:?}",
                path.display(),
                n + 1
            );
        }
        ids.entry(line.to_string()).or_insert(n + 1);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_substrings_combine() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ids");
        std::fs::write(&file, "# PostgreSQL 001\na/x\n\n  b/y  # trailing\n").unwrap();
        let f = CaseFilter::new(vec![], Some(&file)).unwrap();
        assert!(f.matches("a/x") && f.matches("b/y"));
        assert!(!f.matches("a/xx") && !f.matches("a"));
        let f = CaseFilter::new(vec!["b/".into()], Some(&file)).unwrap();
        assert!(!f.matches("a/x") && f.matches("b/y"));
        let any = CaseFilter::new(vec!["a/".into(), "c/".into()], None).unwrap();
        assert!(any.matches("a/x") && any.matches("c/z") && !any.matches("b/y"));
        assert!(CaseFilter::all().matches("anything"));
    }

    #[test]
    fn unknown_ids_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ids");
        std::fs::write(&file, "a/x\nnope/typo\n").unwrap();
        let f = CaseFilter::new(vec![], Some(&file)).unwrap();
        let err = f.check_known(["a/x", "b/y"]).unwrap_err().to_string();
        assert!(err.contains("ids:2:") && err.contains("nope/typo"), "{err}");
        std::fs::write(&file, "a/x b/y\n").unwrap();
        let err = CaseFilter::new(vec![], Some(&file))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ids:1:"), "{err}");
    }
}

//! The PKI: a declarative spec (certs/*.toml) materialised into files, cached by content hash
//! so an unchanged spec regenerates nothing.

mod generate;
pub mod nss;
mod spec;

pub use generate::serial_for;
pub use spec::{KeyFormat, PkiSpec, SpecFile};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Bump when the generator's output changes for the same spec.
const GENERATOR_VERSION: &str = "pgssl-pki-3";
/// Certificates are valid for ten years from generation; regenerate well before that.
const MAX_AGE: Duration = Duration::from_secs(180 * 24 * 3600);
const COMPLETE_MARKER: &str = ".complete";

/// A materialised PKI: every file of the spec, under one directory.
#[derive(Debug, Clone)]
pub struct PkiDir {
    pub dir: PathBuf,
}

impl PkiDir {
    /// Path of a produced file by its name.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The cache root: `PGSSL_CACHE_DIR`, else `$XDG_CACHE_HOME/pgssl`, else `~/.cache/pgssl`.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("PGSSL_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("pgssl");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("pgssl")
}

impl PkiSpec {
    /// Content hash of the spec and generator.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(GENERATOR_VERSION.as_bytes());
        h.update(self.source.as_bytes());
        hex::encode(&h.finalize()[..8])
    }

    /// Returns the cached materialisation, generating it first if absent or too old.
    /// Generation happens in a private directory renamed into place, so concurrent runs
    /// never see half a PKI.
    pub fn materialize(&self, cache: &Path) -> Result<PkiDir> {
        let dir = cache.join(format!("pki-{}", self.content_hash()));
        let marker = dir.join(COMPLETE_MARKER);
        let fresh = std::fs::metadata(&marker)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < MAX_AGE);
        if fresh {
            return Ok(PkiDir { dir });
        }
        std::fs::create_dir_all(cache)
            .with_context(|| format!("creating cache {}", cache.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".pki-tmp-")
            .tempdir_in(cache)
            .context("creating PKI staging directory")?;
        generate::generate(self, tmp.path())
            .with_context(|| format!("generating PKI from {}", self.path.display()))?;
        std::fs::write(tmp.path().join(COMPLETE_MARKER), GENERATOR_VERSION)?;
        let staged = tmp.keep();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).ok();
        }
        if std::fs::rename(&staged, &dir).is_err() {
            // Another run won the race with an equivalent PKI; use theirs.
            std::fs::remove_dir_all(&staged).ok();
        }
        Ok(PkiDir { dir })
    }
}

/// Copies a materialised PKI to `out` (for `pgssl certs --out`).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == COMPLETE_MARKER {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

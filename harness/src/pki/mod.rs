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
use std::time::Duration;

/// Bump when the generator's output changes for the same spec.
const GENERATOR_VERSION: &str = "pgssl-pki-3";
/// Certificates are valid for ten years from generation; regenerate well before that.
const MAX_AGE: Duration = Duration::from_secs(180 * 24 * 3600);

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

    /// Returns the cached materialisation, generating it first if absent or too old. One
    /// process generates (under the cache's lock) while concurrent runs and workers wait and
    /// then share it; a stale PKI is replaced beside the old one, which servers of runs
    /// started earlier may still be reading.
    pub fn materialize(&self, cache: &Path) -> Result<PkiDir> {
        let dir = crate::cache::get_or_build(
            cache,
            &format!("pki-{}", self.content_hash()),
            Some(MAX_AGE),
            |staging| {
                generate::generate(self, staging)
                    .with_context(|| format!("generating PKI from {}", self.path.display()))
            },
        )?;
        Ok(PkiDir { dir })
    }
}

/// Copies a materialised PKI to `out` (for `pgssl certs --out`).
pub fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == crate::cache::COMPLETE {
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

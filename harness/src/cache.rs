//! Directories shared by every pgssl process on the machine (the PKI, initdb clusters, NSS
//! databases). Each is built at most once per key, by whichever process takes the key's lock
//! first, into a staging directory renamed into place when complete. A complete directory is
//! never removed or rewritten while a run may still use it: a stale one is replaced by a new
//! generation beside it, and the old generation goes only when no run can still hold it.
//!
//! Layout under the cache root, for a key `K`: `K@<generation>/` (complete, holds
//! [`COMPLETE`]), `.K.lock` (the builders' lock), `.K.tmp-*` (a build in progress).

use anyhow::{Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Written last into a staged directory; a directory without it is never used.
pub const COMPLETE: &str = ".complete";

/// A superseded generation is removed only this long after it went stale: a run that started
/// on it while it was still fresh cannot last this long.
const GRACE: Duration = Duration::from_secs(2 * 24 * 3600);

/// A staging directory this old is a killed build's (builds take seconds to minutes); this
/// catches keys nobody builds again (an edited PKI spec), which the lock holder does not see.
const ABANDONED_STAGING_AGE: Duration = Duration::from_secs(3600);

/// The current complete generation of `key` under `root`, built by `build` (into an empty
/// directory it is given) when there is none, or when the newest is older than `max_age`.
/// Safe when several processes and threads ask at once on a cold cache: one builds, the others
/// wait on the lock and then use what it built.
pub fn get_or_build(
    root: &Path,
    key: &str,
    max_age: Option<Duration>,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    if let Some(dir) = current(root, key, max_age) {
        return Ok(dir);
    }
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating the cache directory {}", root.display()))?;
    let _lock = lock(root, key)?;
    // Someone else may have built it while this process waited.
    if let Some(dir) = current(root, key, max_age) {
        return Ok(dir);
    }
    // Holding the lock, any staging directory of this key is a killed builder's.
    remove_matching(root, |name| name.starts_with(&format!(".{key}.tmp-")));
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{key}.tmp-"))
        .tempdir_in(root)
        .with_context(|| format!("creating a staging directory in {}", root.display()))?;
    build(staging.path())?;
    std::fs::write(staging.path().join(COMPLETE), "")
        .with_context(|| format!("writing into {}", staging.path().display()))?;
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = root.join(format!("{key}@{generation}"));
    std::fs::rename(staging.path(), &dir)
        .with_context(|| format!("moving the built {key} into {}", dir.display()))?;
    let _ = staging.keep();
    if let Some(max_age) = max_age {
        remove_superseded(root, key, &dir, max_age + GRACE);
    }
    Ok(dir)
}

/// The newest complete generation of `key`, if it is young enough.
fn current(root: &Path, key: &str, max_age: Option<Duration>) -> Option<PathBuf> {
    let (dir, built) = generations(root, key).into_iter().next()?;
    let age = SystemTime::now().duration_since(built).unwrap_or_default();
    match max_age {
        Some(max) if age >= max => None,
        _ => Some(dir),
    }
}

/// Complete generations of `key`, newest first, with the time each was completed.
fn generations(root: &Path, key: &str) -> Vec<(PathBuf, SystemTime)> {
    let prefix = format!("{key}@");
    let mut found: Vec<(u128, PathBuf, SystemTime)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let generation = name.strip_prefix(&prefix)?.parse::<u128>().ok()?;
            let built = std::fs::metadata(e.path().join(COMPLETE))
                .and_then(|m| m.modified())
                .ok()?;
            Some((generation, e.path(), built))
        })
        .collect();
    found.sort_by_key(|g| std::cmp::Reverse(g.0));
    found.into_iter().map(|(_, p, t)| (p, t)).collect()
}

/// Removes generations other than `keep` that went stale long enough ago.
fn remove_superseded(root: &Path, key: &str, keep: &Path, older_than: Duration) {
    for (dir, built) in generations(root, key) {
        let age = SystemTime::now().duration_since(built).unwrap_or_default();
        if dir != keep && age > older_than {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// The exclusive lock of `key`'s builders; released when dropped or when the process dies, so
/// a killed builder never blocks the next run.
pub fn lock(root: &Path, key: &str) -> Result<File> {
    let path = root.join(format!(".{key}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the lock {}", path.display()))?;
    file.lock()
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

fn remove_matching(root: &Path, matches: impl Fn(&str) -> bool) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_str().is_some_and(&matches) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes staging directories that killed runs left, including those of the layout before
/// generations (`.pki-tmp-*`, `.initdb-tmp-*`, `nss-client/building-*`).
pub fn reap_abandoned_staging(root: &Path) {
    let cutoff = SystemTime::now() - ABANDONED_STAGING_AGE;
    // `nss:<build>` keeps its databases under `in-image/<build>/` and its copy of this
    // machine's libraries under `host-libs/`.
    let in_image = std::fs::read_dir(root.join("in-image"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("nss-client"));
    let dirs = [
        root.to_path_buf(),
        root.join("nss-client"),
        root.join("host-libs"),
    ];
    for dir in dirs.into_iter().chain(in_image) {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let staging =
                (name.starts_with('.') && name.contains(".tmp-")) || name.starts_with("building-");
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < cutoff);
            if staging && old && e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn concurrent_callers_build_once_and_share_it() {
        let root = tempfile::tempdir().unwrap();
        let builds = Arc::new(AtomicUsize::new(0));
        let dirs: Vec<PathBuf> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let builds = builds.clone();
                    let root = root.path();
                    s.spawn(move || {
                        get_or_build(root, "k", None, |d| {
                            builds.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(50));
                            std::fs::write(d.join("f"), "x")?;
                            Ok(())
                        })
                        .unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert!(dirs.iter().all(|d| d == &dirs[0] && d.join("f").exists()));
    }

    #[test]
    fn stale_generation_is_replaced_beside_the_old_one() {
        let root = tempfile::tempdir().unwrap();
        let first = get_or_build(root.path(), "k", None, |_| Ok(())).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let second = get_or_build(
            root.path(),
            "k",
            Some(Duration::from_millis(10)),
            |_| Ok(()),
        )
        .unwrap();
        assert_ne!(first, second);
        // The old generation is still there for a run that may be using it.
        assert!(first.join(COMPLETE).exists());
        assert_eq!(current(root.path(), "k", None), Some(second));
    }

    #[test]
    fn a_failed_build_leaves_nothing_and_the_next_caller_builds() {
        let root = tempfile::tempdir().unwrap();
        let err = get_or_build(root.path(), "k", None, |_| anyhow::bail!("no")).unwrap_err();
        assert_eq!(err.to_string(), "no");
        assert_eq!(current(root.path(), "k", None), None);
        let dir = get_or_build(root.path(), "k", None, |_| Ok(())).unwrap();
        assert!(dir.join(COMPLETE).exists());
    }

    #[test]
    fn a_killed_builders_staging_directory_is_reaped() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(".k.tmp-abc")).unwrap();
        get_or_build(root.path(), "k", None, |_| Ok(())).unwrap();
        assert!(!root.path().join(".k.tmp-abc").exists());
    }
}

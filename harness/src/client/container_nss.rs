//! NSS of a server build's image as a client stack (`nss:<build>`, NSS 3.61 to sid's): the
//! host `nss` stack's own adapter (`pgssl stack-shim nss`, the attempt protocol, one attempt
//! at a time per process) run inside a container of the image, so the NSS that builds the
//! databases (certutil, pk12util, crlutil), verifies and handshakes is the image's.
//!
//! pgssl is built against this machine's glibc, which an older image lacks, and the image's
//! NSS may need a newer glibc than this machine's. So the shim runs under whichever of the
//! two dynamic loaders is newer, with this machine's libraries pgssl links (its glibc, OpenSSL
//! 3, libpq and their dependencies, never NSS or NSPR) copied once into the cache (which the
//! container sees at the same path): first on the search path when this machine's glibc is the newer one,
//! after the image's directories otherwise. NSS and NSPR (and softoken and freebl, which NSS
//! loads itself) always come from the image.
//!
//! The shim's databases are derived from the request's PEM files by the image's tools into a
//! cache of that build (`<cache>/in-image/<build>/`); the container runs as this user, so
//! what it writes there is this user's.

use super::container_shim::{ContainerShim, Started};
use super::registry::Stacks;
use super::shim::ShimSpec;
use super::{self_shim, ConnectRequest};
use crate::error_class::ErrorClass;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Prefix of the stack's name: `nss:<build>`.
pub const PREFIX: &str = "nss:";

/// Libraries the image provides: its NSS and NSPR are the point of the stack.
const FROM_IMAGE: &[&str] = &[
    "libnss3.so",
    "libnssutil3.so",
    "libsmime3.so",
    "libssl3.so",
    "libnspr4.so",
    "libplc4.so",
    "libplds4.so",
];

/// glibc's compatibility libraries, which an older image's NSPR links and which must then
/// match this machine's libc.
const GLIBC_STUBS: &[&str] = &[
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
];

/// Starts the client container of `build` and the shim in it; its hello gives the image's
/// NSS version.
pub fn start(build: &str, stacks: &Stacks) -> Result<ContainerShim> {
    let folder = stacks
        .folders
        .get("nss")
        .context("the stacks folder has no `nss` stack")?;
    let exe = executable_file()?;
    let host = HostRuntime::detect(&exe)?;
    let libs = host.cached_copy()?;
    let cache = crate::pki::cache_root();
    let own_cache = cache.join("in-image").join(build);
    std::fs::create_dir_all(&own_cache)
        .with_context(|| format!("creating {}", own_cache.display()))?;
    let stacks_dir = std::path::absolute(&stacks.dir)?;
    let runs = crate::cleanup::run_root();
    // SAFETY: getuid/getgid cannot fail.
    let user = unsafe { format!("{}:{}", libc::getuid(), libc::getgid()) };
    let started = Started::new(
        build,
        &[
            (cache.as_path(), false),
            (runs.as_path(), true),
            (stacks_dir.as_path(), true),
            (exe.as_path(), true),
        ],
        Some(user),
    )?;
    // The libraries' copy is in the cache, which the container sees at the same path.
    let image_glibc = started
        .stdout(&["getconf", "GNU_LIBC_VERSION"])
        .context("asking the image for its glibc version")?;
    let cmd = host.command(&libs, &image_glibc, &exe, &stacks_dir)?;
    let spec = ShimSpec {
        env: vec![
            ("PGSSL_CACHE_DIR".into(), own_cache.display().to_string()),
            ("HOME".into(), "/nonexistent/pgssl-home".into()),
        ],
        name: format!("{PREFIX}{build}"),
        dir: folder.dir.clone(),
        command: cmd.clone(),
        install: format!("`pgssl images build {build}`"),
        facts: Vec::new(),
        max_in_flight: folder.spec.max_in_flight,
        // Replies carry the class the adapter gave, as for the host stack.
        shim_classes: ErrorClass::ALL.to_vec(),
        errors: folder.errors.clone().unwrap_or_default(),
    };
    started.shim(spec, cmd, |_: &mut ConnectRequest| {})
}

/// The file of the running pgssl (a bind mount needs a path, not `/proc/self/exe`).
fn executable_file() -> Result<PathBuf> {
    let exe = super::helper_process::executable();
    std::fs::canonicalize(&exe).with_context(|| format!("locating pgssl ({})", exe.display()))
}

/// This machine's dynamic loader and the libraries pgssl links, as `ldd` lists them.
struct HostRuntime {
    loader: PathBuf,
    libs: Vec<PathBuf>,
    /// The directory glibc's own libraries are in (`/lib/x86_64-linux-gnu`).
    multiarch: PathBuf,
}

impl HostRuntime {
    fn detect(exe: &Path) -> Result<Self> {
        let out = std::process::Command::new("ldd")
            .arg(exe)
            .output()
            .context("running ldd (libc-bin) on pgssl")?;
        if !out.status.success() {
            bail!(
                "ldd {}: {}",
                exe.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let (mut loader, mut libs) = (None, Vec::new());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            match line.split_once(" => ") {
                Some((name, rest)) => {
                    let path = rest.split(" (").next().unwrap_or_default();
                    if !FROM_IMAGE.contains(&name) && path.starts_with('/') {
                        libs.push(PathBuf::from(path));
                    }
                }
                None if line.starts_with('/') => {
                    loader = line.split(" (").next().map(PathBuf::from);
                }
                None => {}
            }
        }
        let loader = loader.context("ldd names no dynamic loader for pgssl")?;
        let libc = libs
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == "libc.so.6"))
            .context("ldd names no libc.so.6 for pgssl")?;
        let multiarch = libc.parent().map(Path::to_path_buf).unwrap_or_default();
        for stub in GLIBC_STUBS {
            let p = multiarch.join(stub);
            if p.exists() {
                libs.push(p);
            }
        }
        Ok(HostRuntime {
            loader,
            libs,
            multiarch,
        })
    }

    /// The libraries and the loader (as `ld.so`) copied into the cache, once per content.
    fn cached_copy(&self) -> Result<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let mut listing = String::new();
        for p in self.libs.iter().chain([&self.loader]) {
            let m = std::fs::metadata(p).with_context(|| format!("reading {}", p.display()))?;
            listing.push_str(&format!("{} {} {}\n", p.display(), m.len(), m.mtime()));
        }
        let key = format!("libs-{}", crate::pki::nss::digest(listing.as_bytes()));
        let root = crate::pki::cache_root().join("host-libs");
        crate::cache::get_or_build(&root, &key, None, |staging| {
            for p in &self.libs {
                let name = p.file_name().context("a library without a name")?;
                std::fs::copy(p, staging.join(name))
                    .with_context(|| format!("copying {}", p.display()))?;
            }
            std::fs::copy(&self.loader, staging.join("ld.so"))
                .with_context(|| format!("copying {}", self.loader.display()))?;
            Ok(())
        })
    }

    /// The shim's command inside an image whose glibc is `image_glibc` ("glibc 2.31").
    fn command(
        &self,
        libs: &Path,
        image_glibc: &str,
        exe: &Path,
        stacks_dir: &Path,
    ) -> Result<Vec<String>> {
        let image = glibc_version(image_glibc)
            .with_context(|| format!("the image's glibc version {image_glibc:?}"))?;
        // SAFETY: returns a static string.
        let ours = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        let ours = glibc_version(&ours.to_string_lossy()).context("this machine's glibc")?;
        let image_dirs = format!(
            "{}:/usr{}",
            self.multiarch.display(),
            self.multiarch.display()
        );
        let libs = libs.display();
        let (loader, path) = if ours > image {
            (format!("{libs}/ld.so"), format!("{libs}:{image_dirs}"))
        } else {
            (
                self.loader.display().to_string(),
                format!("{image_dirs}:{libs}"),
            )
        };
        Ok(vec![
            loader,
            "--library-path".into(),
            path,
            exe.display().to_string(),
            self_shim::SUBCOMMAND.into(),
            "nss".into(),
            "--stacks".into(),
            stacks_dir.display().to_string(),
        ])
    }
}

/// `(2, 31)` from "glibc 2.31" or "2.31".
fn glibc_version(text: &str) -> Option<(u32, u32)> {
    let v = text.trim().rsplit(' ').next()?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::glibc_version;

    #[test]
    fn glibc_versions_compare_as_numbers() {
        assert_eq!(glibc_version("glibc 2.31"), Some((2, 31)));
        assert!(glibc_version("glibc 2.9") < glibc_version("2.36"));
        assert_eq!(glibc_version("musl"), None);
    }
}

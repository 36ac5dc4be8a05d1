//! Which TLS library a PostgreSQL build uses, from the shared libraries its postmaster maps
//! (or `ldd` lists), with the version read from the library file itself: OpenSSL
//! (`libssl.so.*` with `libcrypto.so.*`) or NSS (`libssl3.so` / `libnss3.so`, as the proposed
//! NSS backend links). Shared by every runtime; selectors see it as `server.tls_library`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// `(library, version)` for a process that maps `paths`; `read` gives a path's bytes (the
/// host's file, or a container's through `/proc/PID/root`). `("none", "")` without TLS.
pub fn detect(paths: &[String], read: impl Fn(&str) -> Option<Vec<u8>>) -> (String, String) {
    let find = |needle: &str| paths.iter().find(|p| file_name(p).starts_with(needle));
    if find("libssl.so").is_some() {
        let version = find("libcrypto.so")
            .and_then(|p| read(p))
            .and_then(|b| openssl_version_in(&b));
        return (
            "openssl".into(),
            version.unwrap_or_else(|| "unknown".into()),
        );
    }
    if let Some(nss) = find("libnss3.so").or_else(|| find("libssl3.so")) {
        // The version string lives in libnss3 whichever of the two was found.
        let lib = find("libnss3.so").unwrap_or(nss);
        let version = read(lib).and_then(|b| nss_version_in(&b));
        return ("nss".into(), version.unwrap_or_else(|| "unknown".into()));
    }
    ("none".into(), String::new())
}

/// The library paths a process maps (`/proc/PID/maps`).
pub fn mapped_libraries(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut paths: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.starts_with('/'))
        .map(str::to_string)
        .collect();
    paths.dedup();
    paths
}

/// The resolved library paths `ldd` lists for a binary (`name => /path (0x...)`).
pub fn ldd_libraries(ldd_output: &str) -> Vec<String> {
    ldd_output
        .lines()
        .filter_map(|l| l.split("=>").nth(1))
        .filter_map(|r| r.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// A host file's bytes, read once per path and run (servers start often; libraries are large).
pub fn read_cached(path: &str) -> Option<Vec<u8>> {
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, Option<Vec<u8>>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(v) = seen.lock().ok()?.get(Path::new(path)) {
        return v.clone();
    }
    let bytes = std::fs::read(path).ok();
    seen.lock().ok()?.insert(path.into(), bytes.clone());
    bytes
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Finds `OpenSSL 3.0.17 ` style version text inside a libcrypto binary.
pub fn openssl_version_in(bytes: &[u8]) -> Option<String> {
    version_after(bytes, b"OpenSSL ", |text, next| {
        text.matches('.').count() == 2 && next == Some(b' ')
    })
}

/// Finds `Version: NSS 3.87.1` inside a libnss3 binary.
pub fn nss_version_in(bytes: &[u8]) -> Option<String> {
    version_after(bytes, b"Version: NSS ", |text, _| text.contains('.'))
}

/// The first run of digits and dots (and letters, as in `1.1.1w`) after `needle` that starts
/// with a digit and passes `ok(text, byte after it)`.
fn version_after(
    bytes: &[u8],
    needle: &[u8],
    ok: impl Fn(&str, Option<u8>) -> bool,
) -> Option<String> {
    let mut i = 0;
    while let Some(pos) = bytes[i..].windows(needle.len()).position(|w| w == needle) {
        let start = i + pos + needle.len();
        let tail: Vec<u8> = bytes[start..]
            .iter()
            .take(16)
            .copied()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'.')
            .collect();
        let text = String::from_utf8_lossy(&tail).to_string();
        if text.chars().next().is_some_and(|c| c.is_ascii_digit())
            && ok(&text, bytes.get(start + tail.len()).copied())
        {
            return Some(text);
        }
        i = start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_version_text() {
        let blob = b"\0\0OpenSSL version: bad\0OpenSSL 3.0.17 1 Jul 2025\0";
        assert_eq!(openssl_version_in(blob).as_deref(), Some("3.0.17"));
        assert_eq!(
            openssl_version_in(b"OpenSSL 1.1.1w  11 Sep 2023").as_deref(),
            Some("1.1.1w")
        );
        assert_eq!(
            nss_version_in(b"\0NSS 3\0Version: NSS 3.87.1\0").as_deref(),
            Some("3.87.1")
        );
    }

    #[test]
    fn tells_openssl_from_nss_builds() {
        let read = |p: &str| -> Option<Vec<u8>> {
            Some(match p {
                "/lib/libcrypto.so.3" => b"OpenSSL 3.0.19 27 Jan 2026".to_vec(),
                "/lib/libnss3.so" => b"Version: NSS 3.87.1".to_vec(),
                _ => return None,
            })
        };
        let paths = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Debian's postgres: OpenSSL, and Kerberos' libk5crypto must not count.
        let openssl = paths(&[
            "/lib/libk5crypto.so.3",
            "/lib/libssl.so.3",
            "/lib/libcrypto.so.3",
        ]);
        assert_eq!(detect(&openssl, read), ("openssl".into(), "3.0.19".into()));
        // The NSS backend: NSS's libssl3.so is not OpenSSL's libssl.so.3.
        let nss = paths(&["/lib/libssl3.so", "/lib/libnss3.so", "/lib/libnspr4.so"]);
        assert_eq!(detect(&nss, read), ("nss".into(), "3.87.1".into()));
        assert_eq!(
            detect(&paths(&["/lib/libc.so.6"]), read),
            ("none".into(), String::new())
        );
        let ldd = "\tlibssl.so.3 => /lib/libssl.so.3 (0x1)\n\tlinux-vdso.so.1 (0x2)\n";
        assert_eq!(ldd_libraries(ldd), ["/lib/libssl.so.3"]);
    }
}

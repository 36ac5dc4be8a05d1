//! OpenSSL 3.0 decodes an RSA-PSS public key wrongly ("X509_PUBKEY_get0: decode error") when
//! two threads of a process are the first to decode one at the same time: a race in the
//! library's first use of that decoder, not a property of the certificate. The in-process
//! stacks (libpq, native-tls) share this process's libcrypto and run attempts in parallel, so
//! before the first attempt with a PKI the harness decodes every certificate in it once, alone.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static PRIMED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Reads every certificate of `dir` once per process; later calls return at once. Attempts
/// call this before connecting, so none decodes a key type before it has been decoded here.
pub fn prime(dir: &Path) {
    let mut primed = PRIMED.lock().unwrap_or_else(|e| e.into_inner());
    let primed = primed.get_or_insert_with(HashSet::new);
    if primed.contains(dir) {
        return;
    }
    decode_certificates(dir);
    primed.insert(dir.to_path_buf());
}

/// Parses each PEM file of `dir` as certificates (parsing decodes their public keys). Files
/// that are not certificates (keys, CRLs) fail to parse, which is fine: nothing is judged here.
fn decode_certificates(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "crt" || e == "pem") {
            if let Ok(pem) = std::fs::read(&path) {
                let _ = openssl::x509::X509::stack_from_pem(&pem);
            }
        }
    }
}

//! Server TLS as a seam: one implementation per TLS library turns a scenario's server TLS
//! material (PKI names) into the build's settings and files. The core names PKI files only;
//! what a library calls them lives in its file here (OpenSSL: PEM files in `ssl_cert_file`
//! and friends). A build's library is detected (`runtime::tls_library`), so adding a library
//! is one file implementing [`ServerTls`] and one line in [`for_library`].

mod openssl;

pub use openssl::OpenSsl;

use crate::pki::PkiDir;
use crate::runtime::ServerSetup;

/// A scenario's server TLS material, as PKI names.
#[derive(Debug, Default, Clone, Copy)]
pub struct TlsMaterial<'a> {
    pub cert: Option<&'a str>,
    pub key: Option<&'a str>,
    pub ca: Option<&'a str>,
    pub crl: Option<&'a str>,
    pub crl_dir: Option<&'a str>,
}

/// How one TLS library's server is configured.
pub trait ServerTls: Send + Sync {
    /// The library, as detection names it (`server.tls_library`).
    fn library(&self) -> &'static str;

    /// Adds the settings and files for `material` to `setup`. Every setting the library has
    /// is written, empty where unset, so a reload clears what an earlier scenario set.
    fn configure(&self, material: &TlsMaterial, pki: &PkiDir, setup: &mut ServerSetup);

    /// Replaces the server certificate and/or key (a scenario's `[reload]`).
    fn replace_identity(
        &self,
        cert: Option<&str>,
        key: Option<&str>,
        pki: &PkiDir,
        setup: &mut ServerSetup,
    );
}

/// The implementation for a detected library. A server built without TLS (`none`) gets
/// OpenSSL's settings: it knows them, and refuses `ssl = on` itself.
pub fn for_library(library: &str) -> anyhow::Result<&'static dyn ServerTls> {
    match library {
        "openssl" | "none" => Ok(&OpenSsl),
        other => anyhow::bail!(
            "the server build uses the TLS library {other:?}, and pgssl cannot configure its \
             server side yet (known: openssl); see ARCHITECTURE.md, \"Server TLS\""
        ),
    }
}

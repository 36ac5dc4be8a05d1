//! Server TLS as a seam: one implementation per TLS library turns a scenario's server TLS
//! material (PKI names) into the build's settings and files. The core names PKI files only;
//! what a library calls them lives in its file here (OpenSSL: PEM files in `ssl_cert_file`
//! and friends; NSS: one certificate database in `ssl_database`, the certificate named by
//! nickname). A build's library is detected (`runtime::tls_library`), so adding a library is
//! one file implementing [`ServerTls`] and one line in [`for_library`].

mod nss;
mod openssl;

pub use nss::Nss;
pub use openssl::OpenSsl;

use crate::pki::PkiDir;
use crate::runtime::ServerSetup;

/// A scenario's server TLS material, as PKI names. A `[reload]` gives new material (its
/// certificate and key in place of the first ones), configured again from scratch.
#[derive(Debug, Default, Clone, Copy)]
pub struct TlsMaterial<'a> {
    pub cert: Option<&'a str>,
    pub key: Option<&'a str>,
    /// The key file's password as the PKI spec declares it (encrypted key formats), which a
    /// library that keeps keys in a database needs to read the key and protect the database.
    pub key_password: Option<&'a str>,
    pub ca: Option<&'a str>,
    pub crl: Option<&'a str>,
    pub crl_dir: Option<&'a str>,
}

/// How one TLS library's server is configured.
pub trait ServerTls: Send + Sync {
    /// The library, as detection names it (`server.tls_library`).
    fn library(&self) -> &'static str;

    /// Adds the settings and files for `material` to `setup`. Every setting the library has
    /// is written, empty where unset, so a reload clears what an earlier scenario set. May
    /// build files (and block while doing so); an error is the harness's, not an outcome.
    fn configure(
        &self,
        material: &TlsMaterial,
        pki: &PkiDir,
        setup: &mut ServerSetup,
    ) -> anyhow::Result<()>;
}

/// The implementation for a detected library. A server built without TLS (`none`) gets
/// OpenSSL's settings: it knows them, and refuses `ssl = on` itself.
pub fn for_library(library: &str) -> anyhow::Result<&'static dyn ServerTls> {
    match library {
        "openssl" | "none" => Ok(&OpenSsl),
        "nss" => Ok(&Nss),
        other => anyhow::bail!(
            "the server build uses the TLS library {other:?}, and pgssl cannot configure its \
             server side (known: openssl, nss); see ARCHITECTURE.md, \"Server TLS\""
        ),
    }
}

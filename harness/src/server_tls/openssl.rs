//! OpenSSL: each PEM file is copied into the data directory (`pgssl/<name>`) and named by its
//! setting (`ssl_cert_file`, `ssl_key_file`, `ssl_ca_file`, `ssl_crl_file`, `ssl_crl_dir`).

use super::{ServerTls, TlsMaterial};
use crate::pki::PkiDir;
use crate::runtime::ServerSetup;

pub struct OpenSsl;

impl ServerTls for OpenSsl {
    fn library(&self) -> &'static str {
        "openssl"
    }

    fn configure(
        &self,
        m: &TlsMaterial,
        pki: &PkiDir,
        setup: &mut ServerSetup,
    ) -> anyhow::Result<()> {
        for (setting, file, value) in [
            ("ssl_cert_file", "server.crt", m.cert),
            ("ssl_key_file", "server.key", m.key),
            ("ssl_ca_file", "ca.crt", m.ca),
            ("ssl_crl_file", "crl.pem", m.crl),
            ("ssl_crl_dir", "crldir", m.crl_dir),
        ] {
            match value {
                Some(name) => place_file(setup, setting, file, pki.path(name)),
                None => setup.settings.push((setting.into(), String::new())),
            }
        }
        Ok(())
    }
}

/// Installs `source` as `pgssl/<file>` in the data directory and points `setting` at it,
/// replacing an earlier file of that name.
fn place_file(setup: &mut ServerSetup, setting: &str, file: &str, source: std::path::PathBuf) {
    setup.files.retain(|(f, _)| f != file);
    setup.files.push((file.to_string(), source));
    setup
        .settings
        .push((setting.into(), format!("pgssl/{file}")));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_copied_and_unset_settings_cleared() {
        let pki = PkiDir { dir: "/pki".into() };
        let mut setup = ServerSetup::default();
        let m = TlsMaterial {
            cert: Some("server-cn-only.crt"),
            key: Some("server-cn-only.key"),
            crl_dir: Some("root+client-crldir"),
            ..Default::default()
        };
        OpenSsl.configure(&m, &pki, &mut setup).unwrap();
        let get = |k: &str| {
            setup
                .settings
                .iter()
                .rev()
                .find(|(s, _)| s == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("ssl_cert_file").as_deref(), Some("pgssl/server.crt"));
        assert_eq!(get("ssl_ca_file").as_deref(), Some(""));
        assert_eq!(get("ssl_crl_dir").as_deref(), Some("pgssl/crldir"));
        assert!(setup
            .files
            .contains(&("crldir".into(), "/pki/root+client-crldir".into())));
        let reloaded = TlsMaterial {
            cert: Some("server-cn-and-alt-names.crt"),
            ..m
        };
        OpenSsl.configure(&reloaded, &pki, &mut setup).unwrap();
        assert_eq!(
            setup
                .files
                .iter()
                .filter(|(f, _)| f == "server.crt")
                .count(),
            1,
            "the reload's certificate replaces the file"
        );
        assert!(setup.files.contains(&(
            "server.crt".into(),
            "/pki/server-cn-and-alt-names.crt".into()
        )));
    }
}

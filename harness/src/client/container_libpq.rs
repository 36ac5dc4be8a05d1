//! libpq of a server build, inside a container of that build's image (`libpq:<build>`), so
//! libpq 13, 15, 17 and 18 (with their own OpenSSL) are client stacks too.
//!
//! A shim like any driver's (the attempt protocol): `stacks/libpq/container-shim.pl` runs psql
//! per request inside the image (every image has perl with JSON::PP, which postgresql-common
//! needs). Only the transport differs ([`ContainerShim`]). Its error texts are libpq's, so they
//! map through `stacks/libpq/errors.toml`, as for the in-process libpq.
//!
//! The PKI cache, the run directories (for `host = "@socket"`) and the stack's folder are
//! bind-mounted read-only at the same paths, so the paths a request names resolve inside.

use super::container_shim::{ContainerShim, Started};
use super::error_table::ErrorTable;
use super::libpq::isolate;
use super::registry::Fact;
use super::shim::ShimSpec;
use crate::error_class::ErrorClass;
use anyhow::Result;
use std::path::Path;

/// Prefix of the stack's name: `libpq:<build>`.
pub const PREFIX: &str = "libpq:";

/// The shim's file in the stack's folder.
const SHIM: &str = "container-shim.pl";

/// Attempts one shim process takes at once (each is a psql process in the container): as
/// many as the runner makes at once (2 scenarios x 8), so none queues.
const IN_FLIGHT: usize = 16;

/// Starts the client container of `build` and the shim in it; its hello gives the libpq and
/// OpenSSL versions. `dir`: the stack's folder (`stacks/libpq`); `errors`: its table.
pub fn start(build: &str, dir: &Path, errors: ErrorTable) -> Result<ContainerShim> {
    let pki_root = crate::pki::cache_root();
    std::fs::create_dir_all(&pki_root)?;
    let runs = crate::cleanup::run_root();
    let started = Started::new(
        build,
        &[
            (pki_root.as_path(), true),
            (runs.as_path(), true),
            (dir, true),
        ],
        None,
    )?;
    let cmd = vec!["perl".to_string(), dir.join(SHIM).display().to_string()];
    let spec = ShimSpec {
        env: Vec::new(),
        name: format!("{PREFIX}{build}"),
        dir: dir.to_path_buf(),
        command: cmd.clone(),
        install: format!("`pgssl images build {build}`"),
        facts: vec![Fact::TlsLibrary, Fact::TlsVersion, Fact::LibpqVersion],
        max_in_flight: IN_FLIGHT,
        // psql's own `timeout` ran out: the shim knows that for sure.
        shim_classes: vec![ErrorClass::Timeout],
        errors,
    };
    started.shim(spec, cmd, isolate)
}

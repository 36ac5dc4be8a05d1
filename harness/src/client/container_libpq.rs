//! libpq of a server build, inside a container of that build's image (`libpq:<build>`), so
//! libpq 13, 15, 17 and 18 (with their own OpenSSL) are client stacks too.
//!
//! A shim like any driver's ([`Shim`], the attempt protocol): `stacks/libpq/container-shim.pl`
//! runs psql per request inside the image (every image has perl with JSON::PP, which
//! postgresql-common needs). Only the transport differs: one long-lived exec into the stack's
//! container ([`ContainerExec`]) instead of a child process, so the deadline, restart, crash
//! and several-in-flight handling are shim.rs's. Its error texts are libpq's, so they map
//! through `stacks/libpq/errors.toml`, as for the in-process libpq.
//!
//! One long-lived container per stack (host network; the PKI cache, the run directories (for
//! `host = "@socket"`) and the stack's folder bind-mounted read-only at the same paths, so the
//! paths a request names resolve inside it), started when the stack is built.

use super::error_table::ErrorTable;
use super::libpq::isolate;
use super::registry::Fact;
use super::shim::{Shim, ShimSpec};
use super::shim_transport::ContainerExec;
use super::{ClientStack, ConnectRequest};
use crate::error_class::ErrorClass;
use crate::facts::ClientFacts;
use crate::outcome::Outcome;
use crate::runtime::docker;
use anyhow::Result;
use futures_util::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;
use testcontainers::{ContainerAsync, GenericImage};

/// Prefix of the stack's name: `libpq:<build>`.
pub const PREFIX: &str = "libpq:";

/// The shim's file in the stack's folder.
const SHIM: &str = "container-shim.pl";

/// Attempts one shim process takes at once (each is a psql process in the container): as
/// many as the runner makes at once (2 scenarios x 8), so none queues.
const IN_FLIGHT: usize = 16;

pub struct ContainerLibpq {
    /// Taken on drop before the container goes, so its exec is killed, not orphaned.
    shim: Option<Shim>,
    container: Option<Arc<ContainerAsync<GenericImage>>>,
    _registration: crate::cleanup::Registration,
}

impl ContainerLibpq {
    /// Starts the client container of `build` and the shim in it; its hello gives the libpq
    /// and OpenSSL versions. `dir`: the stack's folder (`stacks/libpq`); `errors`: its table.
    pub fn new(build: &str, dir: &Path, errors: ErrorTable) -> Result<Self> {
        let image = docker::image_for(build)?;
        let pki_root = crate::pki::cache_root();
        std::fs::create_dir_all(&pki_root)?;
        // `sleep` never exits by itself; removal kills it (rm -f), so its PID-1 signal
        // handling does not matter.
        // The run directories' root too (read-only): the servers' Unix sockets live there, for
        // cases that connect with `host = "@socket"`.
        let tmp = crate::cleanup::run_root();
        let req = docker::request(
            &image,
            vec!["sleep".into(), "infinity".into()],
            &[
                (pki_root.as_path(), true),
                (tmp.as_path(), true),
                (dir, true),
            ],
        );
        let (container, registration) = docker::start(req)?;
        let container = Arc::new(container);
        let transport = ContainerExec {
            container_id: container.id().to_string(),
            cmd: vec!["perl".into(), dir.join(SHIM).display().to_string()],
        };
        let spec = ShimSpec {
            env: Vec::new(),
            name: format!("{PREFIX}{build}"),
            dir: dir.to_path_buf(),
            command: transport.cmd.clone(),
            install: format!("`pgssl images build {build}`"),
            facts: vec![Fact::TlsLibrary, Fact::TlsVersion, Fact::LibpqVersion],
            max_in_flight: IN_FLIGHT,
            // psql's own `timeout` ran out: the shim knows that for sure.
            shim_classes: vec![ErrorClass::Timeout],
            errors,
        };
        let shim = match Shim::start_with(spec, Arc::new(transport)) {
            Ok(s) => s,
            Err(e) => {
                docker::remove_shared(container);
                return Err(e);
            }
        };
        Ok(ContainerLibpq {
            shim: Some(shim),
            container: Some(container),
            _registration: registration,
        })
    }

    fn shim(&self) -> &Shim {
        self.shim.as_ref().expect("the shim until drop")
    }
}

impl Drop for ContainerLibpq {
    /// Stops the shim, then removes the container now, on the Docker runtime (testcontainers'
    /// own drop needs a runtime around, and the last owner of a stack may be plain `main`).
    fn drop(&mut self) {
        drop(self.shim.take());
        if let Some(c) = self.container.take() {
            docker::remove_shared(c);
        }
    }
}

impl ClientStack for ContainerLibpq {
    fn facts(&self) -> &ClientFacts {
        self.shim().facts()
    }

    fn in_process(&self) -> bool {
        false
    }

    fn connect(&self, mut request: ConnectRequest) -> BoxFuture<'static, Outcome> {
        isolate(&mut request);
        self.shim().connect(request)
    }

    fn try_connect(
        &self,
        mut request: ConnectRequest,
    ) -> BoxFuture<'static, Result<Outcome, String>> {
        isolate(&mut request);
        self.shim().try_connect(request)
    }

    fn owns_deadline(&self) -> bool {
        self.shim().owns_deadline()
    }
}

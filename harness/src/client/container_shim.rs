//! A shim inside a container of a server build's image: the container (host network, the
//! paths requests name bind-mounted at the same paths), the shim's processes as execs in it
//! ([`ContainerExec`]), and its removal. `libpq:<build>` and `nss:<build>` differ only in the
//! command and what they mount; the deadline, restart, crash and pooling logic is shim.rs's.

use super::shim::{Shim, ShimSpec};
use super::shim_transport::ContainerExec;
use super::{ClientStack, ConnectRequest};
use crate::facts::ClientFacts;
use crate::outcome::Outcome;
use crate::runtime::docker;
use anyhow::Result;
use futures_util::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;
use testcontainers::{ContainerAsync, GenericImage};

pub struct ContainerShim {
    /// Taken on drop before the container goes, so its execs are killed, not orphaned.
    shim: Option<Shim>,
    container: Option<Arc<ContainerAsync<GenericImage>>>,
    /// Applied to every request before the shim sees it (libpq's isolation defaults).
    prepare: fn(&mut ConnectRequest),
    _registration: crate::cleanup::Registration,
}

/// A started container of a build's image, before its shim runs.
pub struct Started {
    pub container: Arc<ContainerAsync<GenericImage>>,
    registration: crate::cleanup::Registration,
}

impl Started {
    /// Starts a container of `build`'s image that only waits (removal kills it, so its PID-1
    /// signal handling does not matter), with `mounts` (path, read-only) and as `user`.
    pub fn new(build: &str, mounts: &[(&Path, bool)], user: Option<String>) -> Result<Self> {
        use testcontainers::ImageExt;
        let image = docker::image_for(build)?;
        let mut req = docker::request(&image, vec!["sleep".into(), "infinity".into()], mounts);
        if let Some(user) = user {
            req = req.with_user(user);
        }
        let (container, registration) = docker::start(req)?;
        Ok(Started {
            container: Arc::new(container),
            registration,
        })
    }

    /// Runs `cmd` in it and returns its stdout.
    pub fn stdout(&self, cmd: &[&str]) -> Result<String> {
        let out = docker::exec_stdout(&self.container, cmd)?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// Starts the shim (`spec`, `cmd` inside the container) and reads its hello; the container
    /// is removed if that fails.
    pub fn shim(
        self,
        spec: ShimSpec,
        cmd: Vec<String>,
        prepare: fn(&mut ConnectRequest),
    ) -> Result<ContainerShim> {
        let transport = ContainerExec {
            container_id: self.container.id().to_string(),
            cmd,
        };
        match Shim::start_with(spec, Arc::new(transport)) {
            Ok(shim) => Ok(ContainerShim {
                shim: Some(shim),
                container: Some(self.container),
                prepare,
                _registration: self.registration,
            }),
            Err(e) => {
                docker::remove_shared(self.container);
                Err(e)
            }
        }
    }
}

impl ContainerShim {
    fn shim(&self) -> &Shim {
        self.shim.as_ref().expect("the shim until drop")
    }
}

impl Drop for ContainerShim {
    /// Stops the shim, then removes the container now, on the Docker runtime (testcontainers'
    /// own drop needs a runtime around, and the last owner of a stack may be plain `main`).
    fn drop(&mut self) {
        drop(self.shim.take());
        if let Some(c) = self.container.take() {
            docker::remove_shared(c);
        }
    }
}

impl ClientStack for ContainerShim {
    fn facts(&self) -> &ClientFacts {
        self.shim().facts()
    }

    fn in_process(&self) -> bool {
        false
    }

    fn connect(&self, mut request: ConnectRequest) -> BoxFuture<'static, Outcome> {
        (self.prepare)(&mut request);
        self.shim().connect(request)
    }

    fn try_connect(
        &self,
        mut request: ConnectRequest,
    ) -> BoxFuture<'static, Result<Outcome, String>> {
        (self.prepare)(&mut request);
        self.shim().try_connect(request)
    }

    fn owns_deadline(&self) -> bool {
        self.shim().owns_deadline()
    }
}

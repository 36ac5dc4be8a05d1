//! What the container runtime and the in-container client share: one tokio runtime for every
//! Docker call (testcontainers' clients are tied to the runtime that made them, and callers
//! here are both blocking and async), the owner label, one-shot probe containers, and the
//! image check that keeps testcontainers from ever trying to pull.
//!
//! Every Docker call goes through the API: testcontainers for containers' lives, bollard (its
//! own client, at its version) for what testcontainers does not offer (image checks, listing
//! and removing by label, execs with stdin; see `docker_exec.rs`). No `docker` CLI: one path,
//! one `DOCKER_HOST` reading, and no CLI needed on the machine.

use anyhow::{anyhow, bail, Context, Result};
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::Docker;
use std::collections::HashMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;
use testcontainers::core::wait::ExitWaitStrategy;
use testcontainers::core::{Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// Label on every container pgssl starts: `<pid>:<start time>` of the owning run, so a later
/// run can tell a live owner from a killed one (see `cleanup::reap_stale`).
pub const OWNER_LABEL: &str = "org.pgssl.owner";

/// Repository of the images `pgssl images build` makes: `pgssl/<build>`.
pub const IMAGE_REPO: &str = "pgssl";

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pgssl-docker")
            .enable_all()
            .build()
            .expect("tokio runtime for Docker calls")
    })
}

/// The bollard client, made on the Docker runtime (its connections live there). Reads
/// `DOCKER_HOST` as testcontainers does (a Unix socket by default).
pub fn client() -> Result<Docker> {
    static CLIENT: OnceLock<Result<Docker, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            block_on(async { Docker::connect_with_defaults().map_err(|e| e.to_string()) })
        })
        .clone()
        .map_err(|e| anyhow!("connecting to Docker: {e}"))
}

/// Runs a Docker future on the Docker runtime and waits for it from any thread, async or not.
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    rt().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().expect("Docker task ended without a result")
}

/// Runs a Docker future on the Docker runtime, awaited from another runtime.
pub async fn run<F>(fut: F) -> Result<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt().spawn(fut)
        .await
        .map_err(|e| anyhow!("Docker task failed: {e}"))
}

/// `<pid>:<start time>` of this process.
pub fn owner_value() -> String {
    let me = std::process::id() as i32;
    format!(
        "{me}:{}",
        crate::cleanup::process_start_time(me).unwrap_or(0)
    )
}

/// The image of a server build, refusing early when it is missing: no registry is reachable,
/// and testcontainers would try to pull.
pub fn image_for(build: &str) -> Result<String> {
    let name = format!("{IMAGE_REPO}/{build}");
    if !image_exists(&name) {
        bail!("no image {name}: build it first with `pgssl images build {build}` (recipes in ci/images/)");
    }
    Ok(name)
}

pub fn image_exists(name: &str) -> bool {
    let Ok(docker) = client() else {
        return false;
    };
    let name = name.to_string();
    block_on(async move { docker.inspect_image(&name).await.is_ok() })
}

/// A container request with what every pgssl container has: the host's network (servers
/// listen on 127.0.0.1 only; nothing is ever addressed on a container network), the owner
/// label, and bind mounts at the same path as on the host.
pub fn request(
    image: &str,
    cmd: Vec<String>,
    mounts: &[(&std::path::Path, bool)],
) -> testcontainers::ContainerRequest<GenericImage> {
    let (repo, tag) = image.split_once(':').unwrap_or((image, "latest"));
    let mut req = GenericImage::new(repo, tag)
        .with_cmd(cmd)
        .with_network("host")
        .with_label(OWNER_LABEL, owner_value())
        .with_startup_timeout(Duration::from_secs(60));
    for (path, read_only) in mounts {
        let p = path.display().to_string();
        let mut m = Mount::bind_mount(p.clone(), p);
        if *read_only {
            m = m.with_access_mode(testcontainers::core::AccessMode::ReadOnly);
        }
        req = req.with_mount(m);
    }
    req
}

/// Starts a container and registers it for removal on Ctrl-C / SIGTERM.
pub fn start(
    req: testcontainers::ContainerRequest<GenericImage>,
) -> Result<(ContainerAsync<GenericImage>, crate::cleanup::Registration)> {
    if crate::cleanup::shutting_down() {
        bail!("shutting down");
    }
    USED.store(true, std::sync::atomic::Ordering::SeqCst);
    let c = block_on(async move { req.start().await }).context("starting a container")?;
    let reg = crate::cleanup::register_container(c.id());
    if crate::cleanup::shutting_down() {
        remove_by_id(&[c.id().to_string()]);
        std::mem::forget(c);
        bail!("shutting down");
    }
    Ok((c, reg))
}

/// Removes a container now (testcontainers' own drop removes it in the background, which a
/// process exit can overtake).
pub fn remove(c: ContainerAsync<GenericImage>) {
    let _ = block_on(async move { c.rm().await });
}

/// Removes a shared container now. If someone still holds it, it is removed by id and their
/// handle is leaked: testcontainers' drop panics outside a runtime, and it is gone anyway.
pub fn remove_shared(c: std::sync::Arc<ContainerAsync<GenericImage>>) {
    match std::sync::Arc::try_unwrap(c) {
        Ok(c) => remove(c),
        Err(c) => {
            remove_by_id(&[c.id().to_string()]);
            std::mem::forget(c);
        }
    }
}

/// Runs `cmd` in a running container and returns its stdout (testcontainers' exec).
pub fn exec_stdout(
    c: &std::sync::Arc<ContainerAsync<GenericImage>>,
    cmd: &[&str],
) -> Result<Vec<u8>> {
    let (c, cmd) = (
        c.clone(),
        cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    block_on(async move {
        let mut r = c.exec(testcontainers::core::ExecCommand::new(cmd)).await?;
        r.stdout_to_vec().await
    })
    .map_err(Into::into)
}

/// Runs `sh -c script` in a throwaway container of `image` and returns its stdout; fails with
/// its stderr when it exits non-zero. Used for facts and initdb.
pub fn probe(
    image: &str,
    script: &str,
    user: Option<&str>,
    mounts: &[(&std::path::Path, bool)],
) -> Result<String> {
    let mut req = request(image, vec!["sh".into(), "-c".into(), script.into()], mounts)
        .with_ready_conditions(vec![WaitFor::exit(ExitWaitStrategy::new())]);
    if let Some(u) = user {
        req = req.with_user(u);
    }
    let (c, _reg) = start(req)?;
    let (code, out, err) = block_on(async move {
        let code = c.exit_code().await;
        let out = c.stdout_to_vec().await.unwrap_or_default();
        let err = c.stderr_to_vec().await.unwrap_or_default();
        let _ = c.rm().await;
        (code, out, err)
    });
    let out = String::from_utf8_lossy(&out).into_owned();
    match code {
        Ok(Some(0)) => Ok(out),
        other => bail!(
            "`{script}` in {image} ended with {other:?}: {}{}",
            out,
            String::from_utf8_lossy(&err)
        ),
    }
}

/// `(id, owner label)` of the containers whose labels match `filter` (`key` or `key=value`);
/// none when Docker is not reachable.
fn labelled(filter: String) -> Vec<(String, String)> {
    let Ok(docker) = client() else {
        return Vec::new();
    };
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_string(), vec![filter])])),
        ..Default::default()
    };
    let listed = block_on(async move { docker.list_containers(Some(options)).await });
    listed
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let owner = c.labels.and_then(|mut l| l.remove(OWNER_LABEL));
            Some((c.id?, owner.unwrap_or_default()))
        })
        .collect()
}

/// Removes containers labelled by runs that are gone (SIGKILLed). Returns how many.
pub fn reap_stale_containers() -> usize {
    let mut stale = Vec::new();
    for (id, owner) in labelled(OWNER_LABEL.to_string()) {
        let (pid, start) = owner.split_once(':').unwrap_or((&owner, "0"));
        let pid: i32 = pid.parse().unwrap_or(0);
        let live = pid > 0
            && crate::cleanup::alive(pid)
            && crate::cleanup::process_start_time(pid)
                .map(|s| s.to_string())
                .as_deref()
                == Some(start);
        if !live {
            stale.push(id);
        }
    }
    if !stale.is_empty() {
        remove_by_id(&stale);
    }
    stale.len()
}

/// Whether this process has started a container (so clean-up looks for its own).
static USED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Removes every container labelled with this process as its owner, if it started any.
pub fn remove_own() {
    if !USED.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let ids: Vec<String> = labelled(format!("{OWNER_LABEL}={}", owner_value()))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    if !ids.is_empty() {
        remove_by_id(&ids);
    }
}

/// Removes containers with their anonymous volumes, killing them first. Usable from the
/// signal handler's thread: it waits on the Docker runtime's own threads.
pub fn remove_by_id(ids: &[String]) {
    let Ok(docker) = client() else {
        return;
    };
    let ids = ids.to_vec();
    block_on(async move {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let removals = ids
            .iter()
            .map(|id| docker.remove_container(id, Some(options.clone())));
        futures_util::future::join_all(removals).await;
    });
}

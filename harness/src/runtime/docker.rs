//! What the container runtime and the in-container client share: one tokio runtime for every
//! Docker call (testcontainers' clients are tied to the runtime that made them, and callers
//! here are both blocking and async), the owner label, one-shot probe containers, and the
//! image check that keeps testcontainers from ever trying to pull.

use anyhow::{anyhow, bail, Context, Result};
use std::future::Future;
use std::process::Command;
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
    Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", name])
        .output()
        .is_ok_and(|o| o.status.success())
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

/// Removes containers labelled by runs that are gone (SIGKILLed). Returns how many.
pub fn reap_stale_containers() -> usize {
    let Ok(out) = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={OWNER_LABEL}"),
            "--format",
            &format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}"),
        ])
        .output()
    else {
        return 0;
    };
    let mut stale = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((id, owner)) = line.split_once(' ') else {
            continue;
        };
        let (pid, start) = owner.split_once(':').unwrap_or((owner, "0"));
        let pid: i32 = pid.parse().unwrap_or(0);
        let live = pid > 0
            && crate::cleanup::alive(pid)
            && crate::cleanup::process_start_time(pid)
                .map(|s| s.to_string())
                .as_deref()
                == Some(start);
        if !live {
            stale.push(id.to_string());
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
    let Ok(out) = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label={OWNER_LABEL}={}", owner_value()),
        ])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        remove_by_id(&ids);
    }
}

/// `docker rm -f -v`: usable from a signal handler's thread, with no async runtime around.
pub fn remove_by_id(ids: &[String]) {
    let _ = Command::new("docker")
        .args(["rm", "-f", "-v"])
        .args(ids)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

//! Containers pgssl starts do not outlive it: Ctrl-C removes them, and a later run removes
//! what a SIGKILLed run left; in-image stacks run. Needs Docker and the images, so the tests are
//! ignored by default; `.ci/run` runs them after starting Docker and building the images
//! (`cargo test --test container_cleanup -- --ignored`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUILD: &str = "pg15-openssl3.0";
const SCENARIO: &str = "harness/tests/data/wrong-expectations.toml";

fn pgssl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgssl"));
    cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    cmd
}

/// Ids of the containers whose owner label names `pid`.
fn containers_of(pid: u32) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=org.pgssl.owner",
            "--format",
            "{{.ID}} {{.Label \"org.pgssl.owner\"}}",
        ])
        .output()
        .expect("docker ps");
    assert!(out.status.success(), "docker ps failed: is Docker running?");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, owner)| owner.split(':').next() == Some(&pid.to_string()))
        .map(|(id, _)| id.to_string())
        .collect()
}

/// A run against the container build, once its server container exists.
fn start_run() -> (Child, Vec<String>) {
    let child = pgssl()
        .args([
            "run",
            "--timeout",
            "30",
            "--server",
            BUILD,
            "--client",
            "libpq",
            SCENARIO,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        let ids = containers_of(child.id());
        if !ids.is_empty() {
            return (child, ids);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    panic!("no container appeared for pgssl pid {}", child.id());
}

fn wait_until_gone(pid: u32) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if containers_of(pid).is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
#[ignore = "needs Docker and the pg15-openssl3.0 image; run by .ci/run"]
fn ctrl_c_removes_containers() {
    let (child, ids) = start_run();
    let pid = child.id();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let status = child.wait_with_output().unwrap().status;
    assert!(matches!(status.code(), Some(130) | Some(1)), "{status:?}");
    assert!(wait_until_gone(pid), "containers {ids:?} survived Ctrl-C");
}

#[test]
#[ignore = "needs Docker and the pg15-openssl3.0 image; run by .ci/run"]
fn a_later_run_removes_containers_of_a_killed_run() {
    let (mut child, ids) = start_run();
    let pid = child.id();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !containers_of(pid).is_empty(),
        "a SIGKILLed run cannot clean up; its containers {ids:?} should still be there"
    );
    let out = pgssl().args(["run", SCENARIO]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the wrong expectations still fail"
    );
    assert!(
        containers_of(pid).is_empty(),
        "containers {ids:?} were not reaped"
    );
}

/// Processes on this machine whose command line mentions `needle` (an exec's process shows
/// in the host's /proc too: containers share the kernel).
fn processes_naming(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

/// Whether `pid` has a child process (the shim forks one per attempt in flight).
fn has_children(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .is_ok_and(|c| !c.trim().is_empty())
}

/// `libpq:<build>` is a shim in the stack's container: killed mid-attempt (as the OOM killer
/// would), the run ends with a harness error naming the stack, and neither the container nor
/// the exec outlives it.
#[test]
#[ignore = "needs Docker and the pg15-openssl3.0 image; run by .ci/run"]
fn a_killed_container_shim_is_a_harness_error() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let stacks = tmp.path().join("stacks");
    let libpq = stacks.join("libpq");
    std::fs::create_dir_all(&libpq).unwrap();
    for f in ["stack.toml", "errors.toml", "container-shim.pl"] {
        std::fs::copy(repo.join("stacks/libpq").join(f), libpq.join(f)).unwrap();
    }
    let shim = libpq.join("container-shim.pl").display().to_string();
    let client = format!("libpq:{BUILD}");
    let child = pgssl()
        .args(["run", "--stacks"])
        .arg(&stacks)
        .args(["--server", BUILD, "--client", &client])
        .args([
            "scenarios/client-cert-auth.toml",
            "scenarios/crl-client-side.toml",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let start = Instant::now();
    let mut killed = None;
    while killed.is_none() && start.elapsed() < Duration::from_secs(120) {
        for p in processes_naming(&shim) {
            if has_children(p) {
                // SAFETY: the shim of our own run (its command line names our directory).
                unsafe { libc::kill(p, libc::SIGKILL) };
                killed = Some(p);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        killed.is_some(),
        "no attempt of the shim was seen in flight: {all}"
    );
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(&format!("client stack {client}: its shim exited")),
        "{all}"
    );
    assert!(wait_until_gone(pid), "containers of the run survived it");
    assert!(
        processes_naming(&shim).is_empty(),
        "an exec survived the run"
    );
}

/// `nss:<build>` runs pgssl's own NSS shim inside the image: in bullseye's, whose glibc is
/// older than the one pgssl was linked against, it must still load and use the image's NSS
/// (the version the image's package has, not this machine's), pass a scenario, and leave no
/// container behind.
#[test]
#[ignore = "needs Docker and the pg13-openssl1.1 image; run by .ci/run"]
fn the_nss_shim_runs_on_an_older_images_nss() {
    const OLD: &str = "pg13-openssl1.1";
    let image_nss = Command::new("docker")
        .args(["run", "--rm", "--network", "host"])
        .arg(format!("pgssl/{OLD}"))
        .args(["dpkg-query", "-W", "-f", "${Version}", "libnss3"])
        .output()
        .expect("docker run");
    assert!(image_nss.status.success(), "{image_nss:?}");
    // "2:3.61-1+deb11u4" -> "3.61"
    let version = String::from_utf8_lossy(&image_nss.stdout);
    let version = version.split(':').nth(1).unwrap_or(&version);
    let version = version.split('-').next().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("results.json");
    let client = format!("nss:{OLD}");
    let child = pgssl()
        .args(["run", "--client", &client, "--json"])
        .arg(&json)
        .arg("scenarios/server-cert-verification.toml")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{all}");
    let results: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let versions: std::collections::BTreeSet<String> = results
        .iter()
        .filter(|r| r["event"] == "case_finished")
        .map(|r| {
            r["backend"]["client"]["tls_version"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(versions.into_iter().collect::<Vec<_>>(), vec![version]);
    assert!(wait_until_gone(pid), "containers of the run survived it");
}

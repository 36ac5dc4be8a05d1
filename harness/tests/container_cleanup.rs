//! Containers pgssl starts do not outlive it: Ctrl-C removes them, and a later run removes
//! what a SIGKILLed run left. Needs Docker and the pg15-openssl3.0 image, so the tests are
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

//! Stacks as folders, end to end: a stack written at test time (one folder, no Rust) runs a
//! scenario; shims that hang, exit mid-attempt or print garbage end as `timeout` or as a
//! harness error naming the stack, and leave no process behind.

mod common;

use pgssl::client::{attempt, ConnectRequest, Shim, Stacks};
use pgssl::error_class::ErrorClass;
use pgssl::outcome::Outcome;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Writes `stacks/<name>/stack.toml` and `shim.py` under `root`.
fn stack(root: &Path, name: &str, shim: &str, extra: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("stack.toml"),
        format!("command = [\"/usr/bin/python3\", \"-I\", \"./shim.py\"]\n{extra}"),
    )
    .unwrap();
    std::fs::write(dir.join("shim.py"), shim).unwrap();
    dir
}

const HELLO: &str = r#"import json, sys
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
send({"type": "hello", "protocol": 1, "name": "toy", "version": "0", "tls_library": "none"})
"#;

/// Processes whose command line mentions `dir` (the test's private stacks directory).
fn processes_under(dir: &Path) -> Vec<i32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
                && pgssl::cleanup::alive(*pid)
        })
        .collect()
}

/// `pgssl run --stacks <stacks> ARGS scenarios/hostname-single-alt-name.toml` from the
/// repository: its exit status and everything it printed.
fn run(stacks: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgssl"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["run", "--stacks"])
        .arg(stacks)
        .args(args)
        .arg("scenarios/hostname-single-alt-name.toml")
        .output()
        .unwrap();
    let all = common::printed(&out);
    (out.status.code(), all)
}

fn request(timeout: Duration) -> ConnectRequest {
    ConnectRequest {
        params: vec![("host".into(), "127.0.0.1".into())],
        timeout,
        queries: Vec::new(),
        env: Vec::new(),
        pki_dir: None,
    }
}

fn shim(root: &Path, name: &str) -> Shim {
    let stacks = Stacks::load(root).unwrap();
    let f = stacks.folder(name).unwrap();
    // Through the registry, as `--client` does; downcast by starting it directly.
    drop(stacks.client(name).unwrap());
    Shim::start(pgssl::client::shim::ShimSpec {
        env: Vec::new(),
        name: f.name.clone(),
        dir: f.dir.clone(),
        command: f.spec.command.clone().unwrap(),
        install: String::new(),
        facts: Vec::new(),
        max_in_flight: f.spec.max_in_flight,
        shim_classes: f.spec.shim_classes.clone(),
        errors: f.errors.clone().unwrap_or_default(),
    })
    .unwrap()
}

#[test]
fn a_hanging_shim_times_out_and_is_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    stack(
        tmp.path(),
        "hang",
        &format!("{HELLO}import time\nfor line in sys.stdin:\n    time.sleep(3600)\n"),
        "max_in_flight = 2\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = shim(tmp.path(), "hang");
    let first = client.pid().unwrap();
    let start = Instant::now();
    // Two at once: both time out, neither waits for the other's restart.
    let (a, b) = rt.block_on(async {
        tokio::join!(
            attempt(&client, request(Duration::from_millis(800))),
            attempt(&client, request(Duration::from_millis(800)))
        )
    });
    for o in [a, b] {
        assert!(
            matches!(
                o,
                Ok(Outcome::Failed {
                    class: ErrorClass::Timeout,
                    ..
                })
            ),
            "{o:?}"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let gone = Instant::now();
    while pgssl::cleanup::alive(first) && gone.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !pgssl::cleanup::alive(first),
        "the hung shim {first} was not killed"
    );
    // The next attempt gets a fresh process.
    let o = rt.block_on(attempt(&client, request(Duration::from_millis(500))));
    assert!(
        matches!(
            o,
            Ok(Outcome::Failed {
                class: ErrorClass::Timeout,
                ..
            })
        ),
        "{o:?}"
    );
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(processes_under(tmp.path()), Vec::<i32>::new());
}

/// A stack that takes one attempt at a time per process: processes are reused between
/// attempts until a reply retires one, and at most the pool's size run side by side.
#[test]
fn one_attempt_at_a_time_reuses_processes_until_a_reply_retires_them() {
    let tmp = tempfile::tempdir().unwrap();
    stack(
        tmp.path(),
        "pooled",
        r#"import json, os, sys
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
send({"type": "hello", "protocol": 1, "name": "toy", "version": "0", "tls_library": "none",
      "one_attempt_at_a_time": True})
served = 0
for line in sys.stdin:
    served += 1
    req = json.loads(line)
    # The pid says which process answered; the second attempt of a process retires it.
    send({"type": "reply", "id": req["id"], "retire": served == 2,
          "result": {"failed": {"message": "pid %d" % os.getpid()}}})
"#,
        "",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = shim(tmp.path(), "pooled");
    let pid_of = |o: Result<Outcome, String>| match o {
        Ok(Outcome::Failed { raw, .. }) => raw,
        other => panic!("{other:?}"),
    };
    let pids: Vec<String> = (0..5)
        .map(|_| pid_of(rt.block_on(attempt(&client, request(Duration::from_secs(5))))))
        .collect();
    assert_eq!(pids[0], pids[1], "{pids:?}");
    assert_ne!(pids[1], pids[2], "{pids:?}");
    assert_eq!(pids[2], pids[3], "{pids:?}");
    assert_ne!(pids[3], pids[4], "{pids:?}");
    // A retired process is ended.
    let first: i32 = pids[0].trim_start_matches("pid ").parse().unwrap();
    let gone = Instant::now();
    while pgssl::cleanup::alive(first) && gone.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!pgssl::cleanup::alive(first), "retired {first} still runs");
    // Eight at once: no process ever has two (each would then answer twice before retiring).
    let many = rt.block_on(async {
        futures_util::future::join_all(
            (0..8).map(|_| attempt(&client, request(Duration::from_secs(5)))),
        )
        .await
    });
    let mut counts = std::collections::HashMap::new();
    for o in many {
        *counts.entry(pid_of(o)).or_insert(0) += 1;
    }
    assert!(counts.values().all(|n| *n <= 2), "{counts:?}");
    drop(client);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(processes_under(tmp.path()), Vec::<i32>::new());
}

#[test]
fn a_shim_that_exits_mid_attempt_is_a_harness_error_with_its_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    stack(
        tmp.path(),
        "quitter",
        &format!(
            "{HELLO}sys.stdin.readline()\nsys.stderr.write('segfault, sort of\\n')\nsys.exit(3)\n"
        ),
        "",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = shim(tmp.path(), "quitter");
    let o = rt.block_on(attempt(&client, request(Duration::from_secs(10))));
    let why = o.unwrap_err();
    assert!(
        why.contains("client stack quitter") && why.contains("segfault, sort of"),
        "{why}"
    );
    // Broken for good: later attempts say the same at once, and start nothing.
    let again = rt.block_on(attempt(&client, request(Duration::from_secs(10))));
    assert_eq!(again.unwrap_err(), why);
    drop(client);
    assert_eq!(processes_under(tmp.path()), Vec::<i32>::new());
}

/// A reply may name its class only when stack.toml lists it in `shim_classes`; otherwise the
/// stack is broken (a harness error), not a failed case.
#[test]
fn a_shim_class_must_be_declared() {
    let tmp = tempfile::tempdir().unwrap();
    let reply = r#"for line in sys.stdin:
    r = json.loads(line)
    send({"type": "reply", "id": r["id"], "result": {"failed": {"message": "no host lists", "class": "unsupported"}}})
"#;
    stack(
        tmp.path(),
        "sure",
        &format!("{HELLO}{reply}"),
        "shim_classes = [\"unsupported\"]\n",
    );
    stack(tmp.path(), "unsure", &format!("{HELLO}{reply}"), "");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sure = shim(tmp.path(), "sure");
    let o = rt.block_on(attempt(&sure, request(Duration::from_secs(10))));
    assert!(
        matches!(
            o,
            Ok(Outcome::Failed {
                class: ErrorClass::Unsupported,
                ..
            })
        ),
        "{o:?}"
    );
    let unsure = shim(tmp.path(), "unsure");
    let why = rt
        .block_on(attempt(&unsure, request(Duration::from_secs(10))))
        .unwrap_err();
    assert!(
        why.contains("client stack unsure") && why.contains("shim_classes"),
        "{why}"
    );
    drop((sure, unsure));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(processes_under(tmp.path()), Vec::<i32>::new());
}

/// Through the command line: garbage on stdout ends the run with exit 2 naming the stack,
/// and the shim is gone afterwards.
#[test]
fn a_shim_printing_garbage_ends_the_run_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    stack(
        tmp.path(),
        "chatty",
        &format!("{HELLO}sys.stdin.readline()\nprint('Connecting to the database...', flush=True)\nimport time; time.sleep(3600)\n"),
        "",
    );
    let (code, all) = run(tmp.path(), &["--client", "chatty", "--filter", "wronghost"]);
    assert_eq!(code, Some(2), "{all}");
    assert!(
        all.contains("client stack chatty") && all.contains("Connecting to the database"),
        "{all}"
    );
    assert_eq!(processes_under(tmp.path()), Vec::<i32>::new());
}

/// Adding a stack is one folder: a psycopg shim written here, with its own errors.toml that
/// includes libpq's table, runs a whole scenario through `pgssl run` and passes.
#[test]
fn a_stack_added_as_one_folder_runs_a_scenario() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = stack(
        tmp.path(),
        "mini",
        r#"import json, sys, threading, psycopg
def send(m):
    sys.stdout.write(json.dumps(m) + "\n"); sys.stdout.flush()
send({"type": "hello", "protocol": 1, "name": "mini", "version": psycopg.__version__,
      "tls_library": "openssl", "libpq_version": str(psycopg.pq.version())})
for line in sys.stdin:
    req = json.loads(line)
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo("", **dict(req["params"])), autocommit=True) as c:
            row = c.execute(req["session_query"]).fetchone()
            res = {"connected": {"encrypted": c.pgconn.ssl_in_use, "columns": ["" if v is None else str(v) for v in row]}}
    except psycopg.Error as e:
        res = {"failed": {"message": str(e)}}
    send({"type": "reply", "id": req["id"], "result": res})
"#,
        "",
    );
    std::fs::write(
        dir.join("errors.toml"),
        format!(
            "include = [{:?}]\n",
            repo.join("stacks/libpq/errors.toml").display().to_string()
        ),
    )
    .unwrap();
    let (code, all) = run(tmp.path(), &["--verbose", "--client", "mini"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("[mini@local]"), "{all}");
    assert_eq!(processes_under(tmp.path()), Vec::<i32>::new());
}

/// `libpq:<build>`'s in-container shim is a shim like any other: run here as a child process
/// over this machine's psql (the container is only its transport), it passes a scenario.
#[test]
fn the_libpq_container_shim_speaks_the_protocol_over_the_hosts_psql() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("psql");
    std::fs::create_dir_all(&dir).unwrap();
    let libpq = Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks/libpq");
    for f in ["container-shim.pl", "errors.toml"] {
        std::fs::copy(libpq.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("stack.toml"),
        "command = [\"perl\", \"./container-shim.pl\"]\n\
         facts = [\"tls_library\", \"tls_version\", \"libpq_version\"]\n\
         shim_classes = [\"timeout\"]\nmax_in_flight = 8\n",
    )
    .unwrap();
    let (code, all) = run(tmp.path(), &["--client", "psql"]);
    assert_eq!(code, Some(0), "{all}");
    assert!(all.contains("0 failed, 0 harness errors"), "{all}");
    assert!(processes_under(tmp.path()).is_empty());
}

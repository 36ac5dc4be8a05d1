//! The command line against real servers: the harness can fail, bad input is exit 2, and
//! nothing it starts outlives it, also after Ctrl-C or SIGKILL.

mod common;

use common::{gone, pgssl, postmaster_pid, private_run_root, wait_for_server, wait_for_server_in};
use std::path::Path;
use std::process::{Command, Stdio};

const WRONG: &str = "harness/tests/data/wrong-expectations.toml";

#[test]
fn wrong_expectations_are_not_ok_and_exit_1() {
    let out = pgssl().args(["tap", WRONG]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every case of the file is wrong for every client stack.
    let stacks =
        pgssl::client::Stacks::load(&pgssl::client::registry::source_stacks_dir()).unwrap();
    let plan = 2 * stacks.default_names().len();
    assert!(
        stdout.starts_with(&format!("TAP version 14\n1..{plan}\n")),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("not ok")).count(),
        plan,
        "{stdout}"
    );
    assert!(
        stdout.contains("expected failure hostname_mismatch, but the connection succeeded"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ssl: expected \\\"true\\\", got \\\"false\\\""),
        "{stdout}"
    );
}

#[test]
fn bad_input_names_file_and_line_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    let pki = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/pki.toml");
    std::fs::write(
        &file,
        format!(
            "doc = \"x\"\npki = \"{}\"\n[server]\ncert = \"server-cn-only.crt\"\nkey = \"server-cn-only.key\"\nhba = []\n\n[[case]]\nid = \"a\"\nexpect.failed = \"hostname_mismatch\"\nconn = {{ sslrootcert = \"no-such.crt\" }}\n",
            pki.display()
        ),
    )
    .unwrap();
    let out = pgssl().arg("tap").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:11:", file.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("no-such.crt") && stderr.contains("expected one of"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing may run on bad input");
}

#[test]
fn list_shows_every_case_once() {
    let out = pgssl().arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = text.lines().collect();
    let unique: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len());
    assert!(ids.len() >= 10, "{ids:?}");
}

#[test]
fn ctrl_c_stops_servers_and_removes_files() {
    let child = pgssl()
        .args(["run", "--timeout", "30", WRONG])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (dir, postmaster) = wait_for_server(child.id());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait_with_output().unwrap().status;
    assert!(gone(postmaster), "postmaster {postmaster} survived Ctrl-C");
    assert!(!dir.exists(), "{} survived Ctrl-C", dir.display());
    assert!(matches!(status.code(), Some(130) | Some(1)), "{status:?}");
}

#[test]
fn a_later_run_reaps_what_a_killed_run_left() {
    // A run root of its own: any other pgssl run starting meanwhile (the other tests here)
    // would reap the killed run first.
    let root = private_run_root();
    let mut child = pgssl()
        .env("PGSSL_RUN_ROOT", root.path())
        .args(["run", WRONG])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (dir, pidfile) = wait_for_server_in(root.path(), child.id());
    let postmaster = postmaster_pid(&pidfile).expect("postmaster pid");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        pgssl::cleanup::alive(postmaster),
        "a SIGKILLed run cannot clean up; the server should still be there"
    );
    let out = pgssl()
        .env("PGSSL_RUN_ROOT", root.path())
        .args(["run", WRONG])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(gone(postmaster), "postmaster {postmaster} was not reaped");
    assert!(!dir.exists(), "{} was not reaped", dir.display());
}

#[test]
fn generated_docs_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scenarios = pgssl::scenario::load_scenarios(&[root.join("scenarios")]).unwrap();
    for (file, body) in [
        ("docs/error-classes.md", pgssl::lint::error_classes_doc()),
        (
            "docs/divergences.md",
            pgssl::lint::divergences_doc(&scenarios),
        ),
        (
            "docs/drivers.md",
            pgssl::drivers_doc::drivers_doc(
                &scenarios,
                &pgssl::client::registry::Stacks::load(&root.join("stacks")).unwrap(),
            ),
        ),
        (
            "docs/schema/attempt.schema.json",
            pgssl::client::protocol::schema(),
        ),
    ] {
        let committed = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        assert!(
            committed == body,
            "{file} is stale: run `cargo run -- lint --write-docs`"
        );
    }
}

/// `pgssl certs --out` writes every declared NSS database, and NSS's own tools list exactly
/// the certificates, trust flags, keys and CRLs the spec declares.
#[test]
fn certs_out_writes_nss_databases_as_declared() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tempfile::tempdir().unwrap();
    let status = pgssl()
        .args(["certs", "--out"])
        .arg(out.path())
        .status()
        .unwrap();
    assert!(status.success());
    let spec = pgssl::pki::PkiSpec::load(&root.join("certs/pki.toml")).unwrap();
    assert!(
        !spec.file.nss_db.is_empty(),
        "the spec declares NSS databases"
    );
    for (name, db) in &spec.file.nss_db {
        let dir = out.path().join(format!("{name}.nssdb"));
        let got = pgssl::pki::nss::list(&dir).unwrap();
        let mut want: std::collections::BTreeMap<String, String> = db.trust.clone();
        for k in &db.keys {
            want.insert(k.clone(), "u,u,u".into());
        }
        assert_eq!(got.certs, want, "certutil -L on {name}");
        let mut issuers: Vec<String> = db
            .crls
            .iter()
            .map(|c| spec.file.crl[c].issuer.clone())
            .collect();
        issuers.sort();
        assert_eq!(got.crl_issuers, issuers, "crlutil -L on {name}");
        // A password-protected database does not show its keys without the password.
        let keys = Command::new("certutil")
            .args(["-K", "-d", &pgssl::pki::nss::db_arg(&dir)])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&keys.stdout);
        for k in &db.keys {
            assert_eq!(
                listed.contains(k.as_str()),
                db.password.is_none(),
                "{name}: key {k} visible without the password: {listed}"
            );
        }
    }
}

/// `--ids FILE` runs exactly the listed cases (server checks too); a listed id that is no case
/// is a typo named by file and line, before anything starts.
#[test]
fn an_id_list_selects_exact_cases() {
    let dir = tempfile::tempdir().unwrap();
    let ids = dir.path().join("ids");
    std::fs::write(
        &ids,
        "# two cases and a server check\nsslmode-ssl-on-hostssl/disable\nserver-cert-verification/wronghost-verify-full\npassphrase-wrong/server-start\n",
    )
    .unwrap();
    let json = dir.path().join("r.json");
    let out = pgssl()
        .args(["run", "--client", "libpq", "--ids"])
        .arg(&ids)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc = pgssl::results::ResultsDoc::load(&json).unwrap();
    let mut ran: Vec<&str> = doc.results.iter().map(|r| r.result.case.as_str()).collect();
    ran.sort();
    assert_eq!(
        ran,
        [
            "passphrase-wrong/server-start",
            "server-cert-verification/wronghost-verify-full",
            "sslmode-ssl-on-hostssl/disable"
        ]
    );
    std::fs::write(
        &ids,
        "sslmode-ssl-on-hostssl/disable\n\nsslmode-ssl-on-hostssl/disabel\n",
    )
    .unwrap();
    let out = pgssl().args(["run", "--ids"]).arg(&ids).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:", ids.display())) && stderr.contains("disabel"),
        "{stderr}"
    );
    // Several --filter texts select any of them.
    let out = pgssl()
        .args([
            "run",
            "--client",
            "libpq",
            "--filter",
            "sslmode-ssl-on-hostssl/disable",
        ])
        .args(["--filter", "wronghost-verify-full", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = pgssl::results::ResultsDoc::load(&json).unwrap();
    assert!(doc.results.len() >= 2, "{}", doc.results.len());
    assert!(doc
        .results
        .iter()
        .all(|r| r.result.case.contains("sslmode-ssl-on-hostssl/disable")
            || r.result.case.contains("wronghost-verify-full")));
}

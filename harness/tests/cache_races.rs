//! Caches shared between processes (PKI, initdb cluster, NSS databases) on a cold cache: one
//! run with several workers, several runs at once, and a PKI spec edited under a warm initdb
//! cache. Each race used to delete a PKI a server was already configured from, which showed as
//! false `server_cert_untrusted` / client-certificate failures.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Scenarios whose servers and clients use many PKI files (chains, client keys, CRLs).
const SCENARIOS: [&str; 4] = [
    "client-cert-auth.toml",
    "crl-server-file.toml",
    "server-cert-chain.toml",
    "hostname-cn-only.toml",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pgssl(cache: &Path, args: &[&str], scenario_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgssl"));
    cmd.current_dir(root())
        .env("PGSSL_CACHE_DIR", cache)
        .args(args)
        .args(SCENARIOS.iter().map(|s| scenario_dir.join(s)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn spawn(cache: &Path, args: &[&str]) -> Child {
    pgssl(cache, args, &root().join("scenarios"))
        .spawn()
        .unwrap()
}

fn assert_all_passed(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stdout.contains("not ok"), "{stdout}");
}

/// PKI generations in a cache; exactly one may exist after any number of concurrent runs.
fn pki_generations(cache: &Path) -> Vec<String> {
    std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pki-"))
        .collect()
}

#[test]
fn one_run_with_four_workers_on_an_empty_cache() {
    let cache = tempfile::tempdir().unwrap();
    let out = spawn(cache.path(), &["tap", "--jobs", "4", "--client", "libpq"])
        .wait_with_output()
        .unwrap();
    assert_all_passed(&out);
    assert_eq!(pki_generations(cache.path()).len(), 1);
}

#[test]
fn two_runs_at_once_on_one_empty_cache() {
    let cache = tempfile::tempdir().unwrap();
    let args = ["tap", "--client", "libpq", "--client", "native-tls"];
    let runs: Vec<Child> = (0..2).map(|_| spawn(cache.path(), &args)).collect();
    for run in runs {
        assert_all_passed(&run.wait_with_output().unwrap());
    }
    assert_eq!(pki_generations(cache.path()).len(), 1);
}

#[test]
fn three_nss_runs_at_once_on_one_empty_cache() {
    let cache = tempfile::tempdir().unwrap();
    let runs: Vec<Child> = (0..3)
        .map(|_| spawn(cache.path(), &["tap", "--client", "nss"]))
        .collect();
    for run in runs {
        assert_all_passed(&run.wait_with_output().unwrap());
    }
}

#[test]
fn a_spec_edit_under_a_warm_initdb_cache_with_four_workers() {
    let cache = tempfile::tempdir().unwrap();
    let warm = spawn(cache.path(), &["tap", "--client", "libpq"])
        .wait_with_output()
        .unwrap();
    assert_all_passed(&warm);
    // The same spec with one more comment is a new content hash: a PKI nobody generated yet.
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir(tree.path().join("certs")).unwrap();
    std::fs::create_dir(tree.path().join("scenarios")).unwrap();
    let spec = std::fs::read_to_string(root().join("certs/pki.toml")).unwrap();
    std::fs::write(
        tree.path().join("certs/pki.toml"),
        spec + "\n# edited by the cache race test\n",
    )
    .unwrap();
    for s in SCENARIOS {
        std::fs::copy(
            root().join("scenarios").join(s),
            tree.path().join("scenarios").join(s),
        )
        .unwrap();
    }
    let out = pgssl(
        cache.path(),
        &["tap", "--jobs", "4", "--client", "libpq"],
        &tree.path().join("scenarios"),
    )
    .output()
    .unwrap();
    assert_all_passed(&out);
    assert_eq!(pki_generations(cache.path()).len(), 2);
}

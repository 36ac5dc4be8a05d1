//! `libpq@<prefix>`: a libpq of any install prefix as a client stack, through pgssl's own shim
//! (`pgssl stack-shim libpq` with that prefix's library) on the attempt protocol. Here the
//! prefix is Debian's own (`/usr`, multiarch), so the same library runs both ways: in process
//! and behind the protocol, and every case must end the same.

mod common;

use std::collections::BTreeMap;

/// `pgssl run ARGS --json FILE scenarios/server-cert-verification.toml`: exit status, output,
/// and each result's outcome by case and client (`libpq@/usr` read as `libpq`).
fn run(args: &[&str]) -> (Option<i32>, String, BTreeMap<String, String>) {
    let json = tempfile::NamedTempFile::new().unwrap();
    let out = common::pgssl()
        .arg("run")
        .args(args)
        .arg("--json")
        .arg(json.path())
        .arg("scenarios/server-cert-verification.toml")
        .output()
        .unwrap();
    let all = common::printed(&out);
    let mut outcomes = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(json.path()) {
        let results: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap_or_default();
        for r in results {
            if let (Some(case), Some(outcome), Some(client)) =
                (r.get("case"), r.get("outcome"), r.get("client"))
            {
                let mut outcome = outcome.clone();
                // The raw text names the server's port, which differs between runs.
                if let Some(f) = outcome.get_mut("failed") {
                    f.as_object_mut().unwrap().remove("raw");
                }
                // Server-side checks are the server's, whatever the client.
                let client = client.as_str().unwrap();
                if client != "server" {
                    outcomes.insert(format!("client {client}"), String::new());
                }
                let client = client.replace("libpq@/usr", "libpq");
                outcomes.insert(format!("{case} {client}"), outcome.to_string());
            }
        }
    }
    (out.status.code(), all, outcomes)
}

#[test]
fn a_libpq_from_a_prefix_ends_every_case_as_the_same_library_in_process() {
    let (code, text, in_process) = run(&["--client", "libpq"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text, shimmed) = run(&["--client", "libpq@/usr"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(shimmed.contains_key("client libpq@/usr"), "{shimmed:?}");
    assert!(!shimmed.contains_key("client libpq"), "{shimmed:?}");
    let shimmed: BTreeMap<_, _> = shimmed
        .into_iter()
        .map(|(k, v)| (k.replace("libpq@/usr", "libpq"), v))
        .collect();
    assert!(in_process.len() > 20, "{in_process:?}");
    assert_eq!(in_process, shimmed);
}

#[test]
fn a_prefix_without_libpq_is_a_located_error() {
    let empty = tempfile::tempdir().unwrap();
    let name = format!("libpq@{}", empty.path().display());
    let (code, text, _) = run(&["--client", &name]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("lib/libpq.so.5"), "{text}");
    let (code, text, _) = run(&["--client", "rustls@/usr"]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("does not load a library from an install prefix"),
        "{text}"
    );
}

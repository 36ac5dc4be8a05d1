//! Bad scenario input fails at load time, naming the file, the line and what was expected.

use pgssl::scenario::load_scenarios;
use std::path::Path;

fn load_text(body: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let pki = Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs/pki.toml");
    let file = dir.path().join("bad.toml");
    let head = format!(
        "doc = \"x\"\npki = \"{}\"\n[server]\ncert = \"server-cn-only.crt\"\nkey = \"server-cn-only.key\"\nhba = []\n",
        pki.display()
    );
    std::fs::write(&file, format!("{head}{body}")).unwrap();
    let err = load_scenarios(std::slice::from_ref(&file)).expect_err("must not load");
    let text = err.to_string();
    assert!(text.starts_with(&file.display().to_string()), "{text}");
    text
}

#[test]
fn unknown_key_lists_the_valid_ones() {
    let text = load_text("\n[[case]]\nid = \"a\"\nexpect.failed = \"timeout\"\nconnn = {}\n");
    assert!(text.contains(":11:"), "{text}");
    assert!(
        text.contains("unknown field `connn`") && text.contains("expected one of"),
        "{text}"
    );
}

#[test]
fn unknown_error_class_lists_the_classes() {
    let text = load_text("\n[[case]]\nid = \"a\"\nexpect.failed = \"hostname_mismach\"\n");
    assert!(text.contains(":10:"), "{text}");
    assert!(
        text.contains("hostname_mismatch") && text.contains("expected one of"),
        "{text}"
    );
}

#[test]
fn unknown_connection_keyword_is_refused() {
    let text = load_text(
        "\n[[case]]\nid = \"a\"\nexpect.failed = \"timeout\"\nconn = { sslmod = \"require\" }\n",
    );
    assert!(
        text.contains(":11:") && text.contains("unknown connection keyword \"sslmod\""),
        "{text}"
    );
}

#[test]
fn syntax_error_is_located() {
    let text = load_text("\n[[case]\nid = \"a\"\n");
    assert!(text.contains(":8:"), "{text}");
}

#[test]
fn unknown_selector_fact_is_refused() {
    let text = load_text(
        "\n[[case]]\nid = \"a\"\nexpect.failed = \"timeout\"\n[[case.override]]\nwhen.client.colour = \"red\"\nexpect.failed = \"io_error\"\nreason = \"r\"\n",
    );
    assert!(
        text.contains("unknown field `colour`") && text.contains("libpq_version"),
        "{text}"
    );
}

#[test]
fn override_without_reason_is_refused() {
    let text = load_text(
        "\n[[case]]\nid = \"a\"\nexpect.failed = \"timeout\"\n[[case.override]]\nwhen.client.name = \"libpq\"\nexpect.failed = \"io_error\"\nreason = \" \"\n",
    );
    assert!(text.contains("needs a reason"), "{text}");
}

#[test]
fn duplicate_case_ids_are_refused() {
    let text = load_text("\n[[case]]\nid = \"a\"\nexpect.failed = \"timeout\"\n[[case]]\nid = \"a\"\nexpect.failed = \"timeout\"\n");
    assert!(
        text.contains(":12:") && text.contains("duplicate case id"),
        "{text}"
    );
}

#[test]
fn query_with_two_results_is_refused() {
    let text = load_text(
        "\n[[case]]\nid = \"a\"\nexpect.connected = { query = [{ sql = \"SELECT 1\", returns = \"1\", null = true }] }\n",
    );
    assert!(
        text.contains(":10:") && text.contains("exactly one of `returns`, `null = true`, `error`"),
        "{text}"
    );
}

#[test]
fn version_selector_must_be_a_version() {
    let text = load_text(
        "\n[[case]]\nid = \"a\"\nexpect.failed = \"timeout\"\n[[case.override]]\nwhen.server.pg_version = \">=abc\"\nexpect.failed = \"io_error\"\nreason = \"r\"\n",
    );
    assert!(
        text.contains(":12:") && text.contains("\"abc\" is not a version"),
        "{text}"
    );
}

#[test]
fn harness_owned_settings_are_refused() {
    for key in [
        "listen_addresses",
        "port",
        "unix_socket_directories",
        "ssl_cert_file",
    ] {
        let text = load_text(&format!(
            "settings = {{ {key} = \"x\" }}\n\n[[case]]\nid = \"a\"\nexpect.failed = \"timeout\"\n"
        ));
        assert!(
            text.contains(":7:") && text.contains(&format!("{key} is set by the harness")),
            "{text}"
        );
    }
    let text = load_text(
        "\n[reload]\nfails = false\nsettings = { port = \"1\" }\n[[case]]\nid = \"a\"\nexpect.failed = \"timeout\"\n",
    );
    assert!(
        text.contains(":10:") && text.contains("reload.settings: port"),
        "{text}"
    );
    // A key that would write a second line into postgresql.conf.
    let text = load_text(
        "settings = { \"work_mem = '1MB'\\nport\" = \"1\" }\n[[case]]\nid = \"a\"\nexpect.failed = \"timeout\"\n",
    );
    assert!(
        text.contains(":7:") && text.contains("is not a setting name"),
        "{text}"
    );
}

/// A PKI spec whose names would leave the cache directory, or a key mode beyond permission bits.
#[test]
fn pki_names_and_modes_stay_in_bounds() {
    let dir = tempfile::tempdir().unwrap();
    for (body, line, what) in [
        (
            "[ca.root]\nsubject = \"/CN=r\"\n\n[cert.\"../../x\"]\nsubject = \"/CN=x\"\nissuer = \"root\"\n",
            4,
            "\"../../x\" is not a plain file name",
        ),
        (
            "[ca.root]\nsubject = \"/CN=r\"\n\n[key_file.\"/tmp/abs.key\"]\nkey = \"root\"\nformat = \"pkcs8-der\"\n",
            4,
            "\"/tmp/abs.key\" is not a plain file name",
        ),
        (
            "[ca.root]\nsubject = \"/CN=r\"\n\n[key_file.\"k.key\"]\nkey = \"root\"\nformat = \"pkcs8-der\"\nmode = \"4755\"\n",
            7,
            "more than permission bits",
        ),
    ] {
        let spec = dir.path().join("pki.toml");
        std::fs::write(&spec, body).unwrap();
        let text = pgssl::pki::PkiSpec::load(&spec)
            .expect_err("must not load")
            .to_string();
        assert!(
            text.starts_with(&format!("{}:{line}:", spec.display())) && text.contains(what),
            "{text}"
        );
    }
}

//! Reports from real runs: JUnit XML, `pgssl diff` naming exactly the case whose expectation
//! was flipped, the HTML page rendered by a real headless Chromium (cells, filters, cell
//! details), and a run split into two shards and merged giving the unsharded results.
//!
//! Four small runs (three scenarios, the local server, libpq and rustls) are shared by the
//! tests through `OnceLock`s.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SCENARIOS: [&str; 3] = [
    "hostname-cn-only.toml",
    "hostname-single-alt-name.toml",
    "sslmode-ssl-on-hostssl.toml",
];
const CLIENTS: &str = "libpq,rustls";
/// The case whose canonical expectation the flipped copy changes.
const FLIPPED: &str = "hostname-cn-only/common-name-upper-case";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn pgssl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgssl"));
    cmd.current_dir(root());
    cmd
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A directory of the test's files, kept for the process (under target/, out of the repo).
fn work() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = root().join("target/reports-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// Copies of the scenarios (with the PKI spec named absolutely); `flip` changes the canonical
/// expectation of [`FLIPPED`] from a connection to `hostname_mismatch`.
fn scenario_dir(name: &str, flip: bool) -> PathBuf {
    // Written once: runs of other tests may be reading them.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = WRITING.lock().unwrap();
    let dir = work().join(name);
    if dir.exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let pki = root().join("certs/pki.toml");
    for file in SCENARIOS {
        let mut text = std::fs::read_to_string(root().join("scenarios").join(file)).unwrap();
        if flip && file == "hostname-cn-only.toml" {
            let at = text.find("id = \"common-name-upper-case\"").unwrap();
            let (head, tail) = text.split_at(at);
            let tail = tail.replacen(
                "expect.connected = { ssl = true }",
                "expect.failed = \"hostname_mismatch\"",
                1,
            );
            assert_ne!(tail, &text[at..], "the flip changed nothing");
            text = format!("{head}{tail}");
        }
        std::fs::write(
            dir.join(file),
            format!("pki = {:?}\n{text}", pki.display().to_string()),
        )
        .unwrap();
    }
    dir
}

/// `pgssl run` over a scenario directory with `extra` arguments; JSON (and JUnit) to `name`.
fn run(name: &str, flip: bool, extra: &[&str]) -> (PathBuf, Output) {
    let dir = scenario_dir(if flip { "flipped" } else { "original" }, flip);
    let json = work().join(format!("{name}.json"));
    let junit = work().join(format!("{name}.xml"));
    let out = pgssl()
        .args(["run", "--client", CLIENTS, "--json"])
        .arg(&json)
        .arg("--junit")
        .arg(&junit)
        .args(extra)
        .arg(&dir)
        .output()
        .unwrap();
    (json, out)
}

/// A run made once for every test that reads it; `status` is its expected exit status.
fn once(cell: &'static OnceLock<PathBuf>, name: &str, flip: bool, status: i32) -> &'static PathBuf {
    cell.get_or_init(|| {
        let (json, out) = run(name, flip, &[]);
        assert_eq!(out.status.code(), Some(status), "{}", show(&out));
        json
    })
}

fn baseline() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    once(&RUN, "baseline", false, 0)
}

/// The flipped case fails on libpq: exit 1.
fn flipped() -> &'static PathBuf {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    once(&RUN, "flipped", true, 1)
}

fn load(path: &Path) -> pgssl::results::ResultsDoc {
    pgssl::results::ResultsDoc::load(path).unwrap()
}

#[test]
fn junit_has_a_testcase_per_pair_with_failures_and_overrides() {
    let doc = load(flipped());
    let xml = std::fs::read_to_string(flipped().with_extension("xml")).unwrap();
    let report = quick_junit::Report::deserialize_from_str(&xml).unwrap();
    let cases: Vec<&quick_junit::TestCase> = report
        .test_suites
        .iter()
        .flat_map(|s| &s.test_cases)
        .collect();
    assert_eq!(cases.len(), doc.results.len());
    assert!(doc.results.len() > 20, "{} results", doc.results.len());
    let suites: Vec<&str> = report.test_suites.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(suites, ["libpq@local", "rustls@local"]);
    let failures: Vec<(&str, &quick_junit::TestCase)> = report
        .test_suites
        .iter()
        .flat_map(|s| s.test_cases.iter().map(move |c| (s.name.as_str(), c)))
        .filter(|(_, c)| !matches!(c.status, quick_junit::TestCaseStatus::Success { .. }))
        .collect();
    assert_eq!(failures.len(), 1, "{xml}");
    let (suite, case) = failures[0];
    assert_eq!((suite, case.name.as_str()), ("libpq@local", FLIPPED));
    match &case.status {
        quick_junit::TestCaseStatus::NonSuccess {
            kind,
            message,
            description,
            ..
        } => {
            assert_eq!(*kind, quick_junit::NonSuccessKind::Failure);
            assert!(message
                .as_ref()
                .unwrap()
                .as_str()
                .contains("hostname_mismatch"));
            let text = description.as_ref().unwrap().as_str();
            assert!(
                text.contains("expected: failed: hostname_mismatch"),
                "{text}"
            );
            assert!(text.contains("actual: connected (ssl, TLSv1.3)"), "{text}");
        }
        other => panic!("{other:?}"),
    }
    // rustls never falls back to the CN: its override applied and is a property.
    let rustls = report
        .test_suites
        .iter()
        .find(|s| s.name.as_str() == "rustls@local")
        .unwrap();
    let common = rustls
        .test_cases
        .iter()
        .find(|c| c.name.as_str() == "hostname-cn-only/common-name")
        .unwrap();
    let prop = |name: &str| {
        common
            .properties
            .iter()
            .find(|p| p.name.as_str() == name)
            .map(|p| p.value.as_str().to_string())
    };
    assert!(prop("override.reason").unwrap().contains("webpki"));
    assert_eq!(prop("override.selector").unwrap(), "client.name=rustls");
    assert_eq!(prop("expected").unwrap(), "failed: hostname_mismatch");
}

#[test]
fn diff_names_exactly_the_flipped_case() {
    let out = pgssl()
        .arg("diff")
        .arg(baseline())
        .arg(flipped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    // Every pair the diff names, whatever the section.
    let named: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .map(str::trim)
        .collect();
    let want = format!("{FLIPPED} [libpq@local]");
    assert_eq!(
        named,
        [want.as_str()].into_iter().collect(),
        "{}",
        show(&out)
    );
    assert!(text.contains("newly failing (1):"), "{text}");
    assert!(text.contains("expectation changed (1):"), "{text}");
    // The other way round nothing regressed: exit 0, and the case passes again.
    let back = pgssl()
        .arg("diff")
        .arg(flipped())
        .arg(baseline())
        .output()
        .unwrap();
    assert_eq!(back.status.code(), Some(0), "{}", show(&back));
    assert!(String::from_utf8_lossy(&back.stdout).contains("newly passing (1):"));
}

#[test]
fn diff_and_report_refuse_bad_input_with_exit_2() {
    let garbage = work().join("garbage.json");
    std::fs::write(&garbage, "{\n  \"results\": [\n").unwrap();
    let out = pgssl()
        .arg("diff")
        .arg(&garbage)
        .arg(&garbage)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("garbage.json") && err.contains("line 3"),
        "{err}"
    );
    let missing = pgssl()
        .args(["report", "no-such.json", "--html"])
        .arg(work().join("never.html"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2), "{}", show(&missing));
    assert!(!work().join("never.html").exists());
}

/// Chromium's DOM after the page's script ran, for the page at `url`.
fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new("chromium")
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = wait_bounded(&mut child);
    String::from_utf8(out).unwrap()
}

const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
];

/// Waits at most a minute for a browser; kills it after that.
fn wait_bounded(child: &mut std::process::Child) -> Vec<u8> {
    use std::io::Read;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium: {status}");
            return reader.join().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn chromium_present() -> bool {
    let found = Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        // CI installs it (ci/install-deps): missing there is a failure, not a skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed (ci/install-deps installs it)"
        );
        eprintln!("SKIPPED: the HTML report test needs Debian's chromium (ci/install-deps)");
    }
    found
}

/// Table rows of the dumped DOM: (case, hidden).
fn rows(dom: &str) -> Vec<(String, bool)> {
    dom.split("<tr ")
        .skip(1)
        .filter_map(|tr| {
            let head = &tr[..tr.find('>')?];
            let case = head.split("data-case=\"").nth(1)?.split('"').next()?;
            Some((case.to_string(), head.contains("hidden")))
        })
        .collect()
}

fn visible(dom: &str) -> Vec<String> {
    rows(dom)
        .into_iter()
        .filter(|(_, hidden)| !hidden)
        .map(|(c, _)| c)
        .collect()
}

#[test]
fn html_report_renders_in_chromium_and_filters() {
    if !chromium_present() {
        return;
    }
    let html = work().join("report.html");
    let out = pgssl()
        .arg("report")
        .arg(flipped())
        .arg("--diff")
        .arg(baseline())
        .arg("--html")
        .arg(&html)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    for remote in ["http://", "https://", "src=", "<link"] {
        assert!(!page.contains(remote), "the page refers to {remote}");
    }
    let doc = load(flipped());
    let url = format!("file://{}", html.display());

    let dom = dump_dom(&url);
    let cells = dom.matches("<td class=\"c ").count();
    assert_eq!(cells, doc.results.len(), "a cell per pair");
    assert_eq!(dom.matches("data-status=\"failed\"").count(), 1);
    assert!(dom.contains("data-status=\"override\""));
    let all = rows(&dom);
    let cases: std::collections::BTreeSet<&str> =
        doc.results.iter().map(|r| r.result.case.as_str()).collect();
    assert_eq!(all.len(), cases.len());
    assert!(
        all.iter().all(|(_, hidden)| !hidden),
        "no filter hides nothing"
    );
    assert!(
        dom.contains(&format!("showing {0} of {0} cases", cases.len())),
        "the script ran"
    );
    assert!(dom.contains("Changes since"), "the diff section");

    // A scenario filter from the fragment shows that scenario's rows only.
    let dom = dump_dom(&format!("{url}#scenario=hostname-single-alt-name"));
    let shown = visible(&dom);
    assert!(!shown.is_empty());
    assert!(
        shown
            .iter()
            .all(|c| c.starts_with("hostname-single-alt-name/")),
        "{shown:?}"
    );
    // Status: the one failure; with a backend, the other column is hidden.
    let dom = dump_dom(&format!("{url}#status=failed&backend=libpq@local"));
    assert_eq!(visible(&dom), [FLIPPED]);
    assert!(dom.contains(
        "<th class=\"b\" data-backend=\"rustls@local\" title=\"rustls@local\" hidden=\"\">"
    ));
    // A class filter: only rows where some cell expected or got hostname_mismatch.
    let dom = dump_dom(&format!("{url}#class=hostname_mismatch"));
    let shown = visible(&dom);
    assert!(shown.contains(&FLIPPED.to_string()) && shown.len() < cases.len());

    // A cell's details: expected, actual, raw message, the override's reason.
    let dom = dump_dom(&format!("{url}#cell={FLIPPED}%20libpq@local"));
    let detail = dom.split("<aside id=\"detail\"").nth(1).unwrap();
    let detail = &detail[..detail.find("</aside>").unwrap()];
    assert!(!detail.starts_with(" hidden"), "{detail}");
    assert!(detail.contains("failed: hostname_mismatch"), "{detail}");
    assert!(detail.contains("connected (ssl, TLSv1.3)"), "{detail}");
    assert!(detail.contains("newly-failing"), "{detail}");
    let dom = dump_dom(&format!(
        "{url}#cell=hostname-cn-only/common-name%20rustls@local"
    ));
    let detail = dom.split("<aside id=\"detail\"").nth(1).unwrap();
    let detail = &detail[..detail.find("</aside>").unwrap()];
    assert!(detail.contains("override reason"), "{detail}");
    assert!(detail.contains("webpki"), "{detail}");
    assert!(detail.contains("raw message"), "{detail}");

    // A screenshot for people, next to the page (target/, not the repository).
    let profile = tempfile::tempdir().unwrap();
    let shot = work().join("report.png");
    let mut child = Command::new("chromium")
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("{url}#cell={FLIPPED}%20libpq@local"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_bounded(&mut child);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}

#[test]
fn two_shards_merged_equal_the_unsharded_run() {
    let base = load(baseline());
    let mut shards = Vec::new();
    for k in ["1/2", "2/2"] {
        let name = format!("shard-{}", &k[..1]);
        let (json, out) = run(&name, false, &["--partition", k]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let doc = load(&json);
        assert!(!doc.results.is_empty(), "shard {k} ran nothing");
        assert!(
            doc.results.len() < base.results.len(),
            "shard {k} ran everything"
        );
        shards.push(json);
    }
    let merged = work().join("merged.json");
    let out = pgssl()
        .arg("merge")
        .args(&shards)
        .arg("-o")
        .arg(&merged)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let merged_doc = load(&merged);
    assert_eq!(merged_doc.results.len(), base.results.len());
    let d = pgssl::diff::diff(&base, &merged_doc);
    assert!(d.entries.is_empty(), "{}", d.text());
    assert_eq!(d.compared, base.results.len());
    // The report reads the merged file.
    let out = pgssl()
        .arg("report")
        .arg(&merged)
        .arg("--html")
        .arg(work().join("merged.html"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));

    // A shard given twice, or one missing, is refused.
    for files in [vec![&shards[0], &shards[0]], vec![&shards[1]]] {
        let out = pgssl()
            .arg("merge")
            .args(files)
            .arg("-o")
            .arg(work().join("refused.json"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    }
}

//! The `pgssl` command line. Exit status: 0 every expectation held, 1 some did not,
//! 2 bad input or infrastructure failure.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use pgssl::case_filter::CaseFilter;
use pgssl::client::{ClientStack, Stacks};
use pgssl::facts::BackendFacts;
use pgssl::matrix::MatrixResult;
use pgssl::report::{Fanout, HumanReporter, JsonReporter, Reporter, TapReporter};
use pgssl::runner::{self, Plan};
use pgssl::scenario::{load_scenarios, Scenario};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "pgssl",
    version,
    about = "Conformance harness for TLS in the PostgreSQL protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios and report progress and a summary.
    Run {
        #[command(flatten)]
        sel: Selection,
        #[command(flatten)]
        pick: Pick,
        #[command(flatten)]
        out: Outputs,
        /// Print a line per case, not only failures.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Run scenarios and print TAP version 14 on stdout (for `prove --exec`).
    Tap {
        #[command(flatten)]
        sel: Selection,
    },
    /// Print one case id per line.
    List {
        /// Scenario files or directories (default: scenarios/).
        scenarios: Vec<PathBuf>,
    },
    /// Validate scenarios and report stale overrides.
    Lint {
        #[command(flatten)]
        sel: Selection,
        /// Regenerate docs/error-classes.md, docs/divergences.md, docs/drivers.md and the JSON schemas in docs/schema/.
        #[arg(long)]
        write_docs: bool,
        /// Also judge overrides against every backend of this matrix (e.g. ci/matrix.toml):
        /// an override for another server build or libpq version is stale only if no
        /// backend there matches it either.
        #[arg(long)]
        matrix: Option<PathBuf>,
        /// Results of earlier runs (`run --json`, `matrix --json`) to count which rows of the
        /// stacks' errors.toml were hit (default: target/pgssl-results.json and
        /// target/pgssl-matrix.json, where they exist).
        #[arg(long)]
        results: Vec<PathBuf>,
    },
    /// Server builds as container images (built offline from Debian's packages).
    Images {
        #[command(subcommand)]
        command: ImagesCommand,
    },
    /// Run every server build of ci/matrix.toml with every client stack; print a case x
    /// backend table (building missing images first).
    Matrix {
        /// The matrix: server builds and client stacks.
        #[arg(long, default_value = "ci/matrix.toml")]
        config: PathBuf,
        /// The stacks directory: one folder per client stack.
        #[arg(long, env = "PGSSL_STACKS", default_value = "stacks")]
        stacks: PathBuf,
        /// Image recipes, for images that do not exist yet.
        #[arg(long, default_value = "ci/images")]
        recipes: PathBuf,
        #[command(flatten)]
        out: Outputs,
        /// Show every case, not only those where some backend diverged or failed.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        pick: Pick,
        /// Scenarios run at once per server build, each on its own server.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        /// Seconds one connection attempt may take (at least 1).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: u64,
        /// Scenario files or directories (default: scenarios/).
        scenarios: Vec<PathBuf>,
    },
    /// A built-in stack behind the attempt protocol on stdin/stdout (cases that set
    /// environment variables; `libpq@<prefix>`).
    #[command(hide = true)]
    StackShim {
        /// The stack's folder name.
        stack: String,
        /// The stacks directory.
        #[arg(long)]
        stacks: PathBuf,
    },
    /// Write one self-contained HTML page of the case x backend grid from results JSON files
    /// (`run --json`, `matrix --json`, `merge`).
    Report {
        /// Results files; several are joined (a pair may appear in only one).
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// The page to write.
        #[arg(long)]
        html: PathBuf,
        /// Also show what changed since this earlier results file.
        #[arg(long, value_name = "OLD.json")]
        diff: Option<PathBuf>,
    },
    /// What changed between two results files: newly failing and passing pairs, outcome
    /// classes, overrides. Exit status 1 when something regressed (fails now, passed before).
    Diff { old: PathBuf, new: PathBuf },
    /// Join the results files of the shards of a partitioned run (`--partition k/n`) into one.
    Merge {
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// Where to write the joined results.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Materialise the PKI (certificates, keys, CRLs) into a directory.
    Certs {
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
        /// The PKI spec (default: certs/pki.toml).
        #[arg(long, default_value = "certs/pki.toml")]
        spec: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImagesCommand {
    /// Build the named images (default: all of ci/images/images.toml) that do not exist yet.
    Build {
        /// Directory of images.toml and build-image.
        #[arg(long, default_value = "ci/images")]
        recipes: PathBuf,
        names: Vec<String>,
    },
}

#[derive(Args)]
struct Selection {
    /// Server build(s) to run against.
    #[arg(
        long = "server",
        env = "PGSSL_SERVER",
        default_value = "local",
        value_delimiter = ','
    )]
    servers: Vec<String>,
    /// Client stack(s) to connect with: a folder of the stacks directory, or NAME:<server
    /// build> (default: the stacks marked `default`).
    #[arg(long = "client", env = "PGSSL_CLIENT", value_delimiter = ',')]
    clients: Vec<String>,
    /// The stacks directory: one folder per client stack (stack.toml, errors.toml).
    #[arg(long, env = "PGSSL_STACKS", default_value = "stacks")]
    stacks: PathBuf,
    /// Directory of the PostgreSQL binaries for the local runtime.
    #[arg(long, env = "PGSSL_PG_BINDIR")]
    pg_bindir: Option<PathBuf>,
    /// Scenarios run at once, each on its own server.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Seconds one connection attempt may take (at least 1).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
    /// Scenario files or directories (default: scenarios/).
    scenarios: Vec<PathBuf>,
}

/// Which cases run.
#[derive(Args, Clone, Default)]
struct Pick {
    /// Only cases whose id contains this text (repeatable: any of them).
    #[arg(long)]
    filter: Vec<String>,
    /// Only the case ids listed in this file, one per line (`#` comments), as `pgssl list`
    /// prints them; an unknown id is an error.
    #[arg(long, value_name = "FILE")]
    ids: Option<PathBuf>,
}

impl Pick {
    /// The filter, checked against the loaded scenarios: an unknown listed id, or a selection
    /// that would run nothing, is a mistake (exit 2), not a success.
    fn resolve(&self, scenarios: &[Scenario]) -> Result<CaseFilter, Infra> {
        let filter = CaseFilter::new(self.filter.clone(), self.ids.as_deref()).map_err(Infra)?;
        let ids = all_ids(scenarios);
        filter
            .check_known(ids.iter().map(String::as_str))
            .map_err(Infra)?;
        if runner::selected_count(scenarios, &filter) == 0 {
            return Err(Infra(anyhow::anyhow!(
                "nothing to run: {} matches none of the {} cases (`pgssl list` shows their ids)",
                filter.describe(),
                ids.len()
            )));
        }
        Ok(filter)
    }
}

/// Every id `pgssl list` prints: server-side checks and cases.
fn all_ids(scenarios: &[Scenario]) -> Vec<String> {
    let mut ids = Vec::new();
    for s in scenarios {
        if s.startup.as_ref().is_some_and(|e| e.fails) {
            ids.push(format!("{}/server-start", s.name));
        }
        if s.reload.as_ref().is_some_and(|r| r.expect.fails) {
            ids.push(format!("{}/server-reload", s.name));
        }
        ids.extend(s.cases.iter().map(|c| c.id.clone()));
    }
    ids
}

/// Where results go, and which part of the work this machine does.
#[derive(Args, Clone, Default)]
struct Outputs {
    /// Also write every result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write JUnit XML (one test case per case x backend) to this file.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Run only shard k of n (e.g. 1/2): units of one scenario on one server build, split
    /// deterministically; join the shards' --json files with `pgssl merge`.
    #[arg(long, value_name = "K/N")]
    partition: Option<pgssl::partition::Partition>,
    /// A previous results JSON whose times balance the shards (every shard must get the same).
    #[arg(long, requires = "partition")]
    durations: Option<PathBuf>,
}

impl Outputs {
    /// This machine's shard of `units` (scenario, server, pairs), if partitioned.
    fn shard(&self, units: Vec<(String, usize)>) -> Result<Option<pgssl::partition::Shard>> {
        let Some(part) = self.partition else {
            return Ok(None);
        };
        let durations = pgssl::partition::load_durations(self.durations.as_deref())?;
        let shard = pgssl::partition::assign(&units, &durations, part);
        eprintln!(
            "pgssl: shard {}/{}: {} of {} units (scenario on server build)",
            shard.index,
            shard.count,
            shard.units.len(),
            shard.units_total
        );
        Ok(Some(shard))
    }

    fn write_junit(&self, results: &[MatrixResult]) -> Result<()> {
        match &self.junit {
            Some(path) => pgssl::report::junit::write(path, results),
            None => Ok(()),
        }
    }
}

/// The units of a run: every scenario on every server spec, with its number of pairs.
fn units(
    scenarios: &[Scenario],
    servers: &[String],
    clients: usize,
    filter: &CaseFilter,
) -> Vec<(String, usize)> {
    servers
        .iter()
        .flat_map(|server| {
            scenarios.iter().map(move |s| {
                let cases = s.cases.iter().filter(|c| filter.matches(&c.id)).count();
                (pgssl::partition::unit(&s.name, server), cases * clients + 1)
            })
        })
        .collect()
}

/// Keeps the scenarios of `server` that are in `shard` (all of them without one).
fn in_shard(
    scenarios: Vec<Scenario>,
    server: &str,
    shard: Option<&pgssl::partition::Shard>,
) -> Vec<Scenario> {
    match shard {
        None => scenarios,
        Some(sh) => scenarios
            .into_iter()
            .filter(|s| sh.units.contains(&pgssl::partition::unit(&s.name, server)))
            .collect(),
    }
}

/// Bad input or broken infrastructure: exit 2.
struct Infra(anyhow::Error);

fn load(paths: &[PathBuf]) -> Result<Vec<Scenario>> {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("scenarios")]
    } else {
        paths.to_vec()
    };
    Ok(load_scenarios(&paths)?)
}

fn clients(stacks: &Stacks, names: &[String]) -> Result<Vec<Arc<dyn ClientStack>>> {
    let names: Vec<String> = if names.is_empty() {
        stacks.default_names()
    } else {
        names.to_vec()
    };
    names.iter().map(|n| stacks.client(n)).collect()
}

/// Keeps the caller's libpq environment (PGHOST, PGSSLMODE, ...), trust store variables and
/// locale out of every attempt. The per-attempt child processes keep what their parent (an
/// isolated pgssl) gave them: a case's own `env`.
fn isolate_environment() {
    let child = std::env::args()
        .nth(1)
        .is_some_and(|c| c == pgssl::client::self_shim::SUBCOMMAND);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") && !key.to_string_lossy().starts_with("PGSSL_") {
            std::env::remove_var(&key);
        }
    }
    if !child {
        // OpenSSL (native-tls, libpq) and rustls-native-certs read these.
        for key in pgssl::scenario::load::ENV_KEYS {
            std::env::remove_var(key);
        }
    }
    std::env::set_var("LC_ALL", "C");
    std::env::remove_var("LANGUAGE");
}

/// How the build's TLS library is configured; a library pgssl cannot configure is exit 2.
fn server_tls(
    runtime: &dyn pgssl::runtime::Runtime,
) -> Result<&'static dyn pgssl::server_tls::ServerTls, Infra> {
    let library = runtime.tls_library().map_err(Infra)?;
    pgssl::server_tls::for_library(&library)
        .map_err(|e| Infra(e.context(format!("server build {}", runtime.build_name()))))
}

/// Runs the selection on every server spec; returns the exit status and every result with
/// the server spec it ran on.
fn run_plan(
    sel: &Selection,
    pick: &Pick,
    reporter: &mut dyn Reporter,
    shard: Option<&pgssl::partition::Shard>,
) -> Result<(i32, Vec<MatrixResult>), Infra> {
    let scenarios = load(&sel.scenarios).map_err(Infra)?;
    let filter = pick.resolve(&scenarios)?;
    let stacks = Stacks::load(&sel.stacks).map_err(|e| Infra(e.into()))?;
    let clients = clients(&stacks, &sel.clients).map_err(Infra)?;
    let mut rows = Vec::new();
    let reaped = pgssl::cleanup::reap_stale();
    if reaped > 0 {
        eprintln!("pgssl: removed {reaped} containers and run directories left by killed runs");
    }
    let rt = tokio::runtime::Runtime::new().map_err(|e| Infra(e.into()))?;
    let mut scenarios = Some(scenarios);
    let mut code = 0;
    for spec in &sel.servers {
        let runtime =
            pgssl::runtime::runtime_by_spec(spec, sel.pg_bindir.clone()).map_err(Infra)?;
        let scenarios = match scenarios.take() {
            Some(s) => s,
            None => load(&sel.scenarios).map_err(Infra)?,
        };
        let scenarios = in_shard(scenarios, spec, shard);
        let server_tls = server_tls(runtime.as_ref())?;
        let plan = Plan {
            scenarios,
            server_tls,
            runtime,
            clients: clients.clone(),
            filter: filter.clone(),
            jobs: sel.jobs,
            timeout: Duration::from_secs(sel.timeout),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let summary = rt.block_on(async {
            let handle = tokio::spawn(runner::run(plan, tx));
            while let Some(ev) = rx.recv().await {
                reporter.event(&ev);
                if let runner::Event::CaseFinished(r) = ev {
                    rows.push(MatrixResult {
                        server: spec.clone(),
                        result: *r,
                    });
                }
            }
            handle.await
        });
        let summary = summary.map_err(|e| Infra(e.into()))?;
        code = code.max(summary.exit_code());
    }
    Ok((code, rows))
}

/// `pgssl run`: the selection, with progress and a summary, and the requested files.
fn run(sel: &Selection, pick: &Pick, out: &Outputs, verbose: bool) -> Result<i32, Infra> {
    let shard = match out.partition {
        None => None,
        Some(_) => {
            let scenarios = load(&sel.scenarios).map_err(Infra)?;
            let filter = pick.resolve(&scenarios)?;
            let clients = if sel.clients.is_empty() {
                Stacks::load(&sel.stacks)
                    .map_err(|e| Infra(e.into()))?
                    .default_names()
                    .len()
            } else {
                sel.clients.len()
            };
            out.shard(units(&scenarios, &sel.servers, clients, &filter))
                .map_err(Infra)?
        }
    };
    let mut sinks: Vec<Box<dyn Reporter>> = vec![Box::new(HumanReporter::new(verbose))];
    if let Some(path) = &out.json {
        sinks.push(Box::new(
            JsonReporter::new(path.clone()).with_shard(shard.as_ref()),
        ));
    }
    let (code, rows) = run_plan(sel, pick, &mut Fanout(sinks), shard.as_ref())?;
    out.write_junit(&rows).map_err(Infra)?;
    Ok(code)
}

struct MatrixArgs {
    config: PathBuf,
    stacks: PathBuf,
    recipes: PathBuf,
    out: Outputs,
    all: bool,
    pick: Pick,
    jobs: usize,
    timeout: u64,
    scenarios: Vec<PathBuf>,
}

fn matrix(a: MatrixArgs) -> Result<i32, Infra> {
    use pgssl::matrix::MatrixConfig;
    let started = std::time::Instant::now();
    let config = MatrixConfig::load(&a.config).map_err(Infra)?;
    let stacks = Stacks::load(&a.stacks).map_err(|e| Infra(e.into()))?;
    let scenarios = load(&a.scenarios).map_err(Infra)?;
    let filter = a.pick.resolve(&scenarios)?;
    let case_order: Vec<String> = scenarios
        .iter()
        .flat_map(|s| s.cases.iter().map(|c| c.id.clone()))
        .collect();
    let shard = a
        .out
        .shard(units(
            &scenarios,
            &config.servers,
            // Pairs per unit for the balance: the mean over servers when [[only]] limits some.
            config
                .servers
                .iter()
                .map(|s| config.clients_for(s).len())
                .sum::<usize>()
                .div_ceil(config.servers.len().max(1)),
            &filter,
        ))
        .map_err(Infra)?;
    let reaped = pgssl::cleanup::reap_stale();
    if reaped > 0 {
        eprintln!("pgssl: removed {reaped} containers and run directories left by killed runs");
    }
    // Images of every server build and of every in-container client stack.
    let mut builds: Vec<String> = config
        .servers
        .iter()
        .filter(|s| s.as_str() != "local")
        .cloned()
        .collect();
    for c in &config.clients {
        if let Some(b) = stacks.container_build(c) {
            if !builds.iter().any(|x| x == b) {
                builds.push(b.to_string());
            }
        }
    }
    if !builds.is_empty() {
        pgssl::images::build(&a.recipes, &builds).map_err(Infra)?;
    }
    let images_done = started.elapsed();
    let clients = clients(&stacks, &config.clients).map_err(Infra)?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| Infra(e.into()))?;
    let mut plans = Vec::new();
    for spec in &config.servers {
        let runtime = pgssl::runtime::runtime_by_spec(spec, None).map_err(Infra)?;
        let scenarios = in_shard(load(&a.scenarios).map_err(Infra)?, spec, shard.as_ref());
        let names = config.clients_for(spec);
        let server_tls = server_tls(runtime.as_ref())?;
        let plan = Plan {
            scenarios,
            server_tls,
            runtime,
            clients: config
                .clients
                .iter()
                .zip(&clients)
                .filter(|(n, _)| names.contains(n))
                .map(|(_, c)| c.clone())
                .collect(),
            filter: filter.clone(),
            jobs: a.jobs,
            timeout: Duration::from_secs(a.timeout),
        };
        plans.push((spec, plan));
    }
    let total = plans.iter().map(|(_, p)| p.total()).sum();
    let mut results: Vec<MatrixResult> = Vec::new();
    let mut human = HumanReporter::new(false).with_total(total);
    for (spec, plan) in plans {
        eprintln!("pgssl: matrix: server build {spec}");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let done = rt.block_on(async {
            let handle = tokio::spawn(runner::run(plan, tx));
            while let Some(ev) = rx.recv().await {
                human.event(&ev);
                if let runner::Event::CaseFinished(r) = ev {
                    results.push(MatrixResult {
                        server: spec.clone(),
                        result: *r,
                    });
                }
            }
            handle.await
        });
        done.map_err(|e| Infra(e.into()))?;
    }
    println!(
        "{}",
        pgssl::matrix::render(&config, &case_order, &results, a.all)
    );
    let div = pgssl::matrix::divergences(&results);
    if !div.is_empty() {
        println!("declared divergences that applied:\n{div}");
    }
    let fails = pgssl::matrix::failures(&results);
    if !fails.is_empty() {
        println!("failures and errors:\n{fails}");
    }
    let wall = started.elapsed();
    a.out.write_junit(&results).map_err(Infra)?;
    let mut doc =
        pgssl::results::ResultsDoc::new(Some(config), case_order, results, wall.as_millis());
    doc.partition = shard;
    if let Some(path) = &a.out.json {
        doc.write(path).map_err(Infra)?;
    }
    let (passed, failed, errors) = (doc.passed, doc.failed, doc.errors);
    println!(
        "matrix: {passed} passed, {failed} failed, {errors} errors; images {:.0} s, wall {:.0} s",
        images_done.as_secs_f64(),
        wall.as_secs_f64()
    );
    drop(clients);
    Ok(if errors > 0 {
        2
    } else if failed > 0 {
        1
    } else {
        0
    })
}

/// `pgssl report`: the HTML page of one or more results files, optionally with a diff.
fn report(results: &[PathBuf], html: &std::path::Path, diff: Option<&PathBuf>) -> Result<i32> {
    let docs = results
        .iter()
        .map(|p| Ok((p.clone(), pgssl::results::ResultsDoc::load(p)?)))
        .collect::<Result<Vec<_>>>()?;
    // A report may show a single shard; `merge` insists on all of them.
    let doc = pgssl::results::merge(docs, false)?;
    let names: Vec<String> = results.iter().map(|p| p.display().to_string()).collect();
    let changes = match diff {
        Some(old) => Some((
            pgssl::diff::diff(&pgssl::results::ResultsDoc::load(old)?, &doc),
            old.display().to_string(),
        )),
        None => None,
    };
    let page = pgssl::report::html::render(
        &doc,
        &names,
        changes.as_ref().map(|(d, name)| (d, name.as_str())),
    );
    std::fs::write(html, &page).with_context(|| format!("writing {}", html.display()))?;
    eprintln!(
        "pgssl report: {} ({} pairs, {} KiB)",
        html.display(),
        doc.results.len(),
        page.len() / 1024
    );
    Ok(0)
}

fn lint(
    sel: &Selection,
    write_docs: bool,
    matrix: Option<PathBuf>,
    results: Vec<PathBuf>,
) -> Result<i32, Infra> {
    let scenarios = load(&sel.scenarios).map_err(Infra)?;
    if write_docs {
        let write = |path: &str, body: String| {
            std::fs::write(path, body).with_context(|| format!("writing {path}"))
        };
        write("docs/error-classes.md", pgssl::lint::error_classes_doc()).map_err(Infra)?;
        write(
            "docs/divergences.md",
            pgssl::lint::divergences_doc(&scenarios),
        )
        .map_err(Infra)?;
        let stacks = Stacks::load(&sel.stacks).map_err(|e| Infra(e.into()))?;
        write(
            "docs/drivers.md",
            pgssl::drivers_doc::drivers_doc(&scenarios, &stacks),
        )
        .map_err(Infra)?;
        std::fs::create_dir_all("docs/schema").map_err(|e| Infra(e.into()))?;
        write(
            "docs/schema/scenario.schema.json",
            pgssl::lint::scenario_schema(),
        )
        .map_err(Infra)?;
        write("docs/schema/pki.schema.json", pgssl::lint::pki_schema()).map_err(Infra)?;
        write(
            "docs/schema/attempt.schema.json",
            pgssl::client::protocol::schema(),
        )
        .map_err(Infra)?;
    }
    let stacks = Stacks::load(&sel.stacks).map_err(|e| Infra(e.into()))?;
    let clients = clients(&stacks, &sel.clients).map_err(Infra)?;
    let mut backends = Vec::new();
    for spec in &sel.servers {
        let runtime =
            pgssl::runtime::runtime_by_spec(spec, sel.pg_bindir.clone()).map_err(Infra)?;
        let server = runtime.detect_facts().map_err(Infra)?;
        for c in &clients {
            backends.push(BackendFacts {
                server: server.clone(),
                client: c.facts().clone(),
            });
        }
    }
    let judged_everywhere = matrix.is_some();
    if let Some(path) = matrix {
        let config = pgssl::matrix::MatrixConfig::load(&path).map_err(Infra)?;
        let matrix_clients = self::clients(&stacks, &config.clients).map_err(Infra)?;
        let mut servers = Vec::new();
        for spec in &config.servers {
            let runtime = pgssl::runtime::runtime_by_spec(spec, None).map_err(Infra)?;
            let server = runtime.detect_facts().map_err(Infra)?;
            servers.push((Some(spec.as_str()), server.clone()));
            let names = config.clients_for(spec);
            for (_, c) in config
                .clients
                .iter()
                .zip(&matrix_clients)
                .filter(|(n, _)| names.contains(n))
            {
                backends.push(BackendFacts {
                    server: server.clone(),
                    client: c.facts().clone(),
                });
            }
        }
        for o in &config.outside {
            let server = pgssl::facts::ServerFacts {
                build: o.build.clone(),
                runtime: "local".into(),
                pg_version: o.pg_version.clone(),
                tls_library: o.tls_library.clone(),
                tls_version: o.tls_version.clone(),
            };
            servers.push((None, server.clone()));
            for c in self::clients(&stacks, &o.clients).map_err(Infra)? {
                backends.push(BackendFacts {
                    server: server.clone(),
                    client: c.facts().clone(),
                });
            }
        }
        for oc in &config.outside_client {
            let client = pgssl::facts::ClientFacts {
                name: oc.name.clone(),
                tls_library: oc.tls_library.clone(),
                tls_version: oc.tls_version.clone(),
                libpq_version: oc.libpq_version.clone(),
            };
            for (spec, server) in &servers {
                let runs = match spec {
                    Some(spec) => oc.servers.iter().any(|s| s == spec),
                    None => oc.outside,
                };
                if runs {
                    backends.push(BackendFacts {
                        server: server.clone(),
                        client: client.clone(),
                    });
                }
            }
        }
    }
    let mut findings = pgssl::lint::stale_overrides(&scenarios, &backends);
    let results = if results.is_empty() {
        ["target/pgssl-results.json", "target/pgssl-matrix.json"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .collect()
    } else {
        results
    };
    let mut failures = Vec::new();
    for path in &results {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))
            .map_err(Infra)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a results file", path.display()))
            .map_err(Infra)?;
        failures.extend(pgssl::lint::failures_in_results(&json));
    }
    let (unhit, table_findings): (Vec<_>, Vec<_>) = pgssl::lint::error_table_findings(
        &scenarios,
        &backends,
        &stacks,
        (!results.is_empty()).then_some(failures.as_slice()),
    )
    .into_iter()
    .partition(|f| f.unmatched);
    findings.extend(table_findings);
    for f in &unhit {
        eprintln!("note: {f}");
    }
    if results.is_empty() {
        eprintln!(
            "pgssl lint: no results file given, so error-table rows were not counted (--results)"
        );
    }
    // Coverage currency needs the whole catalogue.
    let coverage = "docs/coverage.md";
    if sel.scenarios.is_empty() {
        if let Ok(doc) = std::fs::read_to_string(coverage) {
            findings.extend(pgssl::lint::coverage_gaps(&scenarios, coverage, &doc));
        }
    }
    // Without the matrix, an override for another build or library version selects nothing
    // here but may well be live: count those, and judge them only with --matrix.
    let (findings, unjudged): (Vec<_>, Vec<_>) = findings
        .into_iter()
        .partition(|f| judged_everywhere || !f.unmatched);
    for f in &findings {
        println!("{f}");
    }
    let cases: usize = scenarios.iter().map(|s| s.cases.len()).sum();
    eprintln!(
        "pgssl lint: {} scenarios, {cases} cases, {} findings",
        scenarios.len(),
        findings.len()
    );
    if !unjudged.is_empty() {
        eprintln!(
            "pgssl lint: {} overrides select backends outside this run; judge them with --matrix ci/matrix.toml",
            unjudged.len()
        );
    }
    Ok(if findings.is_empty() { 0 } else { 1 })
}

fn main() {
    isolate_environment();
    pgssl::cleanup::install_signal_handlers();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            sel,
            pick,
            out,
            verbose,
        } => run(&sel, &pick, &out, verbose),
        Command::Tap { sel } => run_plan(
            &sel,
            &Pick::default(),
            &mut TapReporter::new(std::io::stdout()),
            None,
        )
        .map(|(code, _)| code),
        Command::Report {
            results,
            html,
            diff,
        } => report(&results, &html, diff.as_ref()).map_err(Infra),
        Command::Diff { old, new } => (|| -> Result<i32> {
            let old = pgssl::results::ResultsDoc::load(&old)?;
            let new = pgssl::results::ResultsDoc::load(&new)?;
            let d = pgssl::diff::diff(&old, &new);
            print!("{}", d.text());
            Ok(i32::from(d.regressed()))
        })()
        .map_err(Infra),
        Command::Merge { results, output } => (|| -> Result<i32> {
            let docs = results
                .iter()
                .map(|p| Ok((p.clone(), pgssl::results::ResultsDoc::load(p)?)))
                .collect::<Result<Vec<_>>>()?;
            let doc = pgssl::results::merge(docs, true)?;
            doc.write(&output)?;
            eprintln!(
                "pgssl merge: {} results from {} files into {}",
                doc.results.len(),
                results.len(),
                output.display()
            );
            Ok(0)
        })()
        .map_err(Infra),
        Command::List { scenarios } => load(&scenarios).map_err(Infra).map(|all| {
            for s in &all {
                if s.startup.as_ref().is_some_and(|e| e.fails) {
                    println!("{}/server-start", s.name);
                }
                if s.reload.as_ref().is_some_and(|r| r.expect.fails) {
                    println!("{}/server-reload", s.name);
                }
                for c in &s.cases {
                    println!("{}", c.id);
                }
            }
            0
        }),
        Command::StackShim { stack, stacks } => Ok(pgssl::client::self_shim::main(&stack, &stacks)),
        Command::Lint {
            sel,
            write_docs,
            matrix,
            results,
        } => lint(&sel, write_docs, matrix, results),
        Command::Images {
            command: ImagesCommand::Build { recipes, names },
        } => pgssl::images::build(&recipes, &names)
            .map(|()| 0)
            .map_err(Infra),
        Command::Matrix {
            config,
            stacks,
            recipes,
            out,
            all,
            pick,
            jobs,
            timeout,
            scenarios,
        } => matrix(MatrixArgs {
            config,
            stacks,
            recipes,
            out,
            all,
            pick,
            jobs,
            timeout,
            scenarios,
        }),
        Command::Certs { out, spec } => (|| -> Result<i32> {
            let spec = pgssl::pki::PkiSpec::load(&spec)?;
            let dir = spec.materialize(&pgssl::pki::cache_root())?;
            pgssl::pki::copy_tree(&dir.dir, &out)
                .with_context(|| format!("writing {}", out.display()))?;
            eprintln!(
                "pgssl: wrote {} files to {}",
                spec.file_names().len(),
                out.display()
            );
            Ok(0)
        })()
        .map_err(Infra),
    };
    let code = match result {
        Ok(code) => code,
        Err(Infra(e)) => {
            eprintln!("pgssl: {e:#}");
            2
        }
    };
    pgssl::cleanup::cleanup_all();
    // A run cut short by a signal reports the signal, not what the half-run saw.
    std::process::exit(pgssl::cleanup::interrupted().unwrap_or(code));
}

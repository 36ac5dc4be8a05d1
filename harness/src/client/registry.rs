//! The client stacks a run can name: one folder per stack under `stacks/`. `stack.toml` says
//! how the stack starts (a built-in adapter, or a shim command speaking the attempt protocol),
//! `errors.toml` maps its native errors to classes. `--client NAME` takes any folder name;
//! `NAME:<build>` takes a folder whose stack also runs inside a server build's image.

use super::error_table::ErrorTable;
use super::shim::{Shim, ShimSpec};
use super::{container_libpq, container_nss, ClientStack, Libpq, NativeTls, Nss, Rustls};
use crate::scenario::load::{parse_toml, LoadError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Adapters compiled into pgssl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Builtin {
    Libpq,
    NativeTls,
    Rustls,
    Nss,
}

/// Built-in adapters that run a stack inside a server build's image (`NAME:<build>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PerBuild {
    /// psql of the image behind the attempt protocol (`container-shim.pl` of the folder),
    /// one exec per stack.
    ContainerLibpq,
    /// `pgssl stack-shim nss` in the image, on the image's NSS, processes pooled as execs.
    ContainerNss,
}

/// A fact a shim's `hello` must report (non-empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fact {
    TlsLibrary,
    TlsVersion,
    LibpqVersion,
}

/// `stacks/<name>/stack.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackFile {
    /// A built-in adapter; exclusive with `command`.
    pub builtin: Option<Builtin>,
    /// Also offer `<name>:<build>` through this built-in adapter.
    pub per_build: Option<PerBuild>,
    /// Also offer `<name>@<prefix>`: the built-in adapter in a process of its own
    /// (`pgssl stack-shim`) whose dynamic loader takes the library from `<prefix>/lib`.
    #[serde(default)]
    pub per_prefix: bool,
    /// A shim: program and arguments. Arguments starting with `./` or `../` are paths relative
    /// to the stack's folder.
    pub command: Option<Vec<String>>,
    /// How the stack gets onto a machine (shown when it does not start).
    #[serde(default)]
    pub install: String,
    /// Facts the shim's `hello` must report.
    #[serde(default)]
    pub facts: Vec<Fact>,
    /// Attempts a shim process takes at once.
    #[serde(default = "one")]
    pub max_in_flight: usize,
    /// Part of the default set of `pgssl run` (no `--client`).
    #[serde(default)]
    pub default: bool,
    /// Error classes the shim itself may give in a reply's `class` (it knows them with
    /// certainty, e.g. `unsupported`); a reply naming another class is a harness error.
    #[serde(default)]
    pub shim_classes: Vec<crate::error_class::ErrorClass>,
    /// The TLS library, as the `client.tls_library` fact names it. Only docs/drivers.md reads
    /// it (to select overrides without starting the stack); runs use what the stack reports.
    #[serde(default)]
    pub tls_library: String,
}

fn one() -> usize {
    1
}

/// A stack folder, loaded.
#[derive(Debug, Clone)]
pub struct StackFolder {
    pub name: String,
    pub dir: PathBuf,
    pub spec: StackFile,
    /// `errors.toml`, if the folder has one.
    pub errors: Option<ErrorTable>,
}

/// Every stack folder of a `stacks/` directory.
#[derive(Debug, Clone)]
pub struct Stacks {
    pub dir: PathBuf,
    pub folders: BTreeMap<String, StackFolder>,
}

/// The stacks directory next to the crate (for tests and the hidden subcommands' children).
pub fn source_stacks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../stacks")
}

/// The directory the last [`Stacks::load`] read, for the hidden per-attempt subcommands.
static LOADED: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// The directory the last [`Stacks::load`] read (else the crate's own `stacks/`).
pub fn loaded_dir() -> PathBuf {
    LOADED
        .lock()
        .ok()
        .and_then(|d| d.clone())
        .unwrap_or_else(source_stacks_dir)
}

impl Stacks {
    /// Loads every folder of `dir`; a bad `stack.toml` or `errors.toml` is a located error.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        if let (Ok(mut last), Ok(abs)) = (LOADED.lock(), dir.canonicalize()) {
            *last = Some(abs);
        }
        let unreadable = |e: std::io::Error| LoadError {
            file: dir.to_path_buf(),
            line: None,
            message: format!("cannot read the stacks directory: {e}"),
        };
        let mut folders = BTreeMap::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(unreadable)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for path in entries {
            let folder = load_folder(&path)?;
            folders.insert(folder.name.clone(), folder);
        }
        Ok(Stacks {
            dir: dir.to_path_buf(),
            folders,
        })
    }

    /// Names of the stacks `pgssl run` uses when no `--client` is given.
    pub fn default_names(&self) -> Vec<String> {
        self.folders
            .values()
            .filter(|f| f.spec.default)
            .map(|f| f.name.clone())
            .collect()
    }

    /// The folder behind a client name (`psycopg`, `libpq:pg15-openssl3.0` -> `libpq`,
    /// `libpq@/opt/pg` -> `libpq`).
    pub fn folder(&self, name: &str) -> Option<&StackFolder> {
        let base = base_name(name);
        self.folders.get(base)
    }

    /// The server build an in-image stack (`libpq:<build>`) runs in.
    pub fn container_build<'a>(&self, name: &'a str) -> Option<&'a str> {
        let (base, build) = name.split_once(':')?;
        self.folders.get(base)?.spec.per_build.map(|_| build)
    }

    /// Starts (or builds) the stack a client name means.
    pub fn client(&self, name: &str) -> anyhow::Result<Arc<dyn ClientStack>> {
        let Some(folder) = self.folder(name) else {
            anyhow::bail!(
                "unknown client stack {name:?}; the folders of {} are: {} (and NAME:<server build> for {})",
                self.dir.display(),
                self.folders.keys().cloned().collect::<Vec<_>>().join(", "),
                self.folders
                    .values()
                    .filter(|f| f.spec.per_build.is_some())
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let errors = folder.errors.clone().unwrap_or_default();
        if let Some((base, prefix)) = name.split_once('@') {
            return self.with_prefix(folder, base, prefix);
        }
        if let Some((_, build)) = name.split_once(':') {
            return match folder.spec.per_build {
                Some(PerBuild::ContainerLibpq) => Ok(Arc::new(container_libpq::start(
                    build,
                    &folder.dir,
                    errors,
                )?)),
                Some(PerBuild::ContainerNss) => Ok(Arc::new(container_nss::start(build, self)?)),
                None => anyhow::bail!(
                    "client stack {:?} does not run inside server builds ({name:?})",
                    folder.name
                ),
            };
        }
        match (&folder.spec.builtin, &folder.spec.command) {
            // NSS keeps one certificate store per process: its attempts run in pgssl's own
            // shim processes, one at a time each.
            (Some(Builtin::Nss), _) => Ok(Arc::new(Shim::start(super::self_shim::spec(
                name,
                &folder.name,
                self,
                Vec::new(),
            )?)?)),
            (Some(kind), _) => builtin(*kind, errors),
            (None, Some(command)) => Ok(Arc::new(Shim::start(ShimSpec {
                name: folder.name.clone(),
                dir: folder.dir.clone(),
                command: command.clone(),
                install: folder.spec.install.clone(),
                facts: folder.spec.facts.clone(),
                max_in_flight: folder.spec.max_in_flight,
                shim_classes: folder.spec.shim_classes.clone(),
                errors,
                env: Vec::new(),
            })?)),
            (None, None) => unreachable!("checked when loading"),
        }
    }
}

impl Stacks {
    /// The built-in adapter of folder `name`, in this process (what `pgssl stack-shim` serves).
    pub fn in_process(&self, name: &str) -> anyhow::Result<Arc<dyn ClientStack>> {
        match self.folders.get(name) {
            Some(StackFolder {
                spec:
                    StackFile {
                        builtin: Some(kind),
                        ..
                    },
                errors,
                ..
            }) => builtin(*kind, errors.clone().unwrap_or_default()),
            _ => anyhow::bail!(
                "{name:?} is not a built-in client stack of {}",
                self.dir.display()
            ),
        }
    }

    /// `NAME@<prefix>`: the folder's built-in adapter in a `pgssl stack-shim` process whose
    /// dynamic loader looks in `<prefix>/lib` first.
    fn with_prefix(
        &self,
        folder: &StackFolder,
        base: &str,
        prefix: &str,
    ) -> anyhow::Result<Arc<dyn ClientStack>> {
        if !folder.spec.per_prefix || folder.spec.builtin.is_none() {
            anyhow::bail!(
                "client stack {base:?} does not load a library from an install prefix (\"{base}@{prefix}\"); those that do: {}",
                self.folders
                    .values()
                    .filter(|f| f.spec.per_prefix)
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let prefix = Path::new(prefix)
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("client stack {base}@{prefix}: {prefix}: {e}"))?;
        let Some(lib) = library_dir(&prefix) else {
            anyhow::bail!(
                "client stack {base}@{}: expected a PostgreSQL install prefix with lib/libpq.so.5 (or lib/<multiarch>/libpq.so.5): the --prefix given to configure",
                prefix.display()
            );
        };
        let name = format!("{base}@{}", prefix.display());
        let spec = super::self_shim::spec(
            &name,
            base,
            self,
            vec![("LD_LIBRARY_PATH".into(), lib.display().to_string())],
        )?;
        Ok(Arc::new(Shim::start(spec)?))
    }
}

/// The directory of `<prefix>` that holds libpq.so.5: `lib`, `lib64`, or one level below
/// `lib` (Debian's multiarch `lib/x86_64-linux-gnu`).
fn library_dir(prefix: &Path) -> Option<PathBuf> {
    let has = |d: &Path| d.join("libpq.so.5").exists();
    let direct = ["lib", "lib64"].map(|d| prefix.join(d));
    if let Some(d) = direct.iter().find(|d| has(d)) {
        return Some(d.clone());
    }
    let mut below: Vec<PathBuf> = std::fs::read_dir(prefix.join("lib"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| d.is_dir() && has(d))
        .collect();
    below.sort();
    below.into_iter().next()
}

/// The folder part of a client name.
fn base_name(name: &str) -> &str {
    let end = name.find([':', '@']).unwrap_or(name.len());
    &name[..end]
}

/// A built-in in-process adapter.
pub fn builtin(kind: Builtin, errors: ErrorTable) -> anyhow::Result<Arc<dyn ClientStack>> {
    Ok(match kind {
        Builtin::Libpq => Arc::new(Libpq::new(errors)?),
        Builtin::NativeTls => Arc::new(NativeTls::new()),
        Builtin::Rustls => Arc::new(Rustls::new()),
        // Its database cache may be unwritable: a located error, not a panic.
        Builtin::Nss => Arc::new(Nss::new()?),
    })
}

fn load_folder(dir: &Path) -> Result<StackFolder, LoadError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = dir.join("stack.toml");
    let source = std::fs::read_to_string(&path).map_err(|e| LoadError {
        file: path.clone(),
        line: None,
        message: format!("cannot read (every folder of stacks/ is a client stack): {e}"),
    })?;
    let spec: StackFile = parse_toml(&path, &source)?;
    let whole = |message: &str| LoadError {
        file: path.clone(),
        line: None,
        message: message.to_string(),
    };
    match (&spec.builtin, &spec.command) {
        (Some(_), Some(_)) => return Err(whole("expected `builtin` or `command`, not both")),
        (None, None) => return Err(whole("expected `builtin = \"...\"` or `command = [...]`")),
        (None, Some(c)) if c.is_empty() => return Err(whole("`command` is empty")),
        _ => {}
    }
    if spec.max_in_flight == 0 {
        return Err(whole("`max_in_flight` must be at least 1"));
    }
    if name.contains([':', '@']) || name.is_empty() {
        return Err(whole("a stack folder's name may not contain ':' or '@'"));
    }
    if spec.per_prefix && spec.builtin.is_none() {
        return Err(whole(
            "`per_prefix` needs `builtin`: a shim loads its libraries itself",
        ));
    }
    // Absolute: a shim runs in its folder, and its relative arguments resolve against it.
    let dir = dir
        .canonicalize()
        .map_err(|e| whole(&format!("cannot resolve the folder: {e}")))?;
    let errors_path = dir.join("errors.toml");
    let errors = if errors_path.is_file() {
        Some(ErrorTable::load(&errors_path)?)
    } else {
        None
    };
    Ok(StackFolder {
        name,
        dir,
        spec,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_stacks_load() {
        let stacks = Stacks::load(&source_stacks_dir()).unwrap();
        assert!(stacks.folders.contains_key("libpq"));
        assert_eq!(
            stacks.container_build("libpq:pg15-openssl3.0"),
            Some("pg15-openssl3.0")
        );
        assert_eq!(stacks.container_build("psycopg:x"), None);
        assert!(stacks.default_names().contains(&"libpq".to_string()));
    }

    #[test]
    fn bad_stack_files_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("odd");
        std::fs::create_dir(&s).unwrap();
        std::fs::write(
            s.join("stack.toml"),
            "builtin = \"libpq\"\nmax_in_flight = \"x\"\n",
        )
        .unwrap();
        let e = Stacks::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("odd/stack.toml:2:"), "{e}");
        std::fs::write(s.join("stack.toml"), "builtin = \"psql\"\n").unwrap();
        let e = Stacks::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("stack.toml:1:") && e.contains("native-tls"),
            "{e}"
        );
        std::fs::write(s.join("stack.toml"), "builtin = \"libpq\"\n").unwrap();
        std::fs::write(s.join("errors.toml"), "[[error]]\nmessage = 3\n").unwrap();
        let e = Stacks::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("odd/errors.toml:2:"), "{e}");
    }
}

//! The executable behind pgssl's hidden subcommand `stack-shim`.

use std::path::PathBuf;

/// The executable that serves the subcommands: this binary, or `pgssl` next to a test binary.
pub(crate) fn executable() -> PathBuf {
    if let Some(p) = std::env::var_os("PGSSL_NSS_HELPER") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| "pgssl".into());
    // A test binary (target/<profile>/deps/<name>) uses target/<profile>/pgssl; any other
    // binary, whatever its name (a copy kept for a benchmark), is pgssl itself.
    match exe.parent() {
        Some(deps) if deps.file_name().is_some_and(|n| n == "deps") => {
            deps.parent().map(|d| d.join("pgssl")).unwrap_or(exe)
        }
        // The very file this process runs, also when a rebuild has replaced it on disk
        // during a long run (a matrix): a helper must speak this binary's wire format.
        _ if std::path::Path::new(SELF_EXE).exists() => SELF_EXE.into(),
        _ => exe,
    }
}

const SELF_EXE: &str = "/proc/self/exe";

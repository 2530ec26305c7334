//! Runs the real `solar-train` binary from integration tests, so exit codes and the split
//! between stdout and stderr are tested exactly as a user sees them.
//! Cargo only builds a package's binaries for that package's own tests, and the binary lives
//! in solar-cli, so the first call builds it with the same cargo, profile and target folder as
//! the running test (a no-op when it is up to date). Set SOLAR_TRAIN_BIN to use a binary
//! built elsewhere instead, and SOLAR_FEATURES to build it with solar-cli's cargo features.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` if a signal ended the process).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The path of an up-to-date `solar-train` binary, building it on first use.
pub fn solar_train_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| match std::env::var_os("SOLAR_TRAIN_BIN") {
        Some(p) => PathBuf::from(p),
        None => build_solar_train(),
    })
}

/// Runs `solar-train` with `args` and collects what it did.
pub fn solar_train(args: &[&str]) -> Run {
    solar_train_env(args, &[])
}

/// `solar_train` with these environment variables set for the run (and only for it).
pub fn solar_train_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(solar_train_path())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", solar_train_path().display()));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The test executable sits in target/<profile dir>/deps/; the binary goes in the profile dir.
fn build_solar_train() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps")
        .to_path_buf();
    let dir_name = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    // `cargo test` builds with the test profile into target/debug; building the binary with
    // that profile too reuses the test build's compiled crates instead of compiling them again.
    let profile = if dir_name == "debug" { "test" } else { dir_name };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ sits in the workspace");
    // SOLAR_FEATURES: solar-cli's features the test build was made with (scripts/test.sh sets
    // `mpi`), so this build matches it instead of replacing the binary with one without them.
    let features = std::env::var("SOLAR_FEATURES").unwrap_or_default();
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", "solar-cli", "--bin", "solar-train", "--profile", profile])
        .args(if features.is_empty() { vec![] } else { vec!["--features", features.as_str()] })
        .status()
        .expect("cannot start cargo to build solar-train");
    assert!(status.success(), "building solar-train failed ({status})");
    let bin = profile_dir.join(format!("solar-train{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "cargo built solar-train but {} is missing", bin.display());
    bin
}

/// A fresh, empty folder `root/name` for one test (root: the test's CARGO_TARGET_TMPDIR).
pub fn scratch_dir(root: &str, name: &str) -> PathBuf {
    let d = Path::new(root).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a scratch folder");
    d
}

/// A test path as text (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Asserts the run succeeded, showing its stderr when it did not.
pub fn assert_ok(run: &Run) {
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
}

//! Fault injection for the kill-at-every-step tests. Every filesystem step of a save (creating
//! a folder or file, syncing, linking, renaming, removing) calls `fs_step` first. With
//! `SOLAR_FAULT_AT=N` the process aborts just before its Nth step, as close to SIGKILL as a
//! process can do to itself (no destructors, no cleanup), so a test can kill a save at every
//! step in turn and check the folder after each. Unset, a step costs one relaxed atomic add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the step to die at (1-based, counted over the process).
pub const FAULT_ENV: &str = "SOLAR_FAULT_AT";

static STEPS: AtomicU64 = AtomicU64::new(0);

fn fault_at() -> Option<u64> {
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    *AT.get_or_init(|| std::env::var(FAULT_ENV).ok().and_then(|v| v.trim().parse().ok()))
}

/// Counts one filesystem step of a save, aborting the process if it is the one SOLAR_FAULT_AT
/// names. `what` says which step, so a failing test can tell where it died.
pub fn fs_step(what: &str, path: &std::path::Path) {
    let n = STEPS.fetch_add(1, Ordering::Relaxed) + 1;
    if fault_at() == Some(n) {
        eprintln!("{FAULT_ENV}: aborting before step {n}: {what} {}", path.display());
        std::process::abort();
    }
}

/// Filesystem steps taken so far by this process's saves.
pub fn steps_taken() -> u64 {
    STEPS.load(Ordering::Relaxed)
}

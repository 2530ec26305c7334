//! The watchdog over blocking collectives. A collective waits for every rank; when one rank has
//! died (killed, out of memory, a node lost) the others would wait forever, since neither MPI
//! nor NCCL time out. A thread per rank watches the collective in progress and ends the process
//! with a message naming the rank and what it waited for when either
//! - the collective has waited longer than the timeout (`SOLAR_DIST_TIMEOUT` seconds, default
//!   1800: rank 0 writing a large checkpoint keeps the others waiting for minutes), or
//! - a stop signal arrived (launchers send SIGTERM to the survivors when a rank dies) and the
//!   collective is still waiting `GRACE` later: a job stopped on purpose finishes its step and
//!   stops together (the trainer agrees on the stop), a job with a dead rank cannot.
//!
//! The exit is immediate (`_exit(1)`): the collective is still running on the main thread, so
//! nothing else may touch the library; checkpoints are written atomically, so none is half.

use crate::error::Result;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const GRACE: Duration = Duration::from_secs(10);
const NAMES: [&str; 6] = ["reduce-scatter", "all-gather", "broadcast", "all-reduce", "barrier", "collective"];

/// Milliseconds since `EPOCH` when the current collective began, plus one; 0 when none runs.
static BEGAN: AtomicU64 = AtomicU64::new(0);
static WHAT: AtomicUsize = AtomicUsize::new(0);
static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Says whether the process was asked to stop (the signal's name); set by the trainer, which
/// owns the signal handlers.
static STOP_CHECK: OnceLock<fn() -> Option<&'static str>> = OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The collective timeout: `SOLAR_DIST_TIMEOUT` seconds, default 30 minutes.
pub fn timeout_from_env() -> std::result::Result<Duration, String> {
    match std::env::var("SOLAR_DIST_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(1800)),
        Ok(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            _ => Err(format!("SOLAR_DIST_TIMEOUT={v:?} is not a positive number of seconds")),
        },
    }
}

/// Lets the watchdog see stop signals.
pub fn set_stop_check(f: fn() -> Option<&'static str>) {
    let _ = STOP_CHECK.set(f);
}

/// Runs one blocking collective under the watch.
pub(crate) fn during<T>(what: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    WHAT.store(NAMES.iter().position(|n| *n == what).unwrap_or(NAMES.len() - 1), Ordering::Relaxed);
    BEGAN.store(now_ms() + 1, Ordering::SeqCst);
    let r = f();
    BEGAN.store(0, Ordering::SeqCst);
    r
}

/// Starts the watching thread of this rank.
pub(crate) fn start(rank: usize, size: usize) {
    let timeout = timeout_from_env().unwrap_or(Duration::from_secs(1800));
    now_ms();
    let spawned = std::thread::Builder::new().name("solar-dist-watchdog".into()).spawn(move || {
        let mut signalled: Option<(Instant, &'static str)> = None;
        let mut told = false;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let began = BEGAN.load(Ordering::SeqCst);
            if signalled.is_none() {
                signalled = STOP_CHECK.get().and_then(|f| f()).map(|s| (Instant::now(), s));
            }
            if began == 0 {
                continue;
            }
            let waited = Duration::from_millis(now_ms().saturating_sub(began - 1));
            let what = NAMES[WHAT.load(Ordering::Relaxed)];
            if let (Some((_, sig)), false) = (signalled, told) {
                // Said at once: a launcher that kills the survivors of a dead rank may not
                // wait out the grace period, and every rank should have said why it ends.
                told = true;
                super::say_error(&format!(
                    "note: rank {rank} of {size}: {sig} while waiting in {what} for the other ranks: stopping with them after this step, or in {} s if one has died",
                    GRACE.as_secs()
                ));
            }
            let reason = match signalled {
                Some((at, sig)) if at.elapsed() >= GRACE && waited >= GRACE => {
                    format!("stopped by {sig} while waiting {:.0} s in {what} for the other ranks", waited.as_secs_f64())
                }
                _ if waited >= timeout => format!(
                    "no answer from the other ranks for {:.0} s in {what} (SOLAR_DIST_TIMEOUT)",
                    waited.as_secs_f64()
                ),
                _ => continue,
            };
            super::say_error(&format!(
                "error: rank {rank} of {size}: {reason}: a rank has died or hangs; ending this rank (the last complete checkpoint is intact)"
            ));
            // SAFETY: _exit ends the process at once; nothing runs after it.
            unsafe { libc::_exit(1) };
        }
    });
    if let Err(e) = spawned {
        super::say_error(&format!("warning: rank {rank}: cannot start the collective watchdog: {e}"));
    }
}

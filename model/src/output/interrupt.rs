//! SIGINT and SIGTERM for commands that write outputs. The handler only records the signal;
//! long loops (training steps, tensors of a streamed save) poll `check` between steps and stop
//! with `ModelError::Interrupted`, so a save is either finished or abandoned through the normal
//! error path, whose destructors remove temporaries and release the output lock. The command
//! then exits 128 + signal (130, 143) as shells expect. The handler is one-shot
//! (SA_RESETHAND): a second Ctrl-C kills at once, for a user who will not wait.

use crate::error::{ModelError, Result};
use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

#[cfg(unix)]
extern "C" fn record(sig: libc::c_int) {
    // Only an atomic store: anything else is not async-signal-safe.
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Installs the recording handler for SIGINT and SIGTERM.
pub fn install() {
    #[cfg(unix)]
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only stores to an atomic.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESETHAND | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// The signal received so far, if any (its number).
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// The exit code a shell expects after `sig`: 128 + its number (SIGINT 130, SIGTERM 143).
pub fn exit_code(sig: i32) -> u8 {
    (128 + sig).clamp(0, 255) as u8
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        2 => "SIGINT",
        15 => "SIGTERM",
        _ => "a signal",
    }
}

/// Err(Interrupted) once a signal has arrived: called between steps of long work.
pub fn check() -> Result<()> {
    match received() {
        Some(sig) => Err(ModelError::Interrupted(signal_name(sig))),
        None => Ok(()),
    }
}

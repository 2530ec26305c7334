//! Ranks other than 0 stay quiet: metrics, logs, bars and notes come from rank 0 alone (every
//! rank computes the same losses, so N copies would say nothing new). A quiet rank's stdout
//! and stderr go to /dev/null, which silences every print without threading a flag through
//! each one, while its errors (`say_error`: failures, the watchdog, panics) still reach the
//! launcher's stderr through a saved copy of the original descriptor.

use std::io::Write;
use std::sync::atomic::{AtomicI32, Ordering};

/// The original stderr of a quiet rank (-1: not quiet; errors go to stderr as usual).
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

/// Sends this process's stdout and stderr to /dev/null, keeping a way to report errors.
pub fn silence_this_rank() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    use std::os::fd::AsRawFd;
    // SAFETY: plain descriptor calls on descriptors this process owns; the saved copy stays
    // open for the life of the process.
    unsafe {
        let saved = libc::dup(2);
        if saved < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::dup2(null.as_raw_fd(), 1) < 0 || libc::dup2(null.as_raw_fd(), 2) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        SAVED_STDERR.store(saved, Ordering::SeqCst);
    }
    Ok(())
}

/// Writes one line to the launcher's stderr, quiet rank or not.
pub fn say_error(line: &str) {
    let fd = SAVED_STDERR.load(Ordering::SeqCst);
    if fd < 0 {
        eprintln!("{line}");
        return;
    }
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    // SAFETY: `fd` is the saved stderr, open for the life of the process.
    let mut f =
        std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    let _ = f.write_all(&bytes);
}

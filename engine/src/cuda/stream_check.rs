//! The emulator's stream check (stub: the ordering model comes next). On the emulator every
//! operation has finished when it returns; this follows the order a real GPU would give the
//! same calls and reports memory used across streams without an event between.

use super::streams::Stream;
use crate::error::Result;

/// The vector clock `s` has reached: what an event recorded on it now waits for.
pub(crate) fn record(_s: Stream) -> [u64; 2] {
    [0, 0]
}

/// Later work on `s` is ordered after the work `clock` marks.
pub(crate) fn wait(_s: Stream, _clock: &[u64; 2]) -> Result<()> {
    Ok(())
}

/// The host waited for everything queued on `s`.
pub(crate) fn host_waits_for(_s: Stream) -> Result<()> {
    Ok(())
}

//! The emulator's stream check. On the emulator every operation has finished when it returns,
//! so two streams can never race there; this models the order a real GPU would give the same
//! calls and reports any use of memory across streams that order leaves unordered.
//!
//! The model: each stream has a vector clock; each operation on a stream takes the next tick of
//! its own entry. An event is a snapshot of the recording stream's clock; waiting for it merges
//! the snapshot into the waiting stream's clock; the host waiting for a stream (a
//! synchronize, a download) merges that stream's clock into every stream's, since all later
//! work is queued after it. Each emulator allocation (by base address and length) keeps its
//! last write (stream, tick) and its last read tick per stream. An operation on stream s that
//! reads an allocation last written on another stream w at tick t is a hazard unless s's clock
//! has seen t of w; a write (or a free) is also a hazard when another stream's read is unseen.
//! Allocation and freeing count as writes on the compute stream, as the stream-ordered pool
//! hands memory out and takes it back in compute order.
//!
//! What it proves: that the order the program declared with events and host waits is enough
//! for every buffer an operation touches, at allocation granularity (a use of any part of an
//! allocation counts as a use of all of it, so disjoint halves used by two streams still need
//! an event). What it does not prove: that NCCL or MPI themselves are right, anything about
//! timing, or accesses made outside the executor (the device addresses a collective is handed
//! are checked only where the collective goes through the executor's memory operations).
//! Devices share one checker and one pair of streams (all emulator memory is host memory of
//! one process), and the current stream is per device, not per thread, so threads that use
//! the comm stream at once would mix their orders (tests that do serialize).
//!
//! A free cannot return an error (it is a drop), so its report waits and is returned by the
//! next checked operation (a launch, copy, memset, upload, download, allocation, record, wait
//! or synchronize). The check is on by default and independent of `emu::set_checks` (those
//! are the kernels' own memory checks, kept in the C++ emulator); `set_stream_check` turns it
//! off and on.

use super::streams::Stream;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// One stream's vector clock: the tick of each stream's work it is ordered after.
pub(crate) type Clock = [u64; 2];

const STREAMS: [Stream; 2] = [Stream::Compute, Stream::Comm];

/// How an operation uses an allocation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    Read,
    Write,
    /// The drop of its buffer: a write on the compute stream, after which the pool may give
    /// the memory to the next allocation.
    Free,
}

/// A write: on which stream, at which of its ticks, and whether it was the allocation.
#[derive(Clone, Copy, Debug)]
struct LastWrite {
    stream: Stream,
    tick: u64,
    alloc: bool,
}

/// One live allocation.
#[derive(Debug)]
struct Tracked {
    bytes: usize,
    write: LastWrite,
    /// The tick of each stream's last read since `write` (0: none).
    reads: [u64; 2],
}

/// The clocks and allocations of every stream and the report of a free waiting to be returned.
#[derive(Debug)]
pub(crate) struct Checker {
    clocks: [Clock; 2],
    allocs: BTreeMap<u64, Tracked>,
    pending: Option<String>,
}

impl Checker {
    pub(crate) const fn new() -> Checker {
        Checker { clocks: [[0; 2]; 2], allocs: BTreeMap::new(), pending: None }
    }

    fn tick(&mut self, s: Stream) -> u64 {
        let c = &mut self.clocks[s as usize][s as usize];
        *c += 1;
        *c
    }

    /// The base address of the tracked allocation holding `addr`.
    fn find(&self, addr: u64) -> Option<u64> {
        let (&base, t) = self.allocs.range(..=addr).next_back()?;
        (addr < base + t.bytes as u64).then_some(base)
    }

    /// Why stream `s` may not make `access` of `t` at its clock now (None: it may). `what`
    /// names the memory for the message ("" for nothing to add); called only for a hazard, so
    /// a clean operation formats nothing.
    fn hazard(&self, s: Stream, access: Access, t: &Tracked, what: &dyn Fn() -> String) -> Option<String> {
        let seen = &self.clocks[s as usize];
        let verb = match access {
            Access::Read => "reads",
            Access::Write => "writes",
            Access::Free => "frees",
        };
        let mem = || {
            let what = what();
            let what = if what.is_empty() { what } else { format!("{what}, ") };
            format!("memory ({what}an allocation of {} bytes)", t.bytes)
        };
        let fix = |other: Stream, when: &str| {
            let then = if access == Access::Free { " before the drop" } else { "" };
            format!(
                "without waiting for it (record an event on {} {when}and wait for it on {}{then})",
                other.name(),
                s.name()
            )
        };
        let w = t.write;
        if w.stream != s && seen[w.stream as usize] < w.tick {
            let (how, when) = if w.alloc { ("allocated", "after allocating ") } else { ("last written", "") };
            return Some(format!(
                "the {} stream {verb} {} {how} on the {} stream at its op {} {}",
                s.name(),
                mem(),
                w.stream.name(),
                w.tick,
                fix(w.stream, when)
            ));
        }
        if access == Access::Read {
            return None;
        }
        let o = STREAMS.into_iter().find(|&o| o != s && t.reads[o as usize] > seen[o as usize])?;
        Some(format!(
            "the {} stream {verb} {} the {} stream read at its op {} {}",
            s.name(),
            mem(),
            o.name(),
            t.reads[o as usize],
            fix(o, if access == Access::Free { "after its last use " } else { "" })
        ))
    }

    /// One operation on `s` making `uses` (address, access): checks every use against the
    /// streams' order, then records them all at the operation's tick. On a hazard, the index
    /// of the use and the message (`name(i)` names use i, e.g. "argument 2 of k.cu:k").
    pub(crate) fn access(
        &mut self,
        s: Stream,
        uses: &[(u64, Access)],
        name: &dyn Fn(usize) -> String,
    ) -> std::result::Result<(), String> {
        let tick = self.tick(s);
        for (i, &(addr, access)) in uses.iter().enumerate() {
            let Some(t) = self.find(addr).map(|b| &self.allocs[&b]) else { continue };
            if let Some(msg) = self.hazard(s, access, t, &|| name(i)) {
                return Err(msg);
            }
        }
        // Reads first, so an allocation both read and written (in place) ends as written.
        for want in [Access::Read, Access::Write, Access::Free] {
            for &(addr, access) in uses.iter().filter(|u| u.1 == want) {
                let Some(base) = self.find(addr) else { continue };
                if access == Access::Free {
                    self.allocs.remove(&base);
                    continue;
                }
                let t = self.allocs.get_mut(&base).expect("found above");
                match access {
                    Access::Read => t.reads[s as usize] = tick,
                    _ => {
                        *t = Tracked {
                            bytes: t.bytes,
                            write: LastWrite { stream: s, tick, alloc: false },
                            reads: [0; 2],
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A fresh allocation of `bytes` at `base`: a write on the compute stream.
    pub(crate) fn allocated(&mut self, base: u64, bytes: usize) {
        let tick = self.tick(Stream::Compute);
        let write = LastWrite { stream: Stream::Compute, tick, alloc: true };
        self.allocs.insert(base, Tracked { bytes: bytes.max(1), write, reads: [0; 2] });
    }

    /// The drop of the allocation at `base`; a hazard is kept (the first one) for the next
    /// checked operation to return.
    pub(crate) fn freed(&mut self, base: u64) {
        if !self.allocs.contains_key(&base) {
            return;
        }
        if let Err(msg) = self.access(Stream::Compute, &[(base, Access::Free)], &|_| String::new()) {
            self.allocs.remove(&base);
            self.pending.get_or_insert(msg);
        }
    }

    /// The clock of `s`: what an event recorded on it now marks.
    pub(crate) fn record(&self, s: Stream) -> Clock {
        self.clocks[s as usize]
    }

    /// Later work on `s` is ordered after everything `clock` has seen.
    pub(crate) fn wait(&mut self, s: Stream, clock: &Clock) {
        for (mine, theirs) in self.clocks[s as usize].iter_mut().zip(clock) {
            *mine = (*mine).max(*theirs);
        }
    }

    /// The host waited for `s`: work queued on any stream afterwards is ordered after it.
    pub(crate) fn host_waits_for(&mut self, s: Stream) {
        let clock = self.clocks[s as usize];
        for t in STREAMS {
            self.wait(t, &clock);
        }
    }

    /// The report of an earlier free, as the error of the operation that returns it.
    fn take_pending(&mut self) -> Result<()> {
        match self.pending.take() {
            Some(msg) => {
                Err(Error::invalid("cuda free", format!("stream check (at a buffer's drop): {msg}")))
            }
            None => Ok(()),
        }
    }
}

static ON: AtomicBool = AtomicBool::new(true);
static CHECK: Mutex<Checker> = Mutex::new(Checker::new());

/// The process's checker, None while the check is off.
fn global() -> Option<MutexGuard<'static, Checker>> {
    // A panic elsewhere while holding it leaves the state as consistent as any operation's end.
    ON.load(Ordering::Relaxed).then(|| CHECK.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Turns the emulator's stream check on (the default) or off. Off forgets every allocation and
/// a waiting report; memory allocated while it was off stays unchecked after it is back on.
pub fn set_stream_check(on: bool) {
    let mut c = CHECK.lock().unwrap_or_else(PoisonError::into_inner);
    ON.store(on, Ordering::Relaxed);
    if !on {
        c.allocs.clear();
        c.pending = None;
    }
}

/// Checks and records operation `op` on stream `s` making `uses`; first returns a waiting
/// report of a free. `name(i)` names use i in the message ("" for nothing to add).
pub(crate) fn access(
    op: &'static str,
    s: Stream,
    uses: &[(u64, Access)],
    name: &dyn Fn(usize) -> String,
) -> Result<()> {
    let Some(mut c) = global() else { return Ok(()) };
    c.take_pending()?;
    c.access(s, uses, name).map_err(|msg| Error::invalid(op, format!("stream check: {msg}")))
}

/// A fresh emulator allocation of `bytes` at `base` (first returns a waiting report, and
/// then does not track it: the caller frees it).
pub(crate) fn allocated(base: u64, bytes: usize) -> Result<()> {
    let Some(mut c) = global() else { return Ok(()) };
    c.take_pending()?;
    c.allocated(base, bytes);
    Ok(())
}

/// The emulator allocation at `base` is being freed (its hazard, if any, waits).
pub(crate) fn freed(base: u64) {
    if let Some(mut c) = global() {
        c.freed(base);
    }
}

/// The vector clock `s` has reached: what an event recorded on it now waits for.
pub(crate) fn record(s: Stream) -> Result<Clock> {
    let Some(mut c) = global() else { return Ok([0; 2]) };
    let clock = c.record(s);
    c.take_pending().map(|()| clock)
}

/// Later work on `s` is ordered after the work `clock` marks.
pub(crate) fn wait(s: Stream, clock: &Clock) -> Result<()> {
    let Some(mut c) = global() else { return Ok(()) };
    c.wait(s, clock);
    c.take_pending()
}

/// The host waited for everything queued on `s`.
pub(crate) fn host_waits_for(s: Stream) -> Result<()> {
    let Some(mut c) = global() else { return Ok(()) };
    c.host_waits_for(s);
    c.take_pending()
}

/// The model alone, on a checker of its own (the executor's hooks are tested on real kernels in
/// engine/tests/cuda_streams.rs).
#[cfg(test)]
mod tests {
    use super::*;
    use Access::{Free, Read, Write as W};
    use Stream::{Comm, Compute};

    const NONE: &dyn Fn(usize) -> String = &|_| String::new();

    fn fresh() -> Checker {
        let mut c = Checker::new();
        c.allocated(1000, 100);
        c.allocated(2000, 8);
        c
    }

    #[test]
    fn an_event_orders_only_the_work_before_its_record() {
        let mut c = fresh();
        let early = c.record(Compute);
        c.access(Compute, &[(1050, W)], NONE).unwrap();
        c.wait(Comm, &early);
        let e = c.access(Comm, &[(1099, Read)], NONE).unwrap_err();
        assert!(e.contains("comm stream reads memory (an allocation of 100 bytes) last written on the compute stream at its op 3"), "{e}");
        let late = c.record(Compute);
        c.wait(Comm, &late);
        c.access(Comm, &[(1000, Read)], NONE).unwrap();
        // Past the end of every allocation: not tracked, not reported.
        c.access(Comm, &[(1100, W), (2008, W), (5, Read)], NONE).unwrap();
    }

    #[test]
    fn order_is_transitive_through_events_and_host_waits() {
        let mut c = fresh();
        let alloc = c.record(Compute);
        c.wait(Comm, &alloc);
        c.access(Comm, &[(2000, W)], NONE).unwrap();
        // compute -> comm -> compute: compute's own later read needs comm's event, not its own.
        assert!(c
            .access(Compute, &[(2000, Read)], NONE)
            .unwrap_err()
            .contains("last written on the comm stream"));
        c.host_waits_for(Comm);
        c.access(Compute, &[(2000, Read)], NONE).unwrap();
        c.access(Comm, &[(2000, Read)], NONE).unwrap();
        // Both streams read it: a compute write must wait for comm's read, and not for its own.
        let e = c.access(Compute, &[(2000, W)], &|i| format!("use {i}")).unwrap_err();
        assert!(
            e.contains("writes memory (use 0, an allocation of 8 bytes) the comm stream read at its op 2"),
            "{e}"
        );
        let ev = c.record(Comm);
        c.wait(Compute, &ev);
        c.access(Compute, &[(2000, W)], NONE).unwrap();
    }

    #[test]
    fn a_use_after_allocation_needs_the_compute_order_and_a_free_waits_for_every_stream() {
        let mut c = fresh();
        let e = c.access(Comm, &[(1000, W)], NONE).unwrap_err();
        assert!(e.contains("allocated on the compute stream at its op 1"), "{e}");
        c.host_waits_for(Compute);
        c.access(Comm, &[(1000, Read), (2000, Read)], NONE).unwrap();
        c.freed(1000);
        let e = c.take_pending().unwrap_err().to_string();
        assert!(
            e.contains("compute stream frees memory (an allocation of 100 bytes) the comm stream read"),
            "{e}"
        );
        c.take_pending().unwrap();
        assert!(c.find(1000).is_none(), "a freed allocation is forgotten even when reported");
        c.wait(Compute, &c.record(Comm));
        c.freed(2000);
        c.take_pending().unwrap();
        assert!(c.allocs.is_empty());
        // An in-place op on one stream (read and write of one allocation) is never a hazard.
        c.allocated(3000, 4);
        c.access(Compute, &[(3000, Read), (3000, W)], NONE).unwrap();
        c.access(Compute, &[(3000, Free)], NONE).unwrap();
    }
}

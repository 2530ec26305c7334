//! Two streams per device and the events that order work across them. Kernels, copies and
//! allocations run on the compute stream; gradient collectives run on the comm stream, so a
//! bucket's reduction overlaps the backward pass that keeps computing on the other one. Work on
//! one stream is ordered; across streams only an event orders it (`record_event` on one,
//! `wait_event` on the other), or the host waiting for a stream (`synchronize_stream`, or a
//! download, which waits for the stream it copied on).
//!
//! Which stream a memory operation or launch goes to is the device's current stream, the
//! compute stream unless inside `on_stream(Stream::Comm, ..)`. Allocation and freeing always
//! happen on the compute stream (the stream-ordered pool frees on the stream that allocated),
//! so a buffer the comm stream uses is allocated before the event the comm stream waits on,
//! and is dropped only after the compute stream waited for the comm stream's event.
//!
//! On the driver these are CUDA streams and events. On the emulator every operation has
//! finished when it returns, so nothing can actually race; instead the emulator's stream check
//! (stream_check.rs) follows the order the program *declared* with events and host waits (an
//! event there is the recording stream's vector clock) and reports, as the error of the
//! operation, any use of an allocation that a real GPU would not have ordered after the last
//! conflicting use on the other stream, including a drop the comm stream's work is not ordered
//! before. It proves that declared order is enough; it proves nothing about NCCL or timing.

use super::{launch_err, Driver, Exec, Gpu};
use crate::error::Result;
use cudarc::driver::{sys, CudaEvent, CudaStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// One of a device's two streams.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stream {
    Compute = 0,
    Comm = 1,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Compute => "compute",
            Stream::Comm => "comm",
        }
    }
}

/// The work queued on one stream up to a point: what another stream (or the host) waits for.
pub struct GpuEvent {
    pub(crate) inner: EventInner,
}

pub(crate) enum EventInner {
    Driver(CudaEvent),
    /// The recording stream's vector clock (stream_check.rs).
    Emulator([u64; 2]),
}

impl Driver {
    /// The CUDA stream behind `s` (the comm stream is created at first use).
    pub(crate) fn stream_of(&self, s: Stream) -> Result<&Arc<CudaStream>> {
        match s {
            Stream::Compute => Ok(&self.stream),
            Stream::Comm => {
                if let Some(c) = self.comm.get() {
                    return Ok(c);
                }
                let c = self.ctx.new_stream().map_err(launch_err("cuda comm stream"))?;
                Ok(self.comm.get_or_init(|| c))
            }
        }
    }
}

impl Gpu {
    /// The stream memory operations and launches go to now.
    pub fn current_stream(&self) -> Stream {
        match self.current.load(Ordering::Relaxed) {
            1 => Stream::Comm,
            _ => Stream::Compute,
        }
    }

    /// Runs `f` with `s` as the current stream, restoring the one before (also on panic).
    pub fn on_stream<R>(&self, s: Stream, f: impl FnOnce() -> R) -> R {
        struct Restore<'a>(&'a Gpu, u8);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.current.store(self.1, Ordering::Relaxed);
            }
        }
        let _restore = Restore(self, self.current.swap(s as u8, Ordering::Relaxed));
        f()
    }

    /// The current CUDA stream of the driver `d`.
    pub(crate) fn cu_current(&self, d: &Driver) -> Result<sys::CUstream> {
        Ok(d.stream_of(self.current_stream())?.cu_stream())
    }

    /// An event marking the work queued on `s` so far.
    pub fn record_event(&self, s: Stream) -> Result<GpuEvent> {
        let inner = match &self.exec {
            Exec::Driver(d) => EventInner::Driver(
                d.stream_of(s)?.record_event(None).map_err(launch_err("cuda record event"))?,
            ),
            Exec::Emulator => EventInner::Emulator(super::stream_check::record(s)?),
        };
        Ok(GpuEvent { inner })
    }

    /// Makes later work on `s` wait for `ev` (on the device: the host does not block).
    pub fn wait_event(&self, s: Stream, ev: &GpuEvent) -> Result<()> {
        match (&self.exec, &ev.inner) {
            (Exec::Driver(d), EventInner::Driver(e)) => {
                d.stream_of(s)?.wait(e).map_err(launch_err("cuda wait event"))
            }
            (Exec::Emulator, EventInner::Emulator(clock)) => super::stream_check::wait(s, clock),
            _ => Err(crate::Error::invalid("cuda wait event", "an event of another executor")),
        }
    }

    /// Blocks the host until everything queued on `s` has run.
    pub fn synchronize_stream(&self, s: Stream) -> Result<()> {
        match &self.exec {
            Exec::Driver(d) => d.stream_of(s)?.synchronize().map_err(launch_err("cuda synchronize")),
            Exec::Emulator => super::stream_check::host_waits_for(s),
        }
    }
}

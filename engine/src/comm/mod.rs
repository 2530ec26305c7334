//! Collectives between the ranks of a data-parallel job, behind one small interface: sum-reduce
//! and scatter, gather, all-reduce, broadcast, barrier. Two backends: MPI (the `mpi` crate, the
//! cargo feature `mpi`) for CPU tensors, and for CUDA tensors where no NCCL is wanted (the
//! emulator); NCCL (loaded at run time) for CUDA tensors on real GPUs. No transport of our own
//! carries tensors.
//!
//! `SOLAR_COMM=mpi` makes CUDA tensors on real GPUs go over MPI too; `SOLAR_NCCL_LIB` names the
//! NCCL library to load (nccl_lib.rs says where it is looked for otherwise).
//!
//! Sharding is per tensor: a tensor of `len` elements is cut into `size` contiguous pieces of
//! ceil(len/size) (the last ones shorter or empty), rank r owning piece r (`shard_range`).
//!
//! The process has at most one world (`init_world`, `world`), as MPI itself does; `finish` ends
//! it cleanly and `abort` ends the whole job. Every blocking collective runs under the
//! watchdog (watchdog.rs): a rank that dies, or a job being stopped, ends the waiting ranks
//! with a clear error within a bounded time instead of a hang.

mod buckets;
pub mod launch;
#[cfg(feature = "mpi")]
mod mpi;
mod nccl;
mod nccl_lib;
mod quiet;
mod rendezvous;
mod shard;
mod watchdog;

use crate::error::{Error, Result};
use crate::{Device, Tensor};
pub use buckets::{plan_buckets, Bucket, InFlight};
pub use launch::{Launcher, Place};
pub use quiet::{say_error, silence_this_rank};
pub use shard::{copy_flat, flat_piece};
use std::ops::Range;
use std::sync::OnceLock;
pub use watchdog::{set_stop_check, timeout_from_env};

/// One rank's end of the job's collectives.
pub enum Comm {
    #[cfg(feature = "mpi")]
    Mpi(mpi::MpiComm),
    Nccl(nccl::NcclComm),
}

/// Elements of a `len`-element tensor that `rank` of `size` owns.
pub fn shard_range(len: usize, rank: usize, size: usize) -> Range<usize> {
    let chunk = len.div_ceil(size.max(1));
    let start = (rank * chunk).min(len);
    start..(start + chunk).min(len)
}

static WORLD: OnceLock<Comm> = OnceLock::new();

/// The exit code every rank agreed to stop with (a signal's 128 + n), 0 while none.
static AGREED_STOP: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Records that all ranks agreed to stop after a signal (the trainer agrees on it each step):
/// nobody waits for anybody then, so the job ends cleanly with `code` instead of aborting.
pub fn agree_stop(code: i32) {
    AGREED_STOP.store(code, std::sync::atomic::Ordering::SeqCst);
}

/// The exit code of an agreed stop, if the ranks agreed on one.
pub fn agreed_stop() -> Option<i32> {
    match AGREED_STOP.load(std::sync::atomic::Ordering::SeqCst) {
        0 => None,
        code => Some(code),
    }
}

/// The world this process joined, if it was launched as one rank of several.
pub fn world() -> Option<&'static Comm> {
    WORLD.get()
}

/// Joins the job `place` describes, with tensors on `device`: NCCL for CUDA tensors on a real
/// GPU (`device` is this rank's, cuda:LOCAL_RANK), MPI for CPU tensors and for CUDA tensors on
/// the emulator or under `SOLAR_COMM=mpi` (staged through the host). Idempotent: a second call
/// returns the world of the first. The watchdog starts first: joining waits for every rank.
pub fn init_world(place: &Place, device: Device) -> Result<&'static Comm> {
    if let Some(w) = WORLD.get() {
        return Ok(w);
    }
    watchdog::start(place.rank, place.size);
    let comm = open(place, device)?;
    Ok(WORLD.get_or_init(|| comm))
}

fn open(place: &Place, device: Device) -> Result<Comm> {
    let choice = std::env::var("SOLAR_COMM").unwrap_or_default();
    if !matches!(choice.as_str(), "" | "nccl" | "mpi") {
        return Err(Error::invalid("distributed", format!("SOLAR_COMM={choice:?}: expected nccl or mpi")));
    }
    match device {
        Device::Cuda(n) if choice != "mpi" && !crate::cuda::emulator_selected() => {
            return nccl::NcclComm::init(place, n).map(Comm::Nccl)
        }
        _ => {}
    }
    if choice == "nccl" {
        return Err(Error::invalid(
            "distributed",
            format!("SOLAR_COMM=nccl needs a real GPU; this run is on {device}"),
        ));
    }
    #[cfg(feature = "mpi")]
    {
        if !place.launcher.starts_mpi() {
            return Err(Error::invalid(
                "distributed",
                format!(
                    "launched by {} with {} ranks on {device}: ranks on the CPU talk over MPI, so start them with mpirun or srun",
                    place.launcher.name(),
                    place.size
                ),
            ));
        }
        mpi::MpiComm::init(place).map(Comm::Mpi)
    }
    #[cfg(not(feature = "mpi"))]
    Err(Error::invalid(
        "distributed",
        format!(
            "launched by {} as rank {} of {}, but this solar-train was built without MPI; rebuild with `cargo build --release --features mpi` (needs Open MPI's development package)",
            place.launcher.name(),
            place.rank,
            place.size
        ),
    ))
}

/// Ends the world cleanly (MPI_Finalize); a no-op without one. Call once, on success, before
/// the process exits.
pub fn finish() {
    match WORLD.get() {
        #[cfg(feature = "mpi")]
        Some(Comm::Mpi(_)) => mpi::finalize(),
        Some(Comm::Nccl(n)) => n.finish(),
        None => {}
    }
}

/// Ends the whole job with `code` (MPI_Abort where MPI started it): the other ranks may be
/// waiting for this one in a collective and would never return.
pub fn abort(code: i32) -> ! {
    match WORLD.get() {
        #[cfg(feature = "mpi")]
        Some(Comm::Mpi(m)) => m.abort(code),
        Some(Comm::Nccl(n)) => n.abort(code),
        None => std::process::exit(code),
    }
}

impl Comm {
    pub fn rank(&self) -> usize {
        match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(ref m) => m.rank(),
            Comm::Nccl(ref n) => n.rank(),
        }
    }
    pub fn size(&self) -> usize {
        match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(ref m) => m.size(),
            Comm::Nccl(ref n) => n.size(),
        }
    }
    /// The backend, for logs: "MPI" or "NCCL".
    pub fn backend(&self) -> &'static str {
        match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(_) => "MPI",
            Comm::Nccl(_) => "NCCL",
        }
    }
    /// The backend with its library, for logs: "MPI", "NCCL 2.27.3 (libnccl.so.2)".
    pub fn describe(&self) -> String {
        match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(_) => "MPI".into(),
            Comm::Nccl(ref n) => format!("NCCL {}", n.describe()),
        }
    }

    /// The element-wise sum of `full` over all ranks, this rank's shard of it (`shard_range`).
    /// Over MPI the sum runs in rank order 0, 1, ..., the same for every call; NCCL adds in its
    /// own order (its ring or tree, fixed for a job's shape). Either way each element is summed
    /// once, by its owner, so all ranks see the same bits.
    pub fn reduce_scatter_sum(&self, full: &Tensor) -> Result<Tensor> {
        watchdog::during("reduce-scatter", || match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(ref m) => m.reduce_scatter_sum(full),
            Comm::Nccl(ref n) => n.reduce_scatter_sum(full),
        })
    }

    /// As `reduce_scatter_sum`, into `piece` (this rank's shard: its count, `full`'s dtype),
    /// on the device's current stream. On the comm stream NCCL returns at once (`settle`
    /// waits); NCCL takes f32 tensors of `size` equal pieces only, as reduction buckets are.
    pub fn reduce_scatter_into(&self, full: &Tensor, piece: &mut Tensor) -> Result<()> {
        let want = shard_range(full.elem_count(), self.rank(), self.size()).len();
        if piece.elem_count() != want || piece.dtype() != full.dtype() || piece.device() != full.device() {
            return Err(Error::invalid(
                "reduce_scatter",
                format!(
                    "a piece of {} {:?} elements on {} for a {:?} tensor of {} on {} (expected {want})",
                    piece.elem_count(),
                    piece.dtype(),
                    piece.device(),
                    full.dtype(),
                    full.elem_count(),
                    full.device()
                ),
            ));
        }
        watchdog::during("reduce-scatter", || match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(ref m) => m.reduce_scatter_into(full, piece),
            Comm::Nccl(ref n) => n.reduce_scatter_into(full, piece),
        })
    }

    /// Waits on the host until the collectives queued on the comm stream have run (NCCL; the
    /// MPI backend has finished each before it returns), under the watchdog: where a dead
    /// rank is noticed when gradient buckets reduce on the comm stream.
    pub fn settle(&self) -> Result<()> {
        watchdog::during("gradient reduction", || match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(_) => Ok(()),
            Comm::Nccl(ref n) => n.settle(),
        })
    }

    /// Every rank's shard (`shard_range` of `full`) into `full`, on every rank.
    pub fn all_gather_into(&self, shard: &Tensor, full: &mut Tensor) -> Result<()> {
        let want = shard_range(full.elem_count(), self.rank(), self.size()).len();
        if shard.elem_count() != want || shard.dtype() != full.dtype() {
            return Err(Error::invalid(
                "all_gather",
                format!(
                    "shard of {} {:?} elements for a {:?} tensor of {} on rank {} of {} (expected {want})",
                    shard.elem_count(),
                    shard.dtype(),
                    full.dtype(),
                    full.elem_count(),
                    self.rank(),
                    self.size()
                ),
            ));
        }
        watchdog::during("all-gather", || match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(ref m) => m.all_gather_into(shard, full),
            Comm::Nccl(ref n) => n.all_gather_into(shard, full),
        })
    }

    /// `t` becomes the sum of `t` over all ranks: a reduce-scatter then an all-gather, so it
    /// adds in the same order as the sharded path and ZeRO-0 equals ZeRO-1 bit for bit.
    pub fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        let shard = self.reduce_scatter_sum(t)?;
        self.all_gather_into(&shard, t)
    }

    /// `t` becomes root's `t` on every rank (same shape and dtype everywhere).
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        watchdog::during("broadcast", || match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(ref m) => m.broadcast(t, root),
            Comm::Nccl(ref n) => n.broadcast(t, root),
        })
    }

    /// Host numbers summed over ranks in rank order (losses, counts, squared norms).
    pub fn all_reduce_f64(&self, v: &mut [f64]) -> Result<()> {
        watchdog::during("all-reduce", || match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(ref m) => m.all_reduce_f64(v),
            Comm::Nccl(ref n) => n.all_reduce_f64(v),
        })
    }

    /// Root's bytes on every rank (small messages: a decision, a step number, an error).
    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        watchdog::during("broadcast", || match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(ref m) => m.broadcast_bytes(bytes, root),
            Comm::Nccl(ref n) => n.broadcast_bytes(bytes, root),
        })
    }

    pub fn barrier(&self) -> Result<()> {
        watchdog::during("barrier", || match *self {
            #[cfg(feature = "mpi")]
            Comm::Mpi(ref m) => m.barrier(),
            Comm::Nccl(ref n) => n.barrier(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::shard_range;

    #[test]
    fn shards_cover_the_tensor_once_in_order() {
        for len in [0usize, 1, 2, 7, 8, 9, 100] {
            for size in 1..=5 {
                let mut next = 0;
                for r in 0..size {
                    let s = shard_range(len, r, size);
                    assert_eq!(s.start, next.min(len), "len {len} size {size} rank {r}");
                    assert!(s.len() <= len.div_ceil(size));
                    next = s.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}

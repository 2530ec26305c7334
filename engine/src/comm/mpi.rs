//! The MPI backend (the `mpi` crate over the system's MPI library, Open MPI in CI). It carries
//! CPU tensors directly and CUDA tensors staged through the host (the emulator, or GPUs without
//! NCCL). MPI only moves bytes here (Alltoallv, Allgatherv, Bcast); the sums are ours, in rank
//! order, so every reduction adds the same numbers in the same order on every rank, whatever
//! algorithm the MPI library picks for the message size: runs are bitwise reproducible.
//!
//! f32 and f64 tensors sum in their own type; bf16 tensors (CUDA gradients) sum in f32 and
//! round once.

use super::{shard_range, Place};
use crate::cuda::{CudaData, CudaStorage, Gpu};
use crate::error::{Error, Result};
use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Tensor};
use half::bf16;
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;
use mpi::Threading;
use std::borrow::Cow;
use std::sync::Mutex;

/// MPI handles are raw pointers, so not `Send`. MPI was initialised with
/// MPI_THREAD_SERIALIZED and every call goes through the one mutex, which is what that level
/// asks for.
struct Handles {
    world: SimpleCommunicator,
    universe: Option<Universe>,
}
// SAFETY: see `Handles`: calls are serialized by `MpiComm::inner`'s mutex.
unsafe impl Send for Handles {}

pub struct MpiComm {
    inner: Mutex<Handles>,
    rank: usize,
    size: usize,
}

fn err(msg: String) -> Error {
    Error::invalid("mpi", msg)
}

fn counts(len: usize, size: usize) -> Result<(Vec<i32>, Vec<i32>)> {
    let c: Vec<i32> = (0..size)
        .map(|r| i32::try_from(shard_range(len, r, size).len()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| err(format!("a tensor of {len} elements has shards over MPI's 2^31 count limit")))?;
    let d: Vec<i32> = (0..size).map(|r| shard_range(len, r, size).start as i32).collect();
    Ok((c, d))
}

/// A tensor's elements on the host, in the type its sums are done in: borrowed from a CPU
/// tensor of that type (nothing copied to send it), owned otherwise.
enum Host<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
}

impl Host<'_> {
    /// The elements of `t`, and whether they were bf16 (summed in f32, rounded back once).
    fn of(t: &Tensor) -> Result<(Host<'_>, bool)> {
        match t.storage() {
            Storage::Cpu(CpuStorage::F32(v)) => Ok((Host::F32(Cow::Borrowed(v)), false)),
            Storage::Cpu(CpuStorage::F64(v)) => Ok((Host::F64(Cow::Borrowed(v)), false)),
            Storage::Cpu(CpuStorage::BF16(v)) => Ok((Host::F32(Cow::Owned(widen(v))), true)),
            Storage::Cpu(other) => Err(unsupported(other.dtype())),
            Storage::Cuda(c) => match c.download()? {
                CpuStorage::F32(v) => Ok((Host::F32(Cow::Owned(v)), false)),
                CpuStorage::BF16(v) => Ok((Host::F32(Cow::Owned(widen(&v))), true)),
                other => Err(unsupported(other.dtype())),
            },
        }
    }
}

fn widen(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn unsupported(got: DType) -> Error {
    Error::DType { op: "mpi", got, expected: "f32, f64 or bf16" }
}

/// Elements as CPU storage of the dtype they came as (`bf16_out`), without another copy.
fn cpu_of(host: Host<'_>, bf16_out: bool) -> CpuStorage {
    match (host, bf16_out) {
        (Host::F32(v), true) => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        (Host::F32(v), false) => CpuStorage::F32(v.into_owned()),
        (Host::F64(v), _) => CpuStorage::F64(v.into_owned()),
    }
}

/// Elements as storage on `device`: what a collective hands back as a new tensor.
fn storage_of(host: Host<'_>, bf16_out: bool, device: Device) -> Result<Storage> {
    let cpu = cpu_of(host, bf16_out);
    Ok(match device {
        Device::Cpu => Storage::Cpu(cpu),
        Device::Cuda(n) => Storage::Cuda(CudaStorage::upload(&Gpu::get(n)?, &cpu)?),
    })
}

/// Elements written over `dst`'s (same count and dtype): a CUDA tensor keeps its buffer and is
/// written on the device's current stream, so a collective on the comm stream stays there.
fn write_into(host: Host<'_>, bf16_out: bool, dst: &mut Tensor) -> Result<()> {
    let cpu = cpu_of(host, bf16_out);
    if cpu.dtype() != dst.dtype() || cpu.len() != dst.elem_count() {
        return Err(err(format!(
            "{} {:?} elements into a {:?} tensor of {}",
            cpu.len(),
            cpu.dtype(),
            dst.dtype(),
            dst.elem_count()
        )));
    }
    if !dst.is_cuda() {
        return dst.set_storage(cpu);
    }
    let c = dst.cuda_mut("mpi")?;
    let gpu = c.gpu.clone();
    match (&cpu, &mut c.data) {
        (CpuStorage::F32(v), CudaData::F32(b)) => gpu.upload_into(v, b),
        (CpuStorage::BF16(v), CudaData::BF16(b)) => gpu.upload_into(v, b),
        _ => Err(unsupported(cpu.dtype())),
    }
}

/// `parts` holds `size` runs of `n` elements, rank 0's first: their element-wise sum, added in
/// rank order, so every rank gets the same bits.
fn sum_in_rank_order<T: Copy + std::ops::AddAssign>(parts: &[T], n: usize, size: usize) -> Vec<T> {
    let mut acc = parts[..n].to_vec();
    for r in 1..size {
        for (a, &x) in acc.iter_mut().zip(&parts[r * n..(r + 1) * n]) {
            *a += x;
        }
    }
    acc
}

impl MpiComm {
    pub fn init(place: &Place) -> Result<MpiComm> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| err("MPI was already initialised".into()))?;
        if level < Threading::Serialized {
            return Err(err(format!(
                "the MPI library offers threading level {level:?}; Solar needs Serialized"
            )));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        if (rank, size) != (place.rank, place.size) {
            return Err(err(format!(
                "{} says rank {} of {}, but MPI's world has rank {rank} of {size}: was this MPI library the one that started the job?",
                place.launcher.name(),
                place.rank,
                place.size
            )));
        }
        Ok(MpiComm { inner: Mutex::new(Handles { world, universe: Some(universe) }), rank, size })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn size(&self) -> usize {
        self.size
    }

    fn with<T>(&self, f: impl FnOnce(&SimpleCommunicator) -> T) -> T {
        let h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&h.world)
    }

    pub fn abort(&self, code: i32) -> ! {
        // Not through the mutex: a collective may hold it, and abort must still get through.
        // SAFETY: MPI_Abort is callable at any time and does not return.
        unsafe { mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code) };
        std::process::exit(code)
    }

    pub fn reduce_scatter_sum(&self, full: &Tensor) -> Result<Tensor> {
        let (summed, bf, n) = self.summed_shard(full)?;
        Ok(Tensor::from_parts(storage_of(summed, bf, full.device())?, [n].into(), None))
    }

    /// As `reduce_scatter_sum`, into `piece` (this rank's shard's count and `full`'s dtype).
    pub fn reduce_scatter_into(&self, full: &Tensor, piece: &mut Tensor) -> Result<()> {
        let (summed, bf, _) = self.summed_shard(full)?;
        write_into(summed, bf, piece)
    }

    /// This rank's shard of the sum of `full` over the ranks, on the host; whether it was bf16;
    /// its length.
    fn summed_shard(&self, full: &Tensor) -> Result<(Host<'static>, bool, usize)> {
        let (host, bf) = Host::of(full)?;
        let (send_c, send_d) = counts(full.elem_count(), self.size)?;
        let n = shard_range(full.elem_count(), self.rank, self.size).len();
        let recv_c = vec![n as i32; self.size];
        let recv_d: Vec<i32> = (0..self.size).map(|r| (r * n) as i32).collect();
        let summed = match host {
            Host::F32(v) => {
                Host::F32(Cow::Owned(self.exchange_and_sum(&v, &send_c, &send_d, &recv_c, &recv_d, n)))
            }
            Host::F64(v) => {
                Host::F64(Cow::Owned(self.exchange_and_sum(&v, &send_c, &send_d, &recv_c, &recv_d, n)))
            }
        };
        Ok((summed, bf, n))
    }

    /// Alltoallv: rank r receives every rank's piece r; then adds them in rank order.
    fn exchange_and_sum<T: Equivalence + Copy + Default + std::ops::AddAssign>(
        &self,
        v: &[T],
        send_c: &[i32],
        send_d: &[i32],
        recv_c: &[i32],
        recv_d: &[i32],
        n: usize,
    ) -> Vec<T> {
        // Empty buffers are slices of one real element: Open MPI refuses an empty Vec's
        // dangling pointer even with a count of 0 (a shard is empty when a tensor has fewer
        // elements than there are ranks).
        let mut recv = vec![T::default(); (n * self.size).max(1)];
        let spare = [T::default()];
        let v = if v.is_empty() { &spare[..0] } else { v };
        self.with(|w| {
            let send = Partition::new(v, send_c, send_d);
            let mut into = PartitionMut::new(&mut recv[..n * self.size], recv_c, recv_d);
            w.all_to_all_varcount_into(&send, &mut into);
        });
        sum_in_rank_order(&recv, n, self.size)
    }

    pub fn all_gather_into(&self, shard: &Tensor, full: &mut Tensor) -> Result<()> {
        let (c, d) = counts(full.elem_count(), self.size)?;
        let (host, bf) = Host::of(shard)?;
        let gathered = match host {
            Host::F32(v) => Host::F32(Cow::Owned(self.gather(&v, full.elem_count(), &c, &d))),
            Host::F64(v) => Host::F64(Cow::Owned(self.gather(&v, full.elem_count(), &c, &d))),
        };
        write_into(gathered, bf, full)
    }

    fn gather<T: Equivalence + Copy + Default>(&self, v: &[T], len: usize, c: &[i32], d: &[i32]) -> Vec<T> {
        // As in exchange_and_sum: no empty Vec's dangling pointer reaches MPI.
        let mut out = vec![T::default(); len.max(1)];
        let spare = [T::default()];
        let v = if v.is_empty() { &spare[..0] } else { v };
        self.with(|w| w.all_gather_varcount_into(v, &mut PartitionMut::new(&mut out[..len], c, d)));
        out.truncate(len);
        out
    }

    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let (host, bf) = Host::of(t)?;
        let got = match host {
            Host::F32(v) => {
                let mut v = v.into_owned();
                self.with(|w| w.process_at_rank(root as i32).broadcast_into(&mut v[..]));
                Host::F32(Cow::Owned(v))
            }
            Host::F64(v) => {
                let mut v = v.into_owned();
                self.with(|w| w.process_at_rank(root as i32).broadcast_into(&mut v[..]));
                Host::F64(Cow::Owned(v))
            }
        };
        write_into(got, bf, t)
    }

    pub fn all_reduce_f64(&self, v: &mut [f64]) -> Result<()> {
        let mut all = vec![0.0f64; v.len() * self.size];
        self.with(|w| w.all_gather_into(&v[..], &mut all[..]));
        v.copy_from_slice(&sum_in_rank_order(&all, v.len(), self.size));
        Ok(())
    }

    pub fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        self.with(|w| {
            let p = w.process_at_rank(root as i32);
            let mut len = bytes.len() as u64;
            p.broadcast_into(&mut len);
            bytes.resize(len as usize, 0);
            // An empty Vec's dangling pointer is MPI_ERR_ARG to Open MPI's Bcast (fatal).
            if len > 0 {
                p.broadcast_into(&mut bytes[..]);
            }
        });
        Ok(())
    }

    pub fn barrier(&self) -> Result<()> {
        self.with(|w| w.barrier());
        Ok(())
    }
}

impl MpiComm {
    /// MPI_Finalize, once (the universe is taken), when the world ends cleanly.
    pub(super) fn finalize(&self) {
        let mut h = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        drop(h.universe.take());
    }
}

/// MPI_Finalize of the world's MPI, once, when the world ends cleanly.
pub(super) fn finalize() {
    if let Some(super::Comm::Mpi(m)) = super::WORLD.get() {
        m.finalize();
    }
}

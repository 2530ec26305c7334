//! The NCCL backend: collectives between CUDA tensors on real GPUs, one GPU per rank (the
//! caller picks cuda:LOCAL_RANK). Every NCCL call runs on the device's current stream
//! (cuda/streams.rs). On the compute stream, where Solar's kernels run, it is ordered after
//! the kernels that made its input and before those that read its output without any event,
//! and each collective then waits for the stream (polling NCCL's asynchronous error as it
//! waits) before it returns: the watchdog only sees time a rank spends blocked on the host,
//! so a dead peer is caught in the collective it hangs, not in some later download. On the
//! comm stream (gradient buckets, overlapped with the backward) a collective returns at once;
//! the caller orders it with events and waits for it with `settle`, under the watchdog.
//!
//! NCCL's ReduceScatter and AllGather move equal pieces, `chunk = ceil(len / size)` elements a
//! rank; Solar's shards (`shard_range`) are those pieces cut at `len`, so a tensor whose length
//! `size` does not divide is padded to `chunk * size` in a scratch buffer (zeros, which add
//! nothing) and each rank's piece is cut back to its shard. Sums run in f32: bf16 tensors are
//! widened before the reduce-scatter and rounded once after, as the MPI backend does. The
//! order NCCL adds the ranks in is its own (ring or tree), fixed for a given job shape, not
//! rank order. Moves without arithmetic (gather, broadcast) go as bytes, any dtype.
//!
//! Host numbers, bytes and the barrier go through small device buffers (nccl/host.rs).

use super::nccl_lib::{nccl, Nccl};
use super::{rendezvous, shard_range, Place};
use crate::cuda::{elementwise, launch_err, CudaData, CudaStorage, DeviceBuffer, Driver, Gpu, Stream};
use crate::error::{Error, Result};
use crate::{DType, Shape, Storage, Tensor};
use cudarc::driver::{result as cu, sys};
use cudarc::nccl::sys::{ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclUniqueId};
use std::ffi::{c_char, c_int, c_void};
use std::sync::{Arc, Mutex, MutexGuard};

mod host;

/// The communicator. A raw pointer, so not `Send`; every use holds `NcclComm::comm`'s lock,
/// since NCCL does not allow concurrent calls on one communicator.
struct Handle(ncclComm_t);
// SAFETY: see `Handle`.
unsafe impl Send for Handle {}

pub struct NcclComm {
    lib: &'static Nccl,
    comm: Mutex<Handle>,
    gpu: Arc<Gpu>,
    rank: usize,
    size: usize,
    /// The MPI world that carried the unique id (mpirun, srun): kept for abort and finalize.
    #[cfg(feature = "mpi")]
    mpi: Option<super::mpi::MpiComm>,
}

fn err(msg: String) -> Error {
    Error::invalid("nccl", msg)
}

fn check(lib: &Nccl, what: &str, code: c_int) -> Result<()> {
    lib.check(what, code).map_err(err)
}

/// (device address, bytes) of a tensor's data.
fn raw(c: &CudaStorage) -> (u64, usize) {
    match &c.data {
        CudaData::F32(b) => (b.addr(), b.len() * 4),
        CudaData::BF16(b) => (b.addr(), b.len() * 2),
        CudaData::I32(b) => (b.addr(), b.len() * 4),
        CudaData::U32(b) => (b.addr(), b.len() * 4),
    }
}

const BYTES: ncclDataType_t = ncclDataType_t::ncclUint8;
const F32: ncclDataType_t = ncclDataType_t::ncclFloat32;
const SUM: ncclRedOp_t = ncclRedOp_t::ncclSum;

impl NcclComm {
    /// Joins the job `place` describes on GPU `ordinal` (a real GPU: the emulator cannot run
    /// NCCL). NCCL is loaded first, so its absence is the error a machine without it gets.
    pub fn init(place: &Place, ordinal: usize) -> Result<NcclComm> {
        let lib = nccl().map_err(err)?;
        let gpu = Gpu::get(ordinal)?;
        let d = gpu.driver("nccl", "run NCCL (SOLAR_COMM=mpi carries CUDA tensors over MPI)")?;
        let ex = rendezvous::exchange(place, || {
            let mut id = ncclUniqueId { internal: [0; 128] };
            // SAFETY: writes the 128-byte id.
            check(lib, "ncclGetUniqueId", unsafe { (lib.get_unique_id)(&mut id) })?;
            Ok(id.internal.map(|c| c as u8))
        })?;
        // NCCL takes the device of the context current on this thread.
        d.ctx.bind_to_thread().map_err(launch_err("nccl"))?;
        let mut comm: ncclComm_t = std::ptr::null_mut();
        let id = ncclUniqueId { internal: ex.id.map(|b| b as c_char) };
        // SAFETY: out-pointer to one communicator; rank < size (the launcher's place checks it).
        // Waits for every rank (under the watchdog: a rank that never comes ends this one).
        super::watchdog::during("collective", || {
            let r = unsafe { (lib.comm_init_rank)(&mut comm, place.size as c_int, id, place.rank as c_int) };
            let what =
                format!("ncclCommInitRank (rank {} of {} on cuda:{})", place.rank, place.size, gpu.ordinal);
            check(lib, &what, r)
        })?;
        Ok(NcclComm {
            lib,
            comm: Mutex::new(Handle(comm)),
            gpu,
            rank: place.rank,
            size: place.size,
            #[cfg(feature = "mpi")]
            mpi: ex.mpi,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }
    pub fn size(&self) -> usize {
        self.size
    }
    /// NCCL's version and where it was loaded from, for logs: "2.27.3 (libnccl.so.2)".
    pub fn describe(&self) -> String {
        format!("{} ({})", self.lib.version_string(), self.lib.from)
    }

    fn driver(&self) -> Result<&Driver> {
        self.gpu.driver("nccl", "run NCCL")
    }

    fn bind(&self) -> Result<()> {
        self.driver()?.ctx.bind_to_thread().map_err(launch_err("nccl"))
    }

    /// The communicator, locked, with this GPU's context current on the thread.
    fn lock(&self) -> Result<MutexGuard<'_, Handle>> {
        self.bind()?;
        Ok(self.comm.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The current stream (cuda/streams.rs), which every NCCL call and helper copy runs on.
    fn stream(&self) -> Result<*mut c_void> {
        Ok(self.gpu.cu_current(self.driver()?)? as *mut c_void)
    }

    /// `t`'s device memory, which must be on this rank's GPU.
    fn on_gpu<'a>(&self, op: &str, s: &'a Storage) -> Result<&'a CudaStorage> {
        match s {
            Storage::Cuda(c) if c.gpu.ordinal == self.gpu.ordinal => Ok(c),
            other => Err(err(format!(
                "{op}: NCCL carries tensors on this rank's GPU cuda:{}; got one on {} (SOLAR_COMM=mpi carries any tensor)",
                self.gpu.ordinal,
                other.device()
            ))),
        }
    }

    /// Waits until the current stream has run everything queued so far, or NCCL reports an
    /// error; on the comm stream it returns at once (`settle` waits for that stream).
    fn wait(&self, comm: &Handle, what: &str) -> Result<()> {
        if self.gpu.current_stream() == Stream::Comm {
            return Ok(());
        }
        // SAFETY: a live communicator, and the stream its work was queued on.
        unsafe { self.lib.wait(comm.0, self.stream()? as sys::CUstream, what) }.map_err(err)
    }

    /// Waits on the host until everything queued on the comm stream has run, or NCCL reports
    /// an error.
    pub fn settle(&self) -> Result<()> {
        let comm = self.lock()?;
        let stream = self.gpu.on_stream(Stream::Comm, || self.stream())?;
        // SAFETY: a live communicator, and the stream its collectives were queued on.
        unsafe { self.lib.wait(comm.0, stream as sys::CUstream, "gradient reduction") }.map_err(err)
    }

    /// The sum over ranks of `full` (f32, `size` equal pieces), this rank's piece into `piece`:
    /// one ncclReduceScatter, no padding and no cast (a reduction bucket is laid out for it).
    pub fn reduce_scatter_into(&self, full: &Tensor, piece: &mut Tensor) -> Result<()> {
        let op = "reduce_scatter";
        let (src, bytes) = raw(self.on_gpu(op, full.storage())?);
        self.on_gpu(op, piece.storage())?;
        let (dst, piece_bytes) = raw(piece.cuda_mut(op)?);
        let chunk = piece_bytes / 4;
        if full.dtype() != DType::F32 || piece.dtype() != DType::F32 || bytes != piece_bytes * self.size {
            return Err(err(format!(
                "{op}: a {:?} tensor of {} elements into a {:?} piece of {chunk} on {} ranks (f32, size x piece)",
                full.dtype(),
                full.elem_count(),
                piece.dtype(),
                self.size
            )));
        }
        if chunk == 0 {
            return Ok(());
        }
        // SAFETY: src holds chunk * size f32 and dst chunk, both alive until the caller's
        // event (comm stream) or the wait (compute stream) says the collective ran.
        unsafe { self.reduce_scatter_raw(src, dst, chunk) }
    }

    /// One ncclReduceScatter of f32 sums, `chunk` elements a rank, on the current stream.
    ///
    /// # Safety
    /// `send` holds chunk * size f32 and `recv` chunk, alive until the collective has run.
    unsafe fn reduce_scatter_raw(&self, send: u64, recv: u64, chunk: usize) -> Result<()> {
        let comm = self.lock()?;
        // SAFETY: per the contract; a live communicator.
        let r = unsafe {
            (self.lib.reduce_scatter)(
                send as *const c_void,
                recv as *mut c_void,
                chunk,
                F32,
                SUM,
                comm.0,
                self.stream()?,
            )
        };
        check(self.lib, "ncclReduceScatter", r)?;
        self.wait(&comm, "ncclReduceScatter")
    }

    /// `bytes` bytes from `src` to `dst` on the stream.
    fn copy(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: callers pass live device ranges of at least `bytes` bytes.
        unsafe { cu::memcpy_dtod_async(dst, src, bytes, self.stream()? as sys::CUstream) }
            .map_err(launch_err("nccl copy"))
    }

    fn zero(&self, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        // SAFETY: as `copy`.
        unsafe { cu::memset_d8_async(dst, 0, bytes, self.stream()? as sys::CUstream) }
            .map_err(launch_err("nccl zero"))
    }

    pub fn reduce_scatter_sum(&self, full: &Tensor) -> Result<Tensor> {
        let op = "reduce_scatter";
        let c = self.on_gpu(op, full.storage())?;
        let (len, size) = (c.len(), self.size);
        let chunk = len.div_ceil(size);
        let n = shard_range(len, self.rank, size).len();
        let widened;
        let src: &DeviceBuffer<f32> = match &c.data {
            CudaData::F32(b) => b,
            CudaData::BF16(_) => {
                widened = elementwise::cast(c, DType::F32)?;
                widened.f32(op)?
            }
            _ => {
                return Err(Error::DType {
                    op: "nccl reduce_scatter",
                    got: c.dtype(),
                    expected: "f32 or bf16",
                })
            }
        };
        let out = self.gpu.alloc::<f32>(chunk)?;
        if chunk > 0 {
            let padded;
            let send = if chunk * size == len {
                src.addr()
            } else {
                padded = self.gpu.alloc::<f32>(chunk * size)?;
                self.copy(padded.addr(), src.addr(), len * 4)?;
                self.zero(padded.addr() + (len * 4) as u64, (chunk * size - len) * 4)?;
                padded.addr()
            };
            // SAFETY: send holds chunk * size f32, out holds chunk; both live until the wait.
            // (On the comm stream there is no wait and `padded` is freed on return: this
            // tensor-by-tensor collective is for the compute stream; buckets use
            // reduce_scatter_into.)
            unsafe { self.reduce_scatter_raw(send, out.addr(), chunk) }?;
        }
        let shard = if n == chunk {
            out
        } else {
            let s = self.gpu.alloc::<f32>(n)?;
            self.copy(s.addr(), out.addr(), n * 4)?;
            s
        };
        let mut st = CudaStorage::new(self.gpu.clone(), CudaData::F32(shard));
        if c.dtype() == DType::BF16 {
            st = elementwise::cast(&st, DType::BF16)?;
        }
        Ok(Tensor::from_parts(Storage::Cuda(st), Shape::new(&[n]), None))
    }

    pub fn all_gather_into(&self, shard: &Tensor, full: &mut Tensor) -> Result<()> {
        let op = "all_gather";
        let (len, size) = (full.elem_count(), self.size);
        let chunk = len.div_ceil(size);
        let (s_addr, s_bytes) = raw(self.on_gpu(op, shard.storage())?);
        self.on_gpu(op, full.storage())?;
        if chunk == 0 {
            return Ok(());
        }
        let es = full.dtype().size_in_bytes();
        let (d_addr, d_bytes) = raw(full.cuda_mut(op)?);
        let comm = self.lock()?;
        let (padded_send, padded_recv);
        let send = if s_bytes == chunk * es {
            s_addr
        } else {
            padded_send = self.gpu.alloc::<u8>(chunk * es)?;
            self.copy(padded_send.addr(), s_addr, s_bytes)?;
            self.zero(padded_send.addr() + s_bytes as u64, chunk * es - s_bytes)?;
            padded_send.addr()
        };
        let recv = if chunk * size == len {
            d_addr
        } else {
            padded_recv = self.gpu.alloc::<u8>(chunk * size * es)?;
            padded_recv.addr()
        };
        // SAFETY: send holds chunk elements, recv chunk * size; both live until the wait.
        let r = unsafe {
            (self.lib.all_gather)(
                send as *const c_void,
                recv as *mut c_void,
                chunk * es,
                BYTES,
                comm.0,
                self.stream()?,
            )
        };
        check(self.lib, "ncclAllGather", r)?;
        if recv != d_addr {
            self.copy(d_addr, recv, d_bytes)?;
        }
        self.wait(&comm, "ncclAllGather")
    }

    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        self.on_gpu("broadcast", t.storage())?;
        let (addr, bytes) = raw(t.cuda_mut("broadcast")?);
        self.broadcast_raw(addr, bytes, root)
    }

    /// Root's `bytes` bytes at `addr` to `addr` on every rank.
    fn broadcast_raw(&self, addr: u64, bytes: usize, root: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        let comm = self.lock()?;
        // SAFETY: addr holds `bytes` bytes on every rank (same shape everywhere), in place.
        let r = unsafe {
            (self.lib.broadcast)(
                addr as *const c_void,
                addr as *mut c_void,
                bytes,
                BYTES,
                root as c_int,
                comm.0,
                self.stream()?,
            )
        };
        check(self.lib, "ncclBroadcast", r)?;
        self.wait(&comm, "ncclBroadcast")
    }

    /// Ends the communicator (and the MPI world that carried its id) on success.
    pub fn finish(&self) {
        let mut comm = self.comm.lock().unwrap_or_else(|p| p.into_inner());
        if !comm.0.is_null() && self.bind().is_ok() {
            // SAFETY: the live communicator, destroyed once (the handle is cleared).
            unsafe { (self.lib.comm_destroy)(comm.0) };
            comm.0 = std::ptr::null_mut();
        }
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            m.finalize();
        }
    }

    /// Ends the whole job: through MPI where MPI started it, else this process alone (the
    /// launcher stops the others, or their watchdogs do).
    pub fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if let Some(m) = &self.mpi {
            m.abort(code);
        }
        // Frees the communicator's resources without waiting for the peers (who see this
        // rank's connections close). Skipped if a collective holds the communicator.
        if let Ok(comm) = self.comm.try_lock() {
            if !comm.0.is_null() {
                // SAFETY: the live communicator; the process exits right after.
                unsafe { (self.lib.comm_abort)(comm.0) };
            }
        }
        std::process::exit(code)
    }
}

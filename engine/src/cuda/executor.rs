//! The two executors under the CUDA backend, one interface (methods of `Gpu`): device memory
//! (alloc from a pool, free on drop, copies host<->device and device<->device, memset), the
//! streams (streams.rs: compute and comm, events between them) and launch (kernel, grid,
//! block, dynamic shared memory, typed arguments). Operations go to the current stream;
//! allocation always to the compute stream.
//! - `Exec::Driver`: cudarc on a real GPU. Kernels NVRTC-compiled per device (kernel_load.rs,
//!   cubin cache on disk), memory from the stream-ordered pool (cuMemAllocAsync) on the compute
//!   stream.
//! - `Exec::Emulator`: the same kernel sources compiled as host C++ (solar_kernels::emu), run
//!   on the CPU with bounds, race and uninitialised-read checks. Memory is host memory the
//!   emulator tracks; a launch runs to completion before it returns, so the stream is already
//!   synchronized and copies are plain memcpy. Every emulator operation first goes through the
//!   stream check (stream_check.rs), which reports a use of memory across the two streams that
//!   a GPU would not have ordered: a launch reads each const pointer argument's allocation and
//!   writes each mutable one's, a memset or upload writes, a download reads (then the host has
//!   waited for its stream), a copy reads its source and writes its destination, an allocation
//!   and a free are writes on the compute stream. That proves the declared order (events, host
//!   waits) covers every buffer an operation touches, at allocation granularity; it says
//!   nothing about NCCL or timing, which only a GPU shows.

use super::kernel_load::{emu_kernel, LoadedKernel};
use super::launch::{Arg, Kernel, LaunchConfig, Value};
use super::memory::{Allocation, DeviceBuffer, DeviceElem, DeviceSlice, DeviceSliceMut};
use super::stream_check::{self, Access};
use super::streams::Stream;
use super::{launch_err, Gpu};
use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaModule, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Which executor runs a `Gpu`'s memory operations and launches.
pub enum Exec {
    Driver(Driver),
    Emulator,
}

/// The driver executor's state: a context, its one stream and the loaded kernel modules.
pub struct Driver {
    pub ctx: Arc<CudaContext>,
    /// The compute stream: kernels, copies, allocation and freeing.
    pub stream: Arc<CudaStream>,
    /// The comm stream (streams.rs), created at first use.
    pub(crate) comm: std::sync::OnceLock<Arc<CudaStream>>,
    pub(crate) modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Each loaded kernel and the dynamic shared memory it has been granted so far, so the
    /// opt-in attribute is set once per kernel and size, not at every launch.
    pub(crate) functions: Mutex<HashMap<(&'static str, &'static str), LoadedKernel>>,
}

impl Driver {
    pub(crate) fn new(ctx: Arc<CudaContext>, stream: Arc<CudaStream>) -> Driver {
        Driver {
            ctx,
            stream,
            comm: std::sync::OnceLock::new(),
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
        }
    }
}

impl Gpu {
    /// The driver executor, or an error of `op` saying the emulator cannot do what it asks.
    pub fn driver(&self, op: &'static str, what: &str) -> Result<&Driver> {
        match &self.exec {
            Exec::Driver(d) => Ok(d),
            Exec::Emulator => Err(Error::invalid(op, format!("the emulator does not {what}"))),
        }
    }

    /// Whether this executor can run `k`: always on the driver (it compiles at first use);
    /// on the emulator when its build has the kernel (it may leave a module out, e.g. wgmma).
    pub fn has_kernel(&self, k: &Kernel) -> bool {
        match self.exec {
            Exec::Driver(_) => true,
            Exec::Emulator => emu_kernel(k).is_some(),
        }
    }

    /// Whether this device runs on the emulator.
    pub fn is_emulator(&self) -> bool {
        matches!(self.exec, Exec::Emulator)
    }

    /// Launches `k` over `cfg` with `args`, after checking them against its declaration (an
    /// error names the kernel and parameter). On the driver it is queued on the stream; on the
    /// emulator it has run (with its checks) when this returns. `op` names the error.
    ///
    /// # Safety
    /// Every pointer argument must address memory holding what the kernel reads and writes at
    /// this launch shape (the launchers check the lengths; each says why the access is in
    /// bounds), and no buffer the kernel writes may be read by the host until the stream syncs.
    pub unsafe fn launch(
        &self,
        op: &'static str,
        k: &'static Kernel,
        cfg: LaunchConfig,
        args: &[Arg],
    ) -> Result<()> {
        k.check(args)?;
        let smem = cfg.shared_mem_bytes as usize;
        self.smem_fits(op, k, smem)?;
        let mut slots: Vec<u64> = args.iter().map(Arg::slot).collect();
        let mut ptrs: Vec<*mut c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut c_void).collect();
        match &self.exec {
            Exec::Driver(d) => {
                let f = self.function(d, op, k, smem)?;
                d.ctx.bind_to_thread().map_err(launch_err(op))?;
                // SAFETY: `ptrs` holds one pointer per declared parameter (checked above), each
                // to an 8-byte slot holding the value; the caller upholds the memory contract.
                unsafe {
                    cudarc::driver::result::launch_kernel(
                        f.cu_function(),
                        cfg.grid_dim,
                        cfg.block_dim,
                        cfg.shared_mem_bytes,
                        self.cu_current(d)?,
                        &mut ptrs,
                    )
                }
                .map_err(launch_err(op))
            }
            Exec::Emulator => {
                let ek = emu_kernel(k).ok_or_else(|| {
                    Error::invalid(op, format!("the emulator has no kernel {} in {}.cu", k.name, k.module))
                })?;
                // Each pointer argument, with its index for the message.
                let (idx, uses): (Vec<usize>, Vec<(u64, Access)>) = args
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| match a.value {
                        Value::Ptr { addr, mutable, .. } => {
                            Some((i, (addr, if mutable { Access::Write } else { Access::Read })))
                        }
                        _ => None,
                    })
                    .unzip();
                let name = |j: usize| format!("argument {} of {}.cu:{}", idx[j], k.module, k.name);
                stream_check::access(op, self.current_stream(), &uses, &name)?;
                let (g, b) = (cfg.grid_dim, cfg.block_dim);
                // SAFETY: as above; emulator device pointers are addresses from emu::alloc.
                unsafe { solar_kernels::emu::launch(&ek, [g.0, g.1, g.2], [b.0, b.1, b.2], smem, &ptrs) }
                    .map_err(|e| Error::invalid(op, format!("{}.cu:{}: {e}", k.module, k.name)))
            }
        }
    }

    /// Blocks of `k` with `block` threads and `smem` bytes of dynamic shared memory that fit on
    /// one SM at once (at least 1). The emulator has no occupancy: it says 1, so launch shapes
    /// derived from this are deterministic there.
    pub fn occupancy(&self, op: &'static str, k: &'static Kernel, block: u32, smem: usize) -> Result<usize> {
        match &self.exec {
            Exec::Driver(d) => {
                self.smem_fits(op, k, smem)?;
                let f = self.function(d, op, k, smem)?;
                Ok(f.occupancy_max_active_blocks_per_multiprocessor(block, smem, None).unwrap_or(1).max(1)
                    as usize)
            }
            Exec::Emulator => Ok(1),
        }
    }

    /// `bytes` of device memory (at least one byte: the driver refuses 0-byte allocations, so
    /// an empty buffer owns a hidden element), on the compute stream; 0xFF-filled there when
    /// `poison` (part of the allocation to the stream check, so its reports say "allocated").
    fn alloc_raw(&self, bytes: usize, poison: bool) -> Result<(u64, Allocation)> {
        let bytes = bytes.max(1);
        match &self.exec {
            Exec::Driver(d) => {
                // SAFETY: uninitialized bytes; every caller writes what it reads.
                let s = unsafe { d.stream.alloc::<u8>(bytes) }.map_err(launch_err("cuda alloc"))?;
                // Event tracking is off (one stream), so the sync guard records nothing.
                let addr = s.device_ptr(&d.stream).0;
                if poison {
                    self.memset_raw("cuda poison", Stream::Compute, addr, 0xff, bytes)?;
                }
                Ok((addr, Allocation::Driver(s)))
            }
            Exec::Emulator => {
                let addr = solar_kernels::emu::alloc(bytes);
                if poison {
                    // SAFETY: `bytes` bytes of emulator memory, just allocated.
                    unsafe { std::ptr::write_bytes(addr, 0xff, bytes) };
                }
                if let Err(e) = stream_check::allocated(addr as u64, bytes) {
                    // SAFETY: just allocated, never handed out.
                    unsafe { solar_kernels::emu::free(addr) };
                    return Err(e);
                }
                Ok((addr as u64, Allocation::Emulator))
            }
        }
    }

    /// Sets `bytes` bytes at `addr` to `byte`, in the order of stream `on`.
    fn memset_raw(&self, op: &'static str, on: Stream, addr: u64, byte: u8, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        match &self.exec {
            Exec::Driver(d) => {
                d.ctx.bind_to_thread().map_err(launch_err(op))?;
                // SAFETY: addr addresses `bytes` bytes of a live allocation on this stream.
                unsafe {
                    cudarc::driver::result::memset_d8_async(addr, byte, bytes, d.stream_of(on)?.cu_stream())
                }
                .map_err(launch_err(op))
            }
            Exec::Emulator => {
                stream_check::access(op, on, &[(addr, Access::Write)], &|_| String::new())?;
                // SAFETY: as above; emulator memory is host memory.
                unsafe { std::ptr::write_bytes(addr as *mut u8, byte, bytes) };
                Ok(())
            }
        }
    }

    /// `n` uninitialized elements (callers write every one before reading); 0xFF-filled (NaN in
    /// f32 and bf16) when poisoning is on, so an element a kernel forgot to write shows.
    pub fn alloc<T: DeviceElem>(&self, n: usize) -> Result<DeviceBuffer<T>> {
        let bytes = n * std::mem::size_of::<T>();
        let (addr, alloc) = self.alloc_raw(bytes, self.poison.load(Ordering::Relaxed))?;
        Ok(DeviceBuffer::from_raw(addr, n, alloc))
    }

    /// `n` zero elements.
    pub fn zeros<T: DeviceElem>(&self, n: usize) -> Result<DeviceBuffer<T>> {
        let mut buf = self.alloc::<T>(n)?;
        self.memset_zeros(&mut buf)?;
        Ok(buf)
    }

    /// Zeroes `dst` (in the current stream's order).
    pub fn memset_zeros<T: DeviceElem>(&self, dst: &mut impl DeviceSliceMut<T>) -> Result<()> {
        self.memset_raw(
            "cuda memset",
            self.current_stream(),
            dst.addr(),
            0,
            dst.len() * std::mem::size_of::<T>(),
        )
    }

    /// A device copy of `host`, written on the compute stream (where it was allocated), whatever
    /// the current stream.
    pub fn upload<T: DeviceElem>(&self, host: &[T]) -> Result<DeviceBuffer<T>> {
        let (addr, alloc) = self.alloc_raw(std::mem::size_of_val(host), false)?;
        let mut buf = DeviceBuffer::from_raw(addr, host.len(), alloc);
        self.on_stream(Stream::Compute, || self.upload_into(host, &mut buf))?;
        Ok(buf)
    }

    /// Copies `host` into the start of `dst`, in the current stream's order.
    pub fn upload_into<T: DeviceElem>(&self, host: &[T], dst: &mut impl DeviceSliceMut<T>) -> Result<()> {
        let op = "cuda upload";
        if host.len() > dst.len() {
            return Err(Error::invalid(op, format!("{} elements into {}", host.len(), dst.len())));
        }
        if host.is_empty() {
            return Ok(());
        }
        match &self.exec {
            Exec::Driver(d) => {
                d.ctx.bind_to_thread().map_err(launch_err(op))?;
                // SAFETY: `dst` holds at least host.len() elements; the copy from pageable host
                // memory is staged before the call returns, so `host` may go after it.
                unsafe { cudarc::driver::result::memcpy_htod_async(dst.addr(), host, self.cu_current(d)?) }
                    .map_err(launch_err(op))?;
            }
            Exec::Emulator => {
                let nothing = |_: usize| String::new();
                stream_check::access(op, self.current_stream(), &[(dst.addr(), Access::Write)], &nothing)?;
                // SAFETY: `dst` holds at least host.len() elements of emulator memory.
                unsafe { std::ptr::copy_nonoverlapping(host.as_ptr(), dst.addr() as *mut T, host.len()) }
            }
        }
        Ok(())
    }

    /// The elements of `dev` on the host (copied on the current stream, which the host waits for).
    pub fn download<T: DeviceElem>(&self, dev: &impl DeviceSlice<T>) -> Result<Vec<T>> {
        let op = "cuda download";
        let mut host = vec![T::default(); dev.len()];
        if host.is_empty() {
            return Ok(host);
        }
        match &self.exec {
            Exec::Driver(d) => {
                d.ctx.bind_to_thread().map_err(launch_err(op))?;
                // SAFETY: `dev` holds host.len() elements; the stream is synchronized before
                // `host` is read or dropped.
                unsafe {
                    cudarc::driver::result::memcpy_dtoh_async(&mut host, dev.addr(), self.cu_current(d)?)
                }
                .map_err(launch_err(op))?;
                d.stream_of(self.current_stream())?.synchronize().map_err(launch_err(op))?;
            }
            Exec::Emulator => {
                let on = self.current_stream();
                stream_check::access(op, on, &[(dev.addr(), Access::Read)], &|_| String::new())?;
                // SAFETY: `dev` holds host.len() elements of emulator memory.
                unsafe {
                    std::ptr::copy_nonoverlapping(dev.addr() as *const T, host.as_mut_ptr(), host.len())
                };
                stream_check::host_waits_for(on)?;
            }
        }
        Ok(host)
    }

    /// Copies `src` into the start of `dst` (device to device, in the current stream's order).
    pub fn copy<T: DeviceElem>(
        &self,
        src: &impl DeviceSlice<T>,
        dst: &mut impl DeviceSliceMut<T>,
    ) -> Result<()> {
        let op = "cuda copy";
        if src.len() > dst.len() {
            return Err(Error::invalid(op, format!("{} elements into {}", src.len(), dst.len())));
        }
        let bytes = src.len() * std::mem::size_of::<T>();
        if bytes == 0 {
            return Ok(());
        }
        match &self.exec {
            Exec::Driver(d) => {
                d.ctx.bind_to_thread().map_err(launch_err(op))?;
                // SAFETY: both address at least `bytes` bytes of live allocations of this context.
                unsafe {
                    cudarc::driver::result::memcpy_dtod_async(
                        dst.addr(),
                        src.addr(),
                        bytes,
                        self.cu_current(d)?,
                    )
                }
                .map_err(launch_err(op))
            }
            Exec::Emulator => {
                let uses = [(src.addr(), Access::Read), (dst.addr(), Access::Write)];
                let name = |i: usize| if i == 0 { "the source" } else { "the destination" }.to_string();
                stream_check::access(op, self.current_stream(), &uses, &name)?;
                // SAFETY: as above; `copy` (memmove) since views of one buffer may overlap.
                unsafe { std::ptr::copy(src.addr() as *const u8, dst.addr() as *mut u8, bytes) };
                Ok(())
            }
        }
    }

    /// A device copy of `src`.
    pub fn try_clone<T: DeviceElem>(&self, src: &impl DeviceSlice<T>) -> Result<DeviceBuffer<T>> {
        let (addr, alloc) = self.alloc_raw(src.len() * std::mem::size_of::<T>(), false)?;
        let mut dst = DeviceBuffer::from_raw(addr, src.len(), alloc);
        self.copy(src, &mut dst)?;
        Ok(dst)
    }

    /// Waits for everything queued on both streams (on the emulator, where launches and copies
    /// finish before they return, only the stream check takes note, and returns a report of a
    /// drop it kept since).
    pub fn synchronize(&self) -> Result<()> {
        if let Exec::Driver(d) = &self.exec {
            if d.comm.get().is_none() {
                return self.synchronize_stream(Stream::Compute);
            }
        }
        self.synchronize_stream(Stream::Comm)?;
        self.synchronize_stream(Stream::Compute)
    }
}

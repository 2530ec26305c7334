//! The CUDA backend: one `Gpu` per device ordinal (a context, one stream, the loaded kernel
//! modules) and the launchers of every op family, one file each beside this one. The driver is
//! loaded at run time (cudarc's dynamic loading), so a machine without CUDA builds and runs the
//! CPU backend; asking for a GPU there is an error that says what is missing, never a panic.
//!
//! Memory: cudarc allocates with cuMemAllocAsync on our stream, i.e. from the device's
//! stream-ordered pool; `Gpu::get` raises the pool's release threshold so freed blocks stay
//! cached for the next step instead of going back to the driver (no cudaMalloc per op).

pub mod attention;
pub mod elementwise;
pub mod embedding;
pub mod loss;
pub mod matmul;
pub mod matmul_sm90;
pub mod norm;
pub mod optim;
pub mod reduce;
mod storage;
pub mod timing;

pub use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};
pub use storage::{CudaData, CudaStorage};

use crate::error::{Error, Result};
use crate::Device;
use cudarc::driver::{sys, CudaContext, CudaModule, DriverError, ValidAsZeroBits};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A loaded kernel and the dynamic shared memory a block it has been granted so far.
type LoadedKernel = (CudaFunction, usize);

/// One CUDA device as Solar uses it.
pub struct Gpu {
    pub ordinal: usize,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// The real architecture kernels are compiled for, e.g. "sm_90".
    pub arch: String,
    pub name: String,
    /// Streaming multiprocessors (grid sizing of grid-stride kernels).
    pub sm_count: usize,
    /// The most dynamic shared memory a block may opt in to (read once at open).
    pub smem_optin: usize,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// Each loaded kernel and the dynamic shared memory it has been granted so far, so the
    /// opt-in attribute is set once per kernel and size, not at every launch.
    functions: Mutex<HashMap<(&'static str, String), LoadedKernel>>,
    /// Tests set this: every fresh allocation is filled with 0xFF bytes (NaN in f32 and bf16),
    /// so an element a kernel forgot to write shows up in the comparison.
    poison: AtomicBool,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu(cuda:{} {} {})", self.ordinal, self.name, self.arch)
    }
}

fn unavailable(ordinal: usize, msg: impl Into<String>) -> Error {
    Error::DeviceUnavailable { op: "cuda", device: Device::Cuda(ordinal), msg: msg.into() }
}

/// Maps a driver error of `op` to the engine's error (use as `.map_err(launch_err("rmsnorm"))`).
pub fn launch_err(op: &'static str) -> impl Fn(DriverError) -> Error {
    move |e| Error::invalid(op, format!("CUDA: {e:?}"))
}

fn set_max_dynamic_smem(op: &'static str, f: &CudaFunction, bytes: usize) -> Result<()> {
    f.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
        .map_err(launch_err(op))
}

/// A grid-stride launch over `n` elements: 256 threads a block, at most 8 blocks per SM's
/// worth (enough to fill an H100 and keep each thread busy with several elements).
pub fn grid_1d(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 132 * 8) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

impl Gpu {
    fn open(ordinal: usize) -> Result<Gpu> {
        // SAFETY: only probes whether the driver library can be loaded.
        if !unsafe { sys::is_culib_present() } {
            return Err(unavailable(
                ordinal,
                "the CUDA driver (libcuda.so) was not found; is an NVIDIA driver installed?",
            ));
        }
        let count = cudarc::driver::result::device::get_count()
            .map_err(|e| unavailable(ordinal, format!("the CUDA driver did not initialize: {e:?}")))?;
        if ordinal as i32 >= count {
            return Err(unavailable(ordinal, format!("no CUDA device {ordinal} ({count} found)")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| unavailable(ordinal, format!("{e:?}")))?;
        // SAFETY: Solar uses one stream per device, so cross-stream event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream().map_err(|e| unavailable(ordinal, format!("{e:?}")))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| unavailable(ordinal, format!("{e:?}")))?;
        if major < 8 {
            return Err(unavailable(ordinal, format!("Solar's kernels need sm_80 or newer (bf16 tensor cores); this device is sm_{major}{minor}")));
        }
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .unwrap_or(100) as usize;
        let smem_optin = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(|e| unavailable(ordinal, format!("{e:?}")))? as usize;
        keep_pool_cached(&ctx);
        // NVRTC is needed at the first kernel; check it now so the error comes up front.
        solar_kernels::Toolkit::get().map_err(|e| unavailable(ordinal, e.to_string()))?;
        Ok(Gpu {
            ordinal,
            ctx,
            stream,
            arch: format!("sm_{major}{minor}"),
            name,
            sm_count,
            smem_optin,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            poison: AtomicBool::new(std::env::var("SOLAR_CUDA_POISON").as_deref() == Ok("1")),
        })
    }

    /// The device `ordinal`, opened once per process; the error says what is missing (driver,
    /// device, NVRTC).
    pub fn get(ordinal: usize) -> Result<Arc<Gpu>> {
        // Per ordinal, the opened device or why it could not be opened (said once, not retried).
        type Opened = std::result::Result<Arc<Gpu>, String>;
        static GPUS: OnceLock<Mutex<HashMap<usize, Opened>>> = OnceLock::new();
        let mut map = GPUS.get_or_init(Default::default).lock().unwrap();
        let entry = map.entry(ordinal).or_insert_with(|| {
            Gpu::open(ordinal).map(Arc::new).map_err(|e| match e {
                Error::DeviceUnavailable { msg, .. } => msg,
                other => other.to_string(),
            })
        });
        entry.clone().map_err(|msg| Error::DeviceUnavailable {
            op: "cuda",
            device: Device::Cuda(ordinal),
            msg,
        })
    }

    /// The kernel `kernel` of the source `module` (kernels/cu/MODULE.cu), compiled for this
    /// device at first use (or read from the on-disk cubin cache) and loaded once.
    pub fn func(&self, module: &'static str, kernel: &str) -> Result<CudaFunction> {
        self.func_smem("cuda", module, kernel, 0)
    }

    /// `func`, with the kernel allowed `bytes` of dynamic shared memory a block: above the
    /// default 48 KiB a kernel must opt in (done once per kernel and size, not per launch), and
    /// past the device's opt-in limit it is an error of `op` naming both sizes.
    pub fn func_smem(
        &self,
        op: &'static str,
        module: &'static str,
        kernel: &str,
        bytes: usize,
    ) -> Result<CudaFunction> {
        if bytes > self.smem_optin {
            return Err(Error::invalid(
                op,
                format!(
                    "{kernel} needs {bytes} bytes of shared memory a block; this device has {}",
                    self.smem_optin
                ),
            ));
        }
        let key = (module, kernel.to_string());
        let mut fns = self.functions.lock().unwrap();
        if let Some((f, granted)) = fns.get_mut(&key) {
            if bytes > 48 * 1024 && bytes > *granted {
                set_max_dynamic_smem(op, f, bytes)?;
                *granted = bytes;
            }
            return Ok(f.clone());
        }
        // Loading compiles at first use; the function lock is dropped meanwhile so a long
        // NVRTC compile does not hold up launches of kernels already loaded.
        drop(fns);
        let m = self.module(module)?;
        let f = m.load_function(kernel).map_err(|e| {
            Error::invalid("cuda", format!("kernel {kernel} not found in {module}.cu: {e:?}"))
        })?;
        let granted = if bytes > 48 * 1024 {
            set_max_dynamic_smem(op, &f, bytes)?;
            bytes
        } else {
            0
        };
        let mut fns = self.functions.lock().unwrap();
        let entry = fns.entry(key).or_insert((f, 0));
        entry.1 = entry.1.max(granted);
        Ok(entry.0.clone())
    }

    fn module(&self, module: &'static str) -> Result<Arc<CudaModule>> {
        let mut mods = self.modules.lock().unwrap();
        if let Some(m) = mods.get(module) {
            return Ok(m.clone());
        }
        let src = solar_kernels::sources::source(module)
            .ok_or_else(|| Error::invalid("cuda", format!("no kernel source {module}.cu")))?;
        let (cubin, _) =
            solar_kernels::cubin_for(src, &self.arch).map_err(|e| Error::invalid("cuda", e.to_string()))?;
        let m = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(|e| Error::invalid("cuda", format!("loading {module}.cu for {}: {e:?}", self.arch)))?;
        mods.insert(module, m.clone());
        Ok(m)
    }

    /// `n` uninitialized elements (callers write every one before reading); NaN-filled when
    /// poisoning is on.
    pub fn alloc<T: DeviceRepr>(&self, n: usize) -> Result<CudaSlice<T>> {
        if n == 0 {
            return self.empty();
        }
        // SAFETY: the memory is uninitialized; every caller's kernel writes all n elements.
        let s = unsafe { self.stream.alloc::<T>(n) }.map_err(launch_err("cuda alloc"))?;
        if self.poison.load(Ordering::Relaxed) && n > 0 {
            use cudarc::driver::DevicePtr;
            let (ptr, _sync) = s.device_ptr(&self.stream);
            // SAFETY: ptr addresses n * size_of::<T>() bytes owned by `s`, on our stream.
            unsafe {
                cudarc::driver::result::memset_d8_async(
                    ptr,
                    0xff,
                    n * std::mem::size_of::<T>(),
                    self.stream.cu_stream(),
                )
            }
            .map_err(launch_err("cuda poison"))?;
        }
        Ok(s)
    }

    /// Turns NaN-poisoning of fresh allocations on or off (GPU tests).
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        if n == 0 {
            return self.empty();
        }
        self.stream.alloc_zeros::<T>(n).map_err(launch_err("cuda alloc"))
    }
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        if host.is_empty() {
            return self.empty();
        }
        self.stream.clone_htod(host).map_err(launch_err("cuda upload"))
    }
    pub fn download<T: DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        if dev.is_empty() {
            return Ok(Vec::new());
        }
        self.stream.clone_dtoh(dev).map_err(launch_err("cuda download"))
    }

    /// A buffer of length 0 (empty tensors, empty batches). The driver refuses to allocate 0
    /// bytes (cuMemAlloc documents CUDA_ERROR_INVALID_VALUE), so it owns one element it never
    /// exposes; dropping it frees that element like any buffer.
    fn empty<T: DeviceRepr>(&self) -> Result<CudaSlice<T>> {
        // SAFETY: one uninitialized element, never read: the slice made from it has length 0.
        let one = unsafe { self.stream.alloc::<T>(1) }.map_err(launch_err("cuda alloc"))?;
        let ptr = one.leak();
        // SAFETY: `ptr` is the live allocation just leaked from this stream; the new slice takes
        // over freeing it.
        Ok(unsafe { self.stream.upgrade_device_ptr::<T>(ptr, 0) })
    }
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(launch_err("cuda synchronize"))
    }
}

/// Raises the default memory pool's release threshold so memory freed by one step is reused by
/// the next without returning to the OS driver. Best effort: a failure only costs speed.
fn keep_pool_cached(ctx: &CudaContext) {
    // SAFETY: plain driver calls on the current context's device with valid out-pointers.
    unsafe {
        let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
        if sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) == sys::CUresult::CUDA_SUCCESS {
            let mut threshold: u64 = u64::MAX;
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut threshold as *mut u64 as *mut std::ffi::c_void,
            );
        }
    }
}

/// The GPU for GPU tests (with poisoned allocations), or None after printing why they skip (no driver, no device, no NVRTC).
pub fn test_gpu() -> Option<Arc<Gpu>> {
    match Gpu::get(0) {
        Ok(g) => {
            g.set_poison(true);
            Some(g)
        }
        Err(e) => {
            eprintln!("skipping GPU test: {e}");
            None
        }
    }
}

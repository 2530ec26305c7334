//! The CUDA backend: one `Gpu` per device ordinal and the launchers of every kernel family, one
//! file each beside this one, named after its kernels/cu/<family>.cu. A `Gpu` runs on one of
//! two executors (executor.rs): the driver (cudarc on a real GPU) or the emulator (the same
//! kernel sources as host C++, on the CPU, with memory checks). Which one is process-wide:
//! `use_emulator()` or `SOLAR_CUDA_EXECUTOR=emu` make `Gpu::get` open the emulator; either way
//! the device is `Device::Cuda(ordinal)`, so everything above the launchers is the same code.
//!
//! The driver is loaded at run time (cudarc's dynamic loading), so a machine without CUDA
//! builds and runs the CPU backend; asking for a GPU there is an error that says what is
//! missing, never a panic. Driver memory comes from cuMemAllocAsync on our stream, i.e. from
//! the device's stream-ordered pool; `Gpu::get` raises the pool's release threshold so freed
//! blocks stay cached for the next step instead of going back to the driver.

pub mod adamw;
pub mod attention;
pub mod cross_entropy;
pub mod elementwise;
pub mod embedding;
pub mod executor;
mod kernel_load;
pub mod launch;
pub mod linear_cross_entropy;
pub mod matmul;
pub mod matmul_sm90;
pub mod memory;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
mod storage;
mod stream_check;
pub mod streams;
pub mod swiglu;
pub mod timing;

pub use executor::{Driver, Exec};
pub use launch::{grid_1d, Arg, Elem, Kernel, LaunchConfig, Param};
pub use memory::{DeviceBuffer, DeviceElem, DeviceSlice, DeviceSliceMut, DeviceView, DeviceViewMut};
pub use storage::{CudaData, CudaStorage};
pub use stream_check::set_stream_check;
pub use streams::{GpuEvent, Stream};

use crate::error::{Error, Result};
use crate::Device;
use cudarc::driver::{sys, CudaContext, DriverError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One CUDA device as Solar uses it, on either executor.
pub struct Gpu {
    pub ordinal: usize,
    /// The real architecture kernels are compiled for, e.g. "sm_90" ("sm_90" on the emulator,
    /// so launch shapes are those of an H100).
    pub arch: String,
    pub name: String,
    /// Streaming multiprocessors (grid sizing of grid-stride kernels).
    pub sm_count: usize,
    /// The most dynamic shared memory a block may opt in to (read once at open).
    pub smem_optin: usize,
    /// The executor running memory operations and launches.
    pub exec: Exec,
    /// Tests set this: every fresh allocation is filled with 0xFF bytes (NaN in f32 and bf16),
    /// so an element a kernel forgot to write shows up in the comparison.
    poison: AtomicBool,
    /// The stream memory operations and launches go to (streams.rs): 0 compute, 1 comm.
    current: AtomicU8,
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

/// Which executor `Gpu::get` opens: unset (read SOLAR_CUDA_EXECUTOR at first use), driver,
/// emulator.
static EXECUTOR: AtomicU8 = AtomicU8::new(0);
const DRIVER: u8 = 1;
const EMULATOR: u8 = 2;

/// Makes every later `Gpu::get` open the emulator (the CLI's `--device emu`). Devices opened
/// before stay as they are.
pub fn use_emulator() {
    EXECUTOR.store(EMULATOR, Ordering::Relaxed);
}

/// Whether `Gpu::get` opens the emulator: `use_emulator()` was called, or
/// SOLAR_CUDA_EXECUTOR=emu.
pub fn emulator_selected() -> bool {
    match EXECUTOR.load(Ordering::Relaxed) {
        0 => {
            let emu = std::env::var("SOLAR_CUDA_EXECUTOR").is_ok_and(|v| v == "emu" || v == "emulator");
            // A concurrent use_emulator() wins over the environment.
            let _ = EXECUTOR.compare_exchange(
                0,
                if emu { EMULATOR } else { DRIVER },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            EXECUTOR.load(Ordering::Relaxed) == EMULATOR
        }
        v => v == EMULATOR,
    }
}

/// Every kernel the engine declares, family by family (engine/tests/kernel_decls.rs holds
/// them to the kernels' C++ signatures).
pub fn all_kernels() -> Vec<&'static Kernel> {
    [
        adamw::KERNELS,
        attention::KERNELS,
        cross_entropy::KERNELS,
        elementwise::KERNELS,
        embedding::KERNELS,
        matmul::KERNELS,
        matmul_sm90::KERNELS,
        reduce::KERNELS,
        rmsnorm::KERNELS,
        rope::KERNELS,
        swiglu::KERNELS,
    ]
    .into_iter()
    .flatten()
    .copied()
    .collect()
}

impl Gpu {
    /// The driver executor on device `ordinal`.
    fn open_driver(ordinal: usize) -> Result<Gpu> {
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
        // SAFETY: Solar orders its two streams itself with events (streams.rs), so cudarc's
        // automatic cross-stream tracking is not needed.
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
            arch: format!("sm_{major}{minor}"),
            name,
            sm_count,
            smem_optin,
            exec: Exec::Driver(Driver::new(ctx, stream)),
            poison: AtomicBool::new(std::env::var("SOLAR_CUDA_POISON").as_deref() == Ok("1")),
            current: AtomicU8::new(0),
        })
    }

    /// The emulator as device `ordinal`: shaped like an H100 (sm_90, 132 SMs, 227 KiB of
    /// opt-in shared memory), so launchers pick the same launch shapes as on one.
    fn open_emulator(ordinal: usize) -> Gpu {
        Gpu {
            ordinal,
            arch: "sm_90".into(),
            name: "emulator".into(),
            sm_count: 132,
            smem_optin: 227 * 1024,
            exec: Exec::Emulator,
            poison: AtomicBool::new(std::env::var("SOLAR_CUDA_POISON").as_deref() == Ok("1")),
            current: AtomicU8::new(0),
        }
    }

    /// The device `ordinal` on the selected executor (`emulator_selected`), opened once per
    /// process; the error says what is missing (driver, device, NVRTC).
    pub fn get(ordinal: usize) -> Result<Arc<Gpu>> {
        if emulator_selected() {
            return Ok(Gpu::get_emulator(ordinal));
        }
        // Per ordinal, the opened device or why it could not be opened (said once, not retried).
        type Opened = std::result::Result<Arc<Gpu>, String>;
        static GPUS: OnceLock<Mutex<HashMap<usize, Opened>>> = OnceLock::new();
        let mut map = GPUS.get_or_init(Default::default).lock().unwrap();
        let entry = map.entry(ordinal).or_insert_with(|| {
            Gpu::open_driver(ordinal).map(Arc::new).map_err(|e| match e {
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

    /// The emulator as device `ordinal`, whatever the selection (one per ordinal per process).
    pub fn get_emulator(ordinal: usize) -> Arc<Gpu> {
        static EMUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
        let mut map = EMUS.get_or_init(Default::default).lock().unwrap();
        map.entry(ordinal).or_insert_with(|| Arc::new(Gpu::open_emulator(ordinal))).clone()
    }

    /// Turns NaN-poisoning of fresh allocations on or off (GPU tests).
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
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

/// The device for GPU tests, with poisoned allocations: a real GPU when one opens, else the
/// emulator (which then becomes the process's selection, so `Device::Cuda(0)` in the test is
/// the same device); SOLAR_CUDA_EXECUTOR=driver keeps to a GPU, None after printing why the
/// test skips (no driver, no device, no NVRTC). Prints which it runs on.
pub fn test_gpu() -> Option<Arc<Gpu>> {
    let g = match Gpu::get(0) {
        Ok(g) => g,
        Err(e) if std::env::var("SOLAR_CUDA_EXECUTOR").is_ok_and(|v| v == "driver") => {
            eprintln!("skipping GPU test: {e}");
            return None;
        }
        Err(e) if solar_kernels::emu::kernels().is_empty() => {
            eprintln!("skipping GPU test: {e}; and this build's emulator has no kernels");
            return None;
        }
        Err(e) => {
            use_emulator();
            eprintln!("GPU test on the emulator ({e})");
            Gpu::get_emulator(0)
        }
    };
    if !g.is_emulator() {
        eprintln!("GPU test on cuda:{} ({} {})", g.ordinal, g.name, g.arch);
    }
    g.set_poison(true);
    Some(g)
}

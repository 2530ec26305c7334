//! The emulator executor's interface: the same `kernels/cu/*.cu` sources, compiled as host C++
//! by build.rs against `kernels/emu/emu.h` (threads as fibers, warps, shared memory, barriers and
//! the PTX the kernels use), run on the CPU with bounds, race and uninitialised-read checks.
//! It proves logic, never speed.
//!
//! "Device" memory here is host memory the emulator allocates and tracks (`alloc`/`free`), so a
//! device pointer is an ordinary address held as u64, exactly like a `CUdeviceptr`: the engine
//! passes kernel arguments the same way to both executors (an array of pointers to each value,
//! as cuLaunchKernel takes them). Launches run one at a time in the process (a global lock), so
//! results are deterministic.

use std::ffi::{c_char, c_void, CStr};

/// One `extern "C"` kernel compiled into the emulator.
#[derive(Clone, Copy)]
pub struct EmuKernel {
    /// Its source module (kernels/cu/MODULE.cu) and name.
    pub module: &'static str,
    pub name: &'static str,
    /// Its parameter types in order as the C++ compiler sees them, in Rust spelling, comma
    /// separated: `*const bf16, *mut f32, i64, i32, f32` (element types f32, bf16, i32, u32,
    /// i64, u64, u8; scalars the same names).
    pub signature: &'static str,
    entry: *const ffi::Entry,
}

// SAFETY: `entry` points at a static table entry in the linked C++ code, never written.
unsafe impl Send for EmuKernel {}
unsafe impl Sync for EmuKernel {}

impl std::fmt::Debug for EmuKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.cu:{}({})", self.module, self.name, self.signature)
    }
}

/// What the checks found in one launch (or why it could not run), as the report text: each
/// finding names the kernel, block, thread, address and allocation.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct EmuReport(pub String);

mod ffi {
    use std::ffi::{c_char, c_void};
    #[repr(C)]
    pub struct Entry {
        pub module: *const c_char,
        pub name: *const c_char,
        pub signature: *const c_char,
        pub invoke: *const c_void,
    }
    extern "C" {
        pub fn solar_emu_kernels(count: *mut usize) -> *const Entry;
        pub fn solar_emu_launch(
            entry: *const Entry,
            grid: *const u32,
            block: *const u32,
            dynamic_smem: usize,
            args: *const *mut c_void,
            report: *mut *mut c_char,
        ) -> i32;
        pub fn solar_emu_free_report(report: *mut c_char);
        pub fn solar_emu_alloc(bytes: usize) -> *mut c_void;
        pub fn solar_emu_free(ptr: *mut c_void);
        pub fn solar_emu_set_checks(on: i32);
    }
}

fn text(p: *const c_char) -> &'static str {
    // SAFETY: the table's strings are static NUL-terminated literals in the C++ code.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("?")
}

/// Every kernel the emulator has, in source order.
pub fn kernels() -> Vec<EmuKernel> {
    let mut n = 0usize;
    // SAFETY: returns a pointer to a static array of `n` entries.
    let table = unsafe { ffi::solar_emu_kernels(&mut n) };
    (0..n)
        .map(|i| {
            // SAFETY: i < n.
            let e = unsafe { &*table.add(i) };
            EmuKernel { module: text(e.module), name: text(e.name), signature: text(e.signature), entry: e }
        })
        .collect()
}

/// The kernel `name` of `module`, if the emulator has it.
pub fn kernel(module: &str, name: &str) -> Option<EmuKernel> {
    kernels().into_iter().find(|k| k.module == module && k.name == name)
}

/// Runs `kernel` over `grid` x `block` threads with `dynamic_smem` bytes of dynamic shared memory;
/// `args[i]` points at the value of parameter i (device pointers are u64 addresses from
/// `alloc`). Returns when every block has finished; a finding of the checks is an error whose
/// text is the report.
///
/// # Safety
/// `args` must hold one pointer per kernel parameter, each pointing at a value of that
/// parameter's type, and every device pointer must address memory from `alloc` that the kernel
/// may access as its launcher promises (the checks report what they catch, not everything).
pub unsafe fn launch(
    kernel: &EmuKernel,
    grid: [u32; 3],
    block: [u32; 3],
    dynamic_smem: usize,
    args: &[*mut c_void],
) -> Result<(), EmuReport> {
    let params = if kernel.signature.is_empty() { 0 } else { kernel.signature.split(", ").count() };
    if args.len() != params {
        return Err(EmuReport(format!(
            "emulator: {} takes {params} arguments ({}), the launch passed {}",
            kernel.name,
            kernel.signature,
            args.len()
        )));
    }
    let mut report: *mut c_char = std::ptr::null_mut();
    // SAFETY: the caller upholds the argument contract; grid and block are 3 u32 each.
    let rc = unsafe {
        ffi::solar_emu_launch(
            kernel.entry,
            grid.as_ptr(),
            block.as_ptr(),
            dynamic_smem,
            args.as_ptr(),
            &mut report,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let msg = if report.is_null() {
        format!("emulator: {} failed (code {rc})", kernel.name)
    } else {
        // SAFETY: a NUL-terminated string the C++ side allocated; freed right after copying.
        let s = unsafe { CStr::from_ptr(report) }.to_string_lossy().into_owned();
        unsafe { ffi::solar_emu_free_report(report) };
        s
    };
    Err(EmuReport(msg))
}

/// `bytes` of emulated device memory (uninitialised; guarded by red zones the bounds check
/// watches). Never null: an allocation failure aborts like any Rust allocation failure.
pub fn alloc(bytes: usize) -> *mut u8 {
    // SAFETY: plain allocation.
    let p = unsafe { ffi::solar_emu_alloc(bytes) } as *mut u8;
    if p.is_null() {
        std::alloc::handle_alloc_error(std::alloc::Layout::from_size_align(bytes.max(1), 256).unwrap());
    }
    p
}

/// Frees memory from `alloc`; a later kernel access to it is reported as outside any allocation.
///
/// # Safety
/// `ptr` came from `alloc` and is freed once.
pub unsafe fn free(ptr: *mut u8) {
    // SAFETY: per the contract.
    unsafe { ffi::solar_emu_free(ptr as *mut c_void) }
}

/// Turns the checks (bounds, races, uninitialised shared reads, barriers, alignment) on or off
/// for later launches; on by default.
pub fn set_checks(on: bool) {
    // SAFETY: sets a global flag read under the launch lock.
    unsafe { ffi::solar_emu_set_checks(on as i32) }
}

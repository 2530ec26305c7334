//! What the emulator tests share: emulated device buffers and kernel arguments as the launch
//! takes them (a pointer to each value).
#![allow(dead_code)]

use solar_kernels::emu;
use std::ffi::c_void;

/// An emulated device buffer holding a copy of host data; freed on drop.
pub struct Buf(*mut u8, usize);

impl Buf {
    pub fn from<T: Copy>(v: &[T]) -> Buf {
        let bytes = std::mem::size_of_val(v);
        let p = emu::alloc(bytes);
        // SAFETY: p holds `bytes` bytes.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr() as *const u8, p, bytes) };
        Buf(p, bytes)
    }
    pub fn read<T: Copy + Default>(&self) -> Vec<T> {
        let mut v = vec![T::default(); self.1 / std::mem::size_of::<T>()];
        // SAFETY: the buffer holds exactly v's bytes.
        unsafe { std::ptr::copy_nonoverlapping(self.0, v.as_mut_ptr() as *mut u8, self.1) };
        v
    }
    pub fn addr(&self) -> u64 {
        self.0 as u64
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: from emu::alloc, freed once.
        unsafe { emu::free(self.0) }
    }
}

/// The launch's pointer to argument `v`.
pub fn arg<T>(v: &mut T) -> *mut c_void {
    v as *mut T as *mut c_void
}

/// Launches `module`'s kernel `name`; the report's text on a finding.
pub fn launch(
    module: &str,
    name: &str,
    grid: u32,
    block: u32,
    smem: usize,
    args: &[*mut c_void],
) -> Result<(), String> {
    let k = emu::kernel(module, name).unwrap_or_else(|| panic!("no kernel {name} in {module}"));
    // SAFETY: each test passes the kernel's parameters in order, with buffers of the sizes it
    // uses (or, deliberately, one element short: the checks stop the launch before the access).
    unsafe { emu::launch(&k, [grid, 1, 1], [block, 1, 1], smem, args) }.map_err(|e| e.0)
}

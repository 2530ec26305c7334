//! Device memory as the engine holds it: `DeviceBuffer<T>`, a typed allocation of either
//! executor (a cudarc allocation from the device's stream-ordered pool, or an emulator
//! allocation in host memory), and borrowed views into it. Both executors address memory by a
//! u64 device address (a CUdeviceptr, or a host address on the emulator), so launch arguments,
//! copies and views are the same code for both; only allocation and freeing differ.

use crate::DType;
use half::bf16;
use std::marker::PhantomData;
use std::ops::Range;

use super::launch::Elem;

/// An element type device buffers hold (plain bytes, no drop, any bit pattern valid).
pub trait DeviceElem: Copy + Default + Send + Sync + 'static {
    const ELEM: Elem;
}
impl DeviceElem for f32 {
    const ELEM: Elem = Elem::F32;
}
impl DeviceElem for bf16 {
    const ELEM: Elem = Elem::BF16;
}
impl DeviceElem for i32 {
    const ELEM: Elem = Elem::I32;
}
impl DeviceElem for u32 {
    const ELEM: Elem = Elem::U32;
}
impl DeviceElem for i64 {
    const ELEM: Elem = Elem::I64;
}
impl DeviceElem for u64 {
    const ELEM: Elem = Elem::U64;
}
impl DeviceElem for u8 {
    const ELEM: Elem = Elem::U8;
}

/// The engine dtype of a device element type (for error messages).
pub fn dtype_of(e: Elem) -> Option<DType> {
    match e {
        Elem::F32 => Some(DType::F32),
        Elem::BF16 => Some(DType::BF16),
        Elem::I32 => Some(DType::I32),
        Elem::U32 => Some(DType::U32),
        _ => None,
    }
}

/// Who frees an allocation.
pub(crate) enum Allocation {
    /// cudarc frees it (cuMemFreeAsync on the device's stream) when dropped.
    Driver(#[allow(dead_code)] cudarc::driver::CudaSlice<u8>),
    /// solar_kernels::emu::free, at the buffer's address.
    Emulator,
}

/// `len` elements of `T` in device memory, freed on drop. Not `Clone`: a device copy is an
/// explicit `Gpu::try_clone`, since it can fail and costs a device round of memory.
pub struct DeviceBuffer<T> {
    addr: u64,
    len: usize,
    alloc: Allocation,
    _t: PhantomData<T>,
}

impl<T> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({} x {} at {:#x})", self.len, std::any::type_name::<T>(), self.addr)
    }
}

impl<T> DeviceBuffer<T> {
    /// Takes ownership of an allocation at `addr` holding at least `len` elements.
    pub(crate) fn from_raw(addr: u64, len: usize, alloc: Allocation) -> DeviceBuffer<T> {
        crate::alloc_stats::CUDA.alloc((len * std::mem::size_of::<T>()) as u64);
        DeviceBuffer { addr, len, alloc, _t: PhantomData }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The device address of element 0.
    pub fn addr(&self) -> u64 {
        self.addr
    }
    /// Elements `r` (a borrowed view); panics when `r` is outside the buffer, like a slice.
    pub fn slice(&self, r: Range<usize>) -> DeviceView<'_, T> {
        let (addr, len) = sub(self.addr, self.len, r, std::mem::size_of::<T>());
        DeviceView { addr, len, _b: PhantomData }
    }
    /// Elements `r`, writable.
    pub fn slice_mut(&mut self, r: Range<usize>) -> DeviceViewMut<'_, T> {
        let (addr, len) = sub(self.addr, self.len, r, std::mem::size_of::<T>());
        DeviceViewMut { addr, len, _b: PhantomData }
    }
}

fn sub(addr: u64, len: usize, r: Range<usize>, size: usize) -> (u64, usize) {
    assert!(r.start <= r.end && r.end <= len, "device view {r:?} of a buffer of {len}");
    (addr + (r.start * size) as u64, r.end - r.start)
}

impl<T> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        crate::alloc_stats::CUDA.free((self.len * std::mem::size_of::<T>()) as u64);
        if let Allocation::Emulator = self.alloc {
            // A write on the compute stream; its report waits for the next checked operation.
            super::stream_check::freed(self.addr);
            // SAFETY: the address came from emu::alloc for this buffer alone, freed once here.
            unsafe { solar_kernels::emu::free(self.addr as *mut u8) };
        }
    }
}

/// Read-only elements of a buffer.
#[derive(Clone, Copy, Debug)]
pub struct DeviceView<'a, T> {
    addr: u64,
    len: usize,
    _b: PhantomData<&'a T>,
}

/// Writable elements of a buffer.
#[derive(Debug)]
pub struct DeviceViewMut<'a, T> {
    addr: u64,
    len: usize,
    _b: PhantomData<&'a mut T>,
}

/// Device memory a kernel or copy may read: a buffer or a view.
pub trait DeviceSlice<T> {
    fn addr(&self) -> u64;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
/// Device memory a kernel or copy may write.
pub trait DeviceSliceMut<T>: DeviceSlice<T> {}

impl<T> DeviceSlice<T> for DeviceBuffer<T> {
    fn addr(&self) -> u64 {
        self.addr
    }
    fn len(&self) -> usize {
        self.len
    }
}
impl<T> DeviceSliceMut<T> for DeviceBuffer<T> {}
impl<T> DeviceSlice<T> for DeviceView<'_, T> {
    fn addr(&self) -> u64 {
        self.addr
    }
    fn len(&self) -> usize {
        self.len
    }
}
impl<T> DeviceSlice<T> for DeviceViewMut<'_, T> {
    fn addr(&self) -> u64 {
        self.addr
    }
    fn len(&self) -> usize {
        self.len
    }
}
impl<T> DeviceSliceMut<T> for DeviceViewMut<'_, T> {}

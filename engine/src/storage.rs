//! Tensor storage. One enum per device; an op matches on it to pick its backend.

use crate::cuda::CudaStorage;
use crate::dtype::{DType, Element};
use crate::Device;
use half::bf16;

#[derive(Debug)]
pub enum Storage {
    Cpu(CpuStorage),
    Cuda(CudaStorage),
}

impl Storage {
    /// A copy of the data on the same device (a device-to-device copy for CUDA, which can fail).
    pub fn try_clone(&self) -> crate::Result<Storage> {
        Ok(match self {
            Storage::Cpu(c) => Storage::Cpu(c.clone()),
            Storage::Cuda(c) => Storage::Cuda(c.try_clone()?),
        })
    }
}

/// A tensor's storage while a tensor holds it: host bytes are counted in alloc_stats from
/// here until the last holder drops it (device buffers count themselves).
pub(crate) struct Held(Storage);

impl Held {
    pub(crate) fn new(s: Storage) -> Held {
        crate::alloc_stats::CPU.alloc(host_bytes(&s));
        Held(s)
    }
}

fn host_bytes(s: &Storage) -> u64 {
    match s {
        Storage::Cpu(c) => (c.len() * c.dtype().size_in_bytes()) as u64,
        Storage::Cuda(_) => 0,
    }
}

impl std::ops::Deref for Held {
    type Target = Storage;
    fn deref(&self) -> &Storage {
        &self.0
    }
}

/// In-place updates keep the length (tensor.rs writes data, never resizes it), so the count
/// taken at `new` is the one `drop` returns.
impl std::ops::DerefMut for Held {
    fn deref_mut(&mut self) -> &mut Storage {
        &mut self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        crate::alloc_stats::CPU.free(host_bytes(&self.0));
    }
}

impl From<CpuStorage> for Storage {
    fn from(c: CpuStorage) -> Storage {
        Storage::Cpu(c)
    }
}

impl From<CudaStorage> for Storage {
    fn from(c: CudaStorage) -> Storage {
        Storage::Cuda(c)
    }
}

#[derive(Clone, Debug)]
pub enum CpuStorage {
    F32(Vec<f32>),
    F64(Vec<f64>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
}

impl Storage {
    pub fn device(&self) -> Device {
        match self {
            Storage::Cpu(_) => Device::Cpu,
            Storage::Cuda(c) => Device::Cuda(c.gpu.ordinal),
        }
    }
    pub fn dtype(&self) -> DType {
        match self {
            Storage::Cpu(c) => c.dtype(),
            Storage::Cuda(c) => c.dtype(),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            Storage::Cpu(c) => c.len(),
            Storage::Cuda(c) => c.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CpuStorage {
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I32(_) => DType::I32,
            CpuStorage::U32(_) => DType::U32,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            CpuStorage::F32(v) => v.len(),
            CpuStorage::F64(v) => v.len(),
            CpuStorage::BF16(v) => v.len(),
            CpuStorage::I32(v) => v.len(),
            CpuStorage::U32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element as f64 (casts and tests).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        fn conv<T: Element>(v: &[T]) -> Vec<f64> {
            v.iter().map(|x| x.as_f64()).collect()
        }
        match self {
            CpuStorage::F32(v) => conv(v),
            CpuStorage::F64(v) => v.clone(),
            CpuStorage::BF16(v) => conv(v),
            CpuStorage::I32(v) => conv(v),
            CpuStorage::U32(v) => conv(v),
        }
    }

    /// Converts to another dtype. f32 -> bf16 rounds to nearest even, as the hardware does.
    pub fn cast(&self, to: DType) -> CpuStorage {
        if self.dtype() == to {
            return self.clone();
        }
        match (self, to) {
            (CpuStorage::F32(v), DType::BF16) => {
                CpuStorage::BF16(v.iter().map(|&x| bf16::from_f32(x)).collect())
            }
            (CpuStorage::BF16(v), DType::F32) => CpuStorage::F32(v.iter().map(|x| x.to_f32()).collect()),
            (CpuStorage::F64(v), DType::F32) => CpuStorage::F32(v.iter().map(|&x| x as f32).collect()),
            _ => {
                let v = self.to_f64_vec();
                match to {
                    DType::F32 => CpuStorage::F32(v.iter().map(|&x| x as f32).collect()),
                    DType::F64 => CpuStorage::F64(v),
                    DType::BF16 => CpuStorage::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
                    DType::I32 => CpuStorage::I32(v.iter().map(|&x| x as i32).collect()),
                    DType::U32 => CpuStorage::U32(v.iter().map(|&x| x as u32).collect()),
                }
            }
        }
    }
}

//! Device memory of one tensor: a typed `DeviceBuffer` and the `Gpu` it lives on. Tensors share
//! it by Arc; `try_clone` copies the device buffer (copy on write for in-place updates).

use super::{DeviceBuffer, Gpu};
use crate::error::{Error, Result};
use crate::storage::CpuStorage;
use crate::DType;
use half::bf16;
use std::sync::Arc;

pub enum CudaData {
    F32(DeviceBuffer<f32>),
    BF16(DeviceBuffer<bf16>),
    I32(DeviceBuffer<i32>),
    U32(DeviceBuffer<u32>),
}

pub struct CudaStorage {
    pub gpu: Arc<Gpu>,
    pub data: CudaData,
}

impl std::fmt::Debug for CudaStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaStorage({:?}, {} elements on cuda:{})", self.dtype(), self.len(), self.gpu.ordinal)
    }
}

fn wrong(op: &'static str, got: DType, expected: &'static str) -> Error {
    Error::DType { op, got, expected }
}

impl CudaStorage {
    pub fn new(gpu: Arc<Gpu>, data: CudaData) -> CudaStorage {
        CudaStorage { gpu, data }
    }
    pub fn dtype(&self) -> DType {
        match &self.data {
            CudaData::F32(_) => DType::F32,
            CudaData::BF16(_) => DType::BF16,
            CudaData::I32(_) => DType::I32,
            CudaData::U32(_) => DType::U32,
        }
    }
    pub fn len(&self) -> usize {
        match &self.data {
            CudaData::F32(s) => s.len(),
            CudaData::BF16(s) => s.len(),
            CudaData::I32(s) => s.len(),
            CudaData::U32(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn f32(&self, op: &'static str) -> Result<&DeviceBuffer<f32>> {
        match &self.data {
            CudaData::F32(s) => Ok(s),
            _ => Err(wrong(op, self.dtype(), "f32")),
        }
    }
    pub fn bf16(&self, op: &'static str) -> Result<&DeviceBuffer<bf16>> {
        match &self.data {
            CudaData::BF16(s) => Ok(s),
            _ => Err(wrong(op, self.dtype(), "bf16")),
        }
    }
    pub fn i32(&self, op: &'static str) -> Result<&DeviceBuffer<i32>> {
        match &self.data {
            CudaData::I32(s) => Ok(s),
            _ => Err(wrong(op, self.dtype(), "i32")),
        }
    }
    pub fn f32_mut(&mut self, op: &'static str) -> Result<&mut DeviceBuffer<f32>> {
        let got = self.dtype();
        match &mut self.data {
            CudaData::F32(s) => Ok(s),
            _ => Err(wrong(op, got, "f32")),
        }
    }
    pub fn bf16_mut(&mut self, op: &'static str) -> Result<&mut DeviceBuffer<bf16>> {
        let got = self.dtype();
        match &mut self.data {
            CudaData::BF16(s) => Ok(s),
            _ => Err(wrong(op, got, "bf16")),
        }
    }

    /// A device copy of the data on the same GPU.
    pub fn try_clone(&self) -> Result<CudaStorage> {
        let g = &self.gpu;
        let data = match &self.data {
            CudaData::F32(s) => CudaData::F32(g.try_clone(s)?),
            CudaData::BF16(s) => CudaData::BF16(g.try_clone(s)?),
            CudaData::I32(s) => CudaData::I32(g.try_clone(s)?),
            CudaData::U32(s) => CudaData::U32(g.try_clone(s)?),
        };
        Ok(CudaStorage::new(g.clone(), data))
    }

    /// Copies host data to the device. f64 has no GPU kernels, so it is refused.
    pub fn upload(gpu: &Arc<Gpu>, host: &CpuStorage) -> Result<CudaStorage> {
        let data = match host {
            CpuStorage::F32(v) => CudaData::F32(gpu.upload(v)?),
            CpuStorage::BF16(v) => CudaData::BF16(gpu.upload(v)?),
            CpuStorage::I32(v) => CudaData::I32(gpu.upload(v)?),
            CpuStorage::U32(v) => CudaData::U32(gpu.upload(v)?),
            CpuStorage::F64(_) => {
                return Err(wrong("to_device", DType::F64, "f32, bf16, i32 or u32 (f64 is CPU-only)"))
            }
        };
        Ok(CudaStorage::new(gpu.clone(), data))
    }

    /// Copies the device data back to the host (synchronizes the stream).
    pub fn download(&self) -> Result<CpuStorage> {
        let g = &self.gpu;
        Ok(match &self.data {
            CudaData::F32(s) => CpuStorage::F32(g.download(s)?),
            CudaData::BF16(s) => CpuStorage::BF16(g.download(s)?),
            CudaData::I32(s) => CpuStorage::I32(g.download(s)?),
            CudaData::U32(s) => CpuStorage::U32(g.download(s)?),
        })
    }
}

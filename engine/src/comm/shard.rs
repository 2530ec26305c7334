//! A tensor's flat piece as its own tensor: what ZeRO keeps of a parameter, a moment or a
//! gradient on one rank (`shard_range` says which elements). A copy on the tensor's device,
//! shaped [n], never recorded on a tape.

use crate::cuda::{CudaData, CudaStorage};
use crate::error::{Error, Result};
use crate::storage::{CpuStorage, Storage};
use crate::Tensor;
use std::ops::Range;

/// Elements `r` of `t` (flattened) as a new [r.len()] tensor on `t`'s device.
pub fn flat_piece(t: &Tensor, r: Range<usize>) -> Result<Tensor> {
    if r.start > r.end || r.end > t.elem_count() {
        return Err(Error::invalid(
            "flat_piece",
            format!("elements {r:?} of a tensor of {}", t.elem_count()),
        ));
    }
    let storage = match t.storage() {
        Storage::Cpu(c) => Storage::Cpu(match c {
            CpuStorage::F32(v) => CpuStorage::F32(v[r.clone()].to_vec()),
            CpuStorage::F64(v) => CpuStorage::F64(v[r.clone()].to_vec()),
            CpuStorage::BF16(v) => CpuStorage::BF16(v[r.clone()].to_vec()),
            CpuStorage::I32(v) => CpuStorage::I32(v[r.clone()].to_vec()),
            CpuStorage::U32(v) => CpuStorage::U32(v[r.clone()].to_vec()),
        }),
        Storage::Cuda(c) => {
            let g = &c.gpu;
            let data = match &c.data {
                CudaData::F32(b) => CudaData::F32(g.try_clone(&b.slice(r.clone()))?),
                CudaData::BF16(b) => CudaData::BF16(g.try_clone(&b.slice(r.clone()))?),
                CudaData::I32(b) => CudaData::I32(g.try_clone(&b.slice(r.clone()))?),
                CudaData::U32(b) => CudaData::U32(g.try_clone(&b.slice(r.clone()))?),
            };
            Storage::Cuda(CudaStorage::new(g.clone(), data))
        }
    };
    Ok(Tensor::from_parts(storage, [r.len()].into(), None))
}

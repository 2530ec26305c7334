//! Flat pieces of tensors: a piece as its own tensor (what ZeRO keeps of a parameter, a moment
//! or a gradient on one rank; `shard_range` says which elements), and a piece copied into
//! another tensor (gradients into reduction buckets and back). Copies on the tensors' device,
//! never recorded on a tape.

use crate::cuda::elementwise::cast_views;
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

/// Copies elements `from` of `src` (flattened) into `dst` (flattened) starting at element `at`,
/// converting f32 <-> bf16 on the way (same rounding as `to_dtype`), on `src`'s device (the
/// current stream there). What packs a gradient into a reduction bucket and unpacks the sums.
pub fn copy_flat(src: &Tensor, from: Range<usize>, dst: &mut Tensor, at: usize) -> Result<()> {
    let n = from.len();
    if from.start > from.end || from.end > src.elem_count() || at + n > dst.elem_count() {
        return Err(Error::invalid(
            "copy_flat",
            format!(
                "elements {from:?} of a tensor of {} into {}..{} of one of {}",
                src.elem_count(),
                at,
                at + n,
                dst.elem_count()
            ),
        ));
    }
    let to = at..at + n;
    let unsupported = |s: &Tensor, d: &Tensor| {
        Error::invalid("copy_flat", format!("no copy from {:?} to {:?}", s.dtype(), d.dtype()))
    };
    match (src.storage(), dst.storage_mut()?) {
        (Storage::Cpu(s), Storage::Cpu(d)) => match (s, d) {
            (CpuStorage::F32(s), CpuStorage::F32(d)) => d[to].copy_from_slice(&s[from]),
            (CpuStorage::F64(s), CpuStorage::F64(d)) => d[to].copy_from_slice(&s[from]),
            (CpuStorage::BF16(s), CpuStorage::BF16(d)) => d[to].copy_from_slice(&s[from]),
            (CpuStorage::BF16(s), CpuStorage::F32(d)) => {
                d[to].iter_mut().zip(&s[from]).for_each(|(d, s)| *d = s.to_f32())
            }
            (CpuStorage::F32(s), CpuStorage::BF16(d)) => {
                d[to].iter_mut().zip(&s[from]).for_each(|(d, s)| *d = half::bf16::from_f32(*s))
            }
            _ => return Err(unsupported(src, dst)),
        },
        (Storage::Cuda(s), Storage::Cuda(d)) => {
            let g = s.gpu.clone();
            match (&s.data, &mut d.data) {
                (CudaData::F32(s), CudaData::F32(d)) => g.copy(&s.slice(from), &mut d.slice_mut(to))?,
                (CudaData::BF16(s), CudaData::BF16(d)) => g.copy(&s.slice(from), &mut d.slice_mut(to))?,
                (CudaData::BF16(s), CudaData::F32(d)) => {
                    cast_views(&g, &s.slice(from), &mut d.slice_mut(to))?
                }
                (CudaData::F32(s), CudaData::BF16(d)) => {
                    cast_views(&g, &s.slice(from), &mut d.slice_mut(to))?
                }
                _ => return Err(unsupported(src, dst)),
            }
        }
        (s, d) => {
            return Err(Error::invalid(
                "copy_flat",
                format!("a tensor on {} into one on {}", s.device(), d.device()),
            ))
        }
    }
    Ok(())
}

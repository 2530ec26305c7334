//! Global gradient norm and clipping (PyTorch's clip_grad_norm_): the L2 norm over all
//! gradients together; when it exceeds `max_norm`, every gradient is scaled by
//! max_norm / (norm + 1e-6). Squares are summed in f64, per tensor in fixed chunks and over
//! tensors in the order given, so the norm is bitwise reproducible. Gradients on a GPU are
//! summed there (f32, two fixed stages over all of them: kernels/cu/reduce.cu), one value per
//! device coming back; the clip itself is `ops::scale` on whichever device holds each gradient.

use crate::cuda::reduce::sum_squares as gpu_sum_squares;
use crate::cuda::{CudaData, Gpu};
use crate::error::Result;
use crate::ops::reduce::deterministic_sum;
use crate::storage::Storage;
use crate::tape::Grads;
use crate::tensor::TensorId;
use crate::Tensor;
use std::collections::BTreeMap;
use std::sync::Arc;

fn sum_squares(g: &Tensor) -> Result<f64> {
    let v = g.to_vec_f64()?;
    let sq: Vec<f64> = v.iter().map(|x| x * x).collect();
    Ok(deterministic_sum(&sq))
}

/// L2 norm over the gradients of `ids`, in that order (missing gradients count as zero).
pub fn global_grad_norm(grads: &Grads, ids: &[TensorId]) -> Result<f64> {
    Ok(grad_sum_squares(grads, ids)?.sqrt())
}

/// The sum of squares behind `global_grad_norm` (data parallel ranks add theirs, then take the
/// root once).
pub fn grad_sum_squares(grads: &Grads, ids: &[TensorId]) -> Result<f64> {
    let mut total = 0.0;
    // CUDA gradients per device ordinal, in the order given.
    let mut on_gpu: BTreeMap<usize, (Arc<Gpu>, Vec<&CudaData>)> = BTreeMap::new();
    for &id in ids {
        if let Some(g) = grads.get_id(id) {
            match g.storage() {
                Storage::Cuda(c) => {
                    on_gpu.entry(c.gpu.ordinal).or_insert_with(|| (c.gpu.clone(), Vec::new())).1.push(&c.data)
                }
                Storage::Cpu(_) => total += sum_squares(g)?,
            }
        }
    }
    for (gpu, data) in on_gpu.values() {
        total += gpu_sum_squares(gpu, data)?;
    }
    Ok(total)
}

/// Clips the gradients of `ids` to a global norm of at most `max_norm`; returns the norm
/// before clipping (what training logs show).
pub fn clip_grad_norm(grads: &mut Grads, ids: &[TensorId], max_norm: f64) -> Result<f64> {
    let norm = global_grad_norm(grads, ids)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for &id in ids {
            if let Some(g) = grads.remove(id) {
                grads.insert(id, crate::ops::scale(&g, coef)?);
            }
        }
    }
    Ok(norm)
}

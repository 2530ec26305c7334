//! Reductions: sum and mean of all elements (to a scalar), and over the last dimension
//! (keeping it as size 1, so the result broadcasts back). Sums over all elements add fixed-size
//! chunk partials in chunk order: the same bits at any thread count. On CUDA (f32 or bf16):
//! kernels/cu/reduce.cu's fixed two-stage tree (all elements) or one warp or block per row
//! (last dim), accumulated in f32 and stored in the input's dtype; argmax too.

use crate::cuda::{self, CudaData, CudaStorage};
use crate::dtype::Float;
use crate::error::Result;
use crate::ops::check_float;
use crate::storage::{CpuStorage, Storage};
use crate::tape::{ensure_no_grad, record, InputGrads, Op};
use crate::{DType, Shape, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug)]
pub(crate) enum ReduceKind {
    /// Over all elements to a scalar, times `scale` (1 for sum, 1/n for mean).
    All { scale: f64 },
    /// Over the last dimension, keeping it, times `scale`.
    Last { scale: f64 },
}

pub(crate) struct Saved {
    kind: ReduceKind,
    in_shape: Shape,
}

const CHUNK: usize = 8192;

/// Sum of `x` in fixed chunks, partials added in order.
pub fn deterministic_sum<F: Float>(x: &[F]) -> F {
    let partials: Vec<F> = x.par_chunks(CHUNK).map(|c| c.iter().copied().sum()).collect();
    partials.into_iter().sum()
}

fn forward<F: Float>(kind: ReduceKind, x: &Tensor) -> Result<CpuStorage> {
    let xs = x.data::<F>("reduce")?;
    let out = match kind {
        ReduceKind::All { scale } => vec![deterministic_sum(xs) * F::c(scale)],
        ReduceKind::Last { scale } => {
            let c = x.shape().last();
            xs.par_chunks(c.max(1)).map(|row| row.iter().copied().sum::<F>() * F::c(scale)).collect()
        }
    };
    Ok(F::into_storage(out))
}

fn forward_cuda(kind: ReduceKind, op: &'static str, x: &Tensor) -> Result<CudaStorage> {
    let c = x.cuda(op)?;
    match kind {
        ReduceKind::All { scale } => {
            let sum = cuda::reduce::sum_all(&c.gpu, &c.data, scale as f32)?;
            let out = CudaStorage::new(c.gpu.clone(), CudaData::F32(sum));
            cuda::elementwise::cast(&out, x.dtype())
        }
        ReduceKind::Last { scale } => {
            let cols = x.shape().last();
            cuda::reduce::sum_last(c, x.elem_count() / cols.max(1), cols, scale as f32)
        }
    }
}

fn reduce(kind: ReduceKind, op: &'static str, x: &Tensor) -> Result<Tensor> {
    if !x.is_cuda() {
        check_float(op, x)?;
    }
    let out_shape = match kind {
        ReduceKind::All { .. } => Shape::new(&[]),
        ReduceKind::Last { .. } => {
            let mut d = x.dims().to_vec();
            if let Some(l) = d.last_mut() {
                *l = 1;
            }
            Shape::from(d)
        }
    };
    let out: Storage = match x.dtype() {
        _ if x.is_cuda() => forward_cuda(kind, op, x)?.into(),
        DType::F32 => forward::<f32>(kind, x)?.into(),
        _ => forward::<f64>(kind, x)?.into(),
    };
    record(op, &[x], out, out_shape, |_| Op::Reduce(Saved { kind, in_shape: x.shape().clone() }))
}

/// Sum of all elements, as a scalar tensor.
pub fn sum(x: &Tensor) -> Result<Tensor> {
    reduce(ReduceKind::All { scale: 1.0 }, "sum", x)
}
/// Mean of all elements, as a scalar tensor.
pub fn mean(x: &Tensor) -> Result<Tensor> {
    reduce(ReduceKind::All { scale: 1.0 / x.elem_count().max(1) as f64 }, "mean", x)
}
/// Sum over the last dimension: [.., C] -> [.., 1].
pub fn sum_last(x: &Tensor) -> Result<Tensor> {
    reduce(ReduceKind::Last { scale: 1.0 }, "sum_last", x)
}
/// Mean over the last dimension: [.., C] -> [.., 1].
pub fn mean_last(x: &Tensor) -> Result<Tensor> {
    reduce(ReduceKind::Last { scale: 1.0 / x.shape().last().max(1) as f64 }, "mean_last", x)
}

/// Index of the largest element of each row: [.., V] -> u32 [..] (first one on ties). Has no
/// backward: it refuses inputs that need a gradient.
pub fn argmax_last(x: &Tensor) -> Result<Tensor> {
    let op = "argmax_last";
    ensure_no_grad(op, &[x])?;
    let v = x.shape().last();
    if x.rank() == 0 || v == 0 {
        return Err(crate::Error::bad_shape(op, x.shape(), "needs a non-empty last dim"));
    }
    if x.is_cuda() {
        let idx = cuda::reduce::argmax_last(x.cuda(op)?, x.elem_count() / v, v)?;
        return Ok(Tensor::from_cuda(idx, Shape::from(&x.dims()[..x.rank() - 1])));
    }
    let xs = x.to_vec_f64()?;
    let idx: Vec<u32> = xs
        .chunks(v)
        .map(|row| {
            let mut best = 0;
            for (i, &val) in row.iter().enumerate() {
                if val > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect();
    Tensor::from_vec(idx, Shape::from(&x.dims()[..x.rank() - 1]))
}

fn grad<F: Float>(s: &Saved, g: &Tensor) -> Result<CpuStorage> {
    let gs = g.data::<F>("reduce backward")?;
    let n = s.in_shape.elem_count();
    let out = match s.kind {
        ReduceKind::All { scale } => vec![gs[0] * F::c(scale); n],
        ReduceKind::Last { scale } => {
            let c = s.in_shape.last().max(1);
            (0..n).map(|i| gs[i / c] * F::c(scale)).collect()
        }
    };
    Ok(F::into_storage(out))
}

pub(crate) fn backward(s: &Saved, g: &Tensor) -> Result<InputGrads> {
    if g.is_cuda() {
        let n = s.in_shape.elem_count();
        let (c, scale) = match s.kind {
            ReduceKind::All { scale } => (n, scale),
            ReduceKind::Last { scale } => (s.in_shape.last(), scale),
        };
        let dx = cuda::reduce::broadcast_back(g.cuda("reduce backward")?, n, c, scale as f32)?;
        return Ok(vec![Some(Tensor::from_cuda(dx, s.in_shape.clone()))]);
    }
    let out = match g.dtype() {
        DType::F32 => grad::<f32>(s, g)?,
        _ => grad::<f64>(s, g)?,
    };
    Ok(vec![Some(Tensor::from_cpu(out, s.in_shape.clone()))])
}

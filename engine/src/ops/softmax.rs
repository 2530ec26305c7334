//! Softmax and log-softmax over the last dimension, and gather of one element per row. These
//! are the building blocks of the composed (unfused) attention and cross-entropy that the fused
//! ops are tested against. Each row is [.., V].
//!   softmax backward:     dx = y * (dy - sum(dy * y))
//!   log_softmax backward: dx = dy - exp(y) * sum(dy)

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::check_float;
use crate::par;
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Shape, Tensor};

pub(crate) enum Saved {
    Softmax { y: Tensor },
    LogSoftmax { y: Tensor },
    Gather { indices: Vec<usize>, in_shape: Shape },
}

/// logsumexp of a row, max + log(sum(exp(x - max))), with vectorized loops.
pub fn row_lse<F: Float>(row: &[F]) -> F {
    crate::ops::kernels::row_lse(row)
}

fn forward<F: Float>(x: &Tensor, log: bool) -> Result<CpuStorage> {
    let xs = x.data::<F>("softmax")?;
    let v = x.shape().last();
    let mut o = vec![F::zero(); xs.len()];
    par::for_each_row(&mut o, v, 3 * v, |r, out| {
        let row = &xs[r * v..(r + 1) * v];
        let lse = row_lse(row);
        for (o, &x) in out.iter_mut().zip(row) {
            *o = if log { x - lse } else { (x - lse).exp() };
        }
    });
    Ok(F::into_storage(o))
}

fn softmax_impl(x: &Tensor, log: bool) -> Result<Tensor> {
    let op = if log { "log_softmax" } else { "softmax" };
    check_float(op, x)?;
    if x.rank() == 0 {
        return Err(Error::bad_shape(op, x.shape(), "needs at least one dim"));
    }
    let out = match x.dtype() {
        DType::F32 => forward::<f32>(x, log)?,
        _ => forward::<f64>(x, log)?,
    };
    record(op, &[x], out, x.shape().clone(), |y| {
        let y = y.clone();
        Op::Softmax(if log { Saved::LogSoftmax { y } } else { Saved::Softmax { y } })
    })
}

/// Softmax over the last dimension.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    softmax_impl(x, false)
}
/// Log-softmax over the last dimension.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    softmax_impl(x, true)
}

/// out[r] = x[r, idx[r]] for x [.., V] and idx [..] (i32/u32): one element per row.
pub fn gather_last(x: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let op = "gather_last";
    check_float(op, x)?;
    let v = x.shape().last();
    if x.rank() == 0 || idx.elem_count() != x.shape().rows() {
        return Err(Error::mismatch(op, x.shape(), idx.shape(), "one index per row of x is needed"));
    }
    let indices = crate::ops::embedding::ids_as_indices(op, idx, v)?;
    let xs = x.cpu(op)?.to_f64_vec();
    let picked: Vec<f64> = indices.iter().enumerate().map(|(r, &i)| xs[r * v + i]).collect();
    let out = CpuStorage::F64(picked).cast(x.dtype());
    let out_shape = Shape::from(&x.dims()[..x.rank() - 1]);
    record(op, &[x, idx], out, out_shape, |_| {
        Op::Softmax(Saved::Gather { indices: indices.clone(), in_shape: x.shape().clone() })
    })
}

fn grad<F: Float>(s: &Saved, g: &Tensor) -> Result<CpuStorage> {
    let op = "softmax backward";
    let gs = g.data::<F>(op)?;
    let out = match s {
        Saved::Softmax { y } | Saved::LogSoftmax { y } => {
            let ys = y.data::<F>(op)?;
            let v = y.shape().last();
            let log = matches!(s, Saved::LogSoftmax { .. });
            let mut o = vec![F::zero(); ys.len()];
            par::for_each_row(&mut o, v, 2 * v, |r, out| {
                let (y, g) = (&ys[r * v..(r + 1) * v], &gs[r * v..(r + 1) * v]);
                if log {
                    let sg: F = g.iter().copied().sum();
                    for i in 0..v {
                        out[i] = g[i] - y[i].exp() * sg;
                    }
                } else {
                    let sgy: F = g.iter().zip(y).map(|(&a, &b)| a * b).sum();
                    for i in 0..v {
                        out[i] = y[i] * (g[i] - sgy);
                    }
                }
            });
            o
        }
        Saved::Gather { indices, in_shape } => {
            let v = in_shape.last();
            let mut o = vec![F::zero(); in_shape.elem_count()];
            for (r, &i) in indices.iter().enumerate() {
                o[r * v + i] = gs[r];
            }
            o
        }
    };
    Ok(F::into_storage(out))
}

pub(crate) fn backward(s: &Saved, g: &Tensor) -> Result<InputGrads> {
    let shape = match s {
        Saved::Softmax { y } | Saved::LogSoftmax { y } => y.shape().clone(),
        Saved::Gather { in_shape, .. } => in_shape.clone(),
    };
    let out = match g.dtype() {
        DType::F32 => grad::<f32>(s, g)?,
        _ => grad::<f64>(s, g)?,
    };
    // gather_last has a second input (the indices), which never needs a gradient.
    Ok(vec![Some(Tensor::from_cpu(out, shape)), None])
}

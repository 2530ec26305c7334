//! Fused lm_head + cross-entropy: loss over logits = h W^T without ever holding the logits of
//! the whole batch. h is [N, C] (N = B*T rows), W is [V, C], targets [N] (i32, -100 ignored).
//! Rows go in fixed chunks of about 4M logits: the forward keeps only each row's logsumexp;
//! the backward recomputes a chunk's logits and turns them into
//!   d_c = g * (softmax - onehot)        [n, V]
//!   dh_c = d_c W                        [n, C]
//!   dW  += d_c^T h_c                    [V, C], chunks added in order (deterministic)
//! Same loss and gradients as matmul_t(h, W, false, true) followed by cross_entropy.

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::check_float;
use crate::ops::cross_entropy::{rows_lse, softmax_minus_onehot, targets_with_ignore, CrossEntropy};
use crate::ops::matmul::{gemm_cpu, MatmulDims};
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Shape, Tensor};

pub(crate) struct Saved {
    h: Tensor,
    w: Tensor,
    targets: Vec<Option<usize>>,
    lse: Vec<f64>,
    chunk: usize,
}

/// Rows per chunk by default: about 4M logits at a time, at least one row.
pub fn default_chunk_rows(v: usize) -> usize {
    ((1 << 22) / v.max(1)).max(1)
}

/// logits [n, V] = h_rows [n, C] W^T.
fn chunk_logits<F: Float>(h: &[F], w: &[F], n: usize, v: usize, c: usize) -> Vec<F> {
    gemm_cpu(h, w, MatmulDims { batch: 1, m: n, n: v, k: c, b_shared: false }, false, true)
}

fn forward<F: Float>(
    h: &Tensor,
    w: &Tensor,
    t: &[Option<usize>],
    chunk: usize,
) -> Result<(CpuStorage, Vec<f64>)> {
    let (hs, ws) = (h.data::<F>("linear_cross_entropy")?, w.data::<F>("linear_cross_entropy")?);
    let (v, c) = (w.dims()[0], w.dims()[1]);
    let mut lse_all = Vec::with_capacity(t.len());
    let mut sum = F::zero();
    for start in (0..t.len()).step_by(chunk) {
        let end = (start + chunk).min(t.len());
        let logits = chunk_logits(&hs[start * c..end * c], ws, end - start, v, c);
        let lse = rows_lse(&logits, v, &t[start..end]);
        for (r, target) in t[start..end].iter().enumerate() {
            if let Some(k) = *target {
                sum += lse[r] - logits[r * v + k];
            }
        }
        lse_all.extend(lse.iter().map(|x| x.as_f64()));
    }
    Ok((F::into_storage(vec![sum]), lse_all))
}

/// Summed cross-entropy of the logits h W^T against `targets`, with the count of counted rows.
pub fn linear_cross_entropy(h: &Tensor, w: &Tensor, targets: &Tensor) -> Result<CrossEntropy> {
    linear_cross_entropy_chunked(h, w, targets, default_chunk_rows(w.dims().first().copied().unwrap_or(1)))
}

/// `linear_cross_entropy` with `chunk` rows of logits at a time.
pub fn linear_cross_entropy_chunked(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    chunk: usize,
) -> Result<CrossEntropy> {
    let op = "linear_cross_entropy";
    let chunk = chunk.max(1);
    check_float(op, h)?;
    if h.rank() != 2 || w.rank() != 2 || h.dims()[1] != w.dims()[1] {
        return Err(Error::mismatch(op, h.shape(), w.shape(), "h must be [N, C] and W [V, C]"));
    }
    if targets.elem_count() != h.dims()[0] {
        return Err(Error::mismatch(op, h.shape(), targets.shape(), "one target per row of h is needed"));
    }
    if h.dtype() != w.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: h.dtype(), rhs: w.dtype() });
    }
    let t = targets_with_ignore(op, targets, w.dims()[0])?;
    let count = t.iter().filter(|x| x.is_some()).count();
    let (out, lse) = match h.dtype() {
        DType::F32 => forward::<f32>(h, w, &t, chunk)?,
        _ => forward::<f64>(h, w, &t, chunk)?,
    };
    let loss_sum = record(op, &[h, w, targets], out, Shape::new(&[]), |_| {
        Op::LinearCrossEntropy(Saved { h: h.detach(), w: w.detach(), targets: t.clone(), lse, chunk })
    })?;
    Ok(CrossEntropy { loss_sum, count })
}

fn grad<F: Float>(s: &Saved, g: &Tensor) -> Result<(CpuStorage, CpuStorage)> {
    let op = "linear_cross_entropy backward";
    let (hs, ws) = (s.h.data::<F>(op)?, s.w.data::<F>(op)?);
    let (v, c) = (s.w.dims()[0], s.w.dims()[1]);
    let gs = F::c(g.to_scalar()?);
    let n = s.targets.len();
    let lse: Vec<F> = s.lse.iter().map(|&x| F::c(x)).collect();
    let mut dh = Vec::with_capacity(n * c);
    let mut dw = vec![F::zero(); v * c];
    for start in (0..n).step_by(s.chunk) {
        let end = (start + s.chunk).min(n);
        let rows = end - start;
        let h_c = &hs[start * c..end * c];
        let logits = chunk_logits(h_c, ws, rows, v, c);
        let d = softmax_minus_onehot(&logits, v, &s.targets[start..end], &lse[start..end], |_| gs);
        dh.extend(gemm_cpu(
            &d,
            ws,
            MatmulDims { batch: 1, m: rows, n: c, k: v, b_shared: false },
            false,
            false,
        ));
        let dw_c =
            gemm_cpu(&d, h_c, MatmulDims { batch: 1, m: v, n: c, k: rows, b_shared: false }, true, false);
        for (a, b) in dw.iter_mut().zip(dw_c) {
            *a += b;
        }
    }
    Ok((F::into_storage(dh), F::into_storage(dw)))
}

pub(crate) fn backward(s: &Saved, g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    let (dh, dw) = match g.dtype() {
        DType::F32 => grad::<f32>(s, g)?,
        _ => grad::<f64>(s, g)?,
    };
    Ok(vec![
        needs[0].then(|| Tensor::from_cpu(dh, s.h.shape().clone())),
        needs[1].then(|| Tensor::from_cpu(dw, s.w.shape().clone())),
        None,
    ])
}

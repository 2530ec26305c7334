//! Fused cross-entropy over the vocabulary with ignore index -100.
//! logits [.., V] (rows N = B*T), targets [..] (i32; -100 = not counted). Returns the summed
//! loss over counted rows and their count, so the trainer can weight micro-batches by tokens:
//!   loss_r = logsumexp(x_r) - x_r[t_r]
//! Nothing V-wide is kept: the forward saves one logsumexp per row, and the backward writes
//!   dx_r = g * (exp(x_r - lse_r) - onehot(t_r))   (zero for ignored rows)
//! row by row straight into the logits' gradient. The loss sum adds per-row terms in row order.
//! On CUDA (logits f32 or bf16): per-row losses and logsumexps in f32 (kernels/cu/cross_entropy.cu),
//! summed by a fixed two-stage tree; the loss is an f32 scalar and the saved logsumexps stay on
//! the device, so the backward is one pass over the logits.

use crate::cuda::{self, CudaData, CudaStorage, DeviceBuffer};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::embedding::ids_as_i64;
use crate::ops::softmax::row_lse;
use crate::ops::{check_float, kernels};
use crate::par;
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Shape, Tensor};

/// Targets with this value are not counted (HF and PyTorch's convention).
pub const IGNORE_INDEX: i64 = -100;

pub(crate) struct Saved {
    logits: Tensor,
    targets: Vec<Option<usize>>,
    lse: Vec<f64>,
    /// What the CUDA backward reads (logits on a GPU); `lse` above is then empty.
    cuda: Option<CudaSaved>,
}

/// The device side of a CUDA loss's saved state: targets as i32 [N] (-100 ignored) and the
/// per-row logsumexps f32 [N].
pub(crate) struct CudaSaved {
    pub targets: Tensor,
    pub lse: DeviceBuffer<f32>,
}

impl CudaSaved {
    pub fn targets(&self, op: &'static str) -> Result<&DeviceBuffer<i32>> {
        self.targets.cuda(op)?.i32(op)
    }
}

/// The summed loss (a scalar on the tape) and how many rows it counts.
#[derive(Debug)]
pub struct CrossEntropy {
    pub loss_sum: Tensor,
    pub count: usize,
}

/// Targets as `Some(class)` or `None` for ignored rows; anything else out of range is an error.
/// (Targets on a GPU are copied to the host for the check and the count.)
pub(crate) fn targets_with_ignore(op: &'static str, t: &Tensor, v: usize) -> Result<Vec<Option<usize>>> {
    let ids = if t.is_cuda() {
        match t.dtype() {
            DType::I32 | DType::U32 => t.to_vec_f64()?.iter().map(|&x| x as i64).collect(),
            got => return Err(Error::DType { op, got, expected: "i32 or u32 token ids" }),
        }
    } else {
        ids_as_i64(op, t)?
    };
    ids.iter()
        .enumerate()
        .map(|(position, &x)| match x {
            IGNORE_INDEX => Ok(None),
            x if x >= 0 && (x as usize) < v => Ok(Some(x as usize)),
            index => Err(Error::IndexOutOfRange { op, index, bound: v, position }),
        })
        .collect()
}

/// logsumexp of every row of counted targets (ignored rows get 0 and are never read).
pub(crate) fn rows_lse<F: Float>(xs: &[F], v: usize, targets: &[Option<usize>]) -> Vec<F> {
    let mut lse = vec![F::zero(); targets.len()]; // [N]
                                                  // One output element per row, but each reads a V-wide row: tasks are sized by V.
    par::for_each_row(&mut lse, 1, v, |r, l| {
        if targets[r].is_some() {
            l[0] = row_lse(&xs[r * v..(r + 1) * v]);
        }
    });
    lse
}

/// scale(r) * (softmax(x_r) - onehot(t_r)) for every row; zero rows where the target is ignored.
/// Each gradient row is written once (the zeroed allocation is lazy: untouched pages stay free).
pub(crate) fn softmax_minus_onehot<F: Float>(
    xs: &[F],
    v: usize,
    targets: &[Option<usize>],
    lse: &[F],
    scale: impl Fn(usize) -> F + Sync + Send,
) -> Vec<F> {
    let mut dx = vec![F::zero(); xs.len()]; // [N, V]
    par::for_each_row(&mut dx, v, v, |r, out| {
        let Some(t) = targets[r] else { return };
        let (s, l) = (scale(r), lse[r]);
        kernels::exp_shift_scale(out, &xs[r * v..(r + 1) * v], l, s);
        out[t] -= s;
    });
    dx
}

/// `softmax_minus_onehot` in place on a tile of logits [N, width] holding vocabulary columns
/// col0 .. col0 + width (the fused lm_head loss turns its logits buffer into the gradient);
/// `scale(r)` for the tile's row r.
pub(crate) fn softmax_minus_onehot_in_place<F: Float>(
    xs: &mut [F],
    width: usize,
    col0: usize,
    targets: &[Option<usize>],
    lse: &[F],
    scale: impl Fn(usize) -> F + Sync + Send,
) {
    par::for_each_row(xs, width, width, |r, row| {
        let Some(t) = targets[r] else {
            row.fill(F::zero());
            return;
        };
        let scale = scale(r);
        kernels::exp_shift_scale_in_place(row, lse[r], scale);
        if (col0..col0 + width).contains(&t) {
            row[t - col0] -= scale;
        }
    });
}

pub(crate) fn check_logits(op: &'static str, logits: &Tensor, targets: &Tensor) -> Result<usize> {
    if logits.is_cuda() {
        if !matches!(logits.dtype(), DType::F32 | DType::BF16) {
            return Err(Error::DType { op, got: logits.dtype(), expected: "f32 or bf16 logits on CUDA" });
        }
    } else {
        check_float(op, logits)?;
    }
    if logits.rank() == 0 || targets.elem_count() != logits.shape().rows() {
        return Err(Error::mismatch(
            op,
            logits.shape(),
            targets.shape(),
            "one target per row of logits [.., V] is needed",
        ));
    }
    Ok(logits.shape().last())
}

fn forward<F: Float>(logits: &Tensor, targets: &[Option<usize>], v: usize) -> Result<(CpuStorage, Vec<f64>)> {
    let xs = logits.data::<F>("cross_entropy")?;
    let lse = rows_lse(xs, v, targets);
    let mut sum = F::zero();
    for (r, t) in targets.iter().enumerate() {
        if let Some(t) = *t {
            sum += lse[r] - xs[r * v + t];
        }
    }
    Ok((F::into_storage(vec![sum]), lse.iter().map(|x| x.as_f64()).collect()))
}

/// Summed cross-entropy of `logits` [.., V] against `targets` [..] (-100 ignored).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<CrossEntropy> {
    let op = "cross_entropy";
    let v = check_logits(op, logits, targets)?;
    let t = targets_with_ignore(op, targets, v)?;
    let count = t.iter().filter(|x| x.is_some()).count();
    if logits.is_cuda() {
        let (loss_rows, saved) = cuda_rows(op, logits, targets, &t, v)?;
        let gpu = logits.cuda(op)?.gpu.clone();
        let sum = cuda::reduce::sum_all(&gpu, &CudaData::F32(loss_rows), 1.0)?;
        let out = CudaStorage::new(gpu, CudaData::F32(sum));
        return record(op, &[logits, targets], out, Shape::new(&[]), |_| {
            Op::CrossEntropy(Saved {
                logits: logits.detach(),
                targets: t.clone(),
                lse: Vec::new(),
                cuda: Some(saved),
            })
        })
        .map(|loss_sum| CrossEntropy { loss_sum, count });
    }
    let (out, lse) = match logits.dtype() {
        DType::F32 => forward::<f32>(logits, &t, v)?,
        _ => forward::<f64>(logits, &t, v)?,
    };
    let loss_sum = record(op, &[logits, targets], out, Shape::new(&[]), |_| {
        Op::CrossEntropy(Saved { logits: logits.detach(), targets: t.clone(), lse, cuda: None })
    })?;
    Ok(CrossEntropy { loss_sum, count })
}

/// Targets as a device i32 [N] tensor (-100 for ignored rows): `targets` itself when it is
/// already i32 on the logits' GPU, else uploaded from the checked host copy.
pub(crate) fn device_targets(
    op: &'static str,
    logits: &Tensor,
    targets: &Tensor,
    t: &[Option<usize>],
) -> Result<Tensor> {
    let gpu = &logits.cuda(op)?.gpu;
    if let Ok(c) = targets.cuda(op) {
        if c.gpu.ordinal == gpu.ordinal && c.dtype() == DType::I32 {
            return Ok(targets.detach());
        }
    }
    let host: Vec<i32> = t.iter().map(|x| x.map_or(IGNORE_INDEX as i32, |c| c as i32)).collect();
    let dev = CudaStorage::upload(gpu, &CpuStorage::I32(host))?;
    Ok(Tensor::from_cuda(dev, Shape::new(&[t.len()])))
}

/// Per-row losses f32 [N] of CUDA logits [.., V], and what the backward needs.
pub(crate) fn cuda_rows(
    op: &'static str,
    logits: &Tensor,
    targets: &Tensor,
    t: &[Option<usize>],
    v: usize,
) -> Result<(DeviceBuffer<f32>, CudaSaved)> {
    let dt = device_targets(op, logits, targets, t)?;
    let (loss, lse) =
        cuda::cross_entropy::cross_entropy_rows(logits.cuda(op)?, dt.cuda(op)?.i32(op)?, t.len(), v)?;
    Ok((loss, CudaSaved { targets: dt, lse }))
}

/// The CUDA backward of a loss over logits [N, V]: dlogits = scale_r (softmax - onehot), with
/// scale_r = alpha * g (cross-entropy: g a scalar) or alpha * g[r / g_div] (log-probs: g [B]).
pub(crate) fn cuda_backward(
    op: &'static str,
    logits: &Tensor,
    cs: &CudaSaved,
    g: &Tensor,
    g_div: usize,
    alpha: f32,
) -> Result<Tensor> {
    let lc = logits.cuda(op)?;
    let (n, v) = (logits.shape().rows(), logits.shape().last());
    // The gradient of an f32 loss arrives as f32 on the GPU; anything else is made so.
    let g = if g.is_cuda() && g.dtype() == DType::F32 {
        g.clone()
    } else {
        g.detach().to_dtype(DType::F32)?.to_device(logits.device())?
    };
    let gs = g.cuda(op)?.f32(op)?;
    let scale = cuda::cross_entropy::RowScale::Device { g: gs, g_div, alpha };
    let dx = cuda::cross_entropy::cross_entropy_backward(lc, cs.targets(op)?, &cs.lse, &scale, n, v)?;
    Ok(Tensor::from_cuda(dx, logits.shape().clone()))
}

/// Mean cross-entropy over counted rows (0 when none is counted).
pub fn cross_entropy_mean(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let ce = cross_entropy(logits, targets)?;
    crate::ops::scale(&ce.loss_sum, 1.0 / ce.count.max(1) as f64)
}

fn grad<F: Float>(s: &Saved, g: &Tensor) -> Result<CpuStorage> {
    let op = "cross_entropy backward";
    let xs = s.logits.data::<F>(op)?;
    let gs = F::c(g.to_scalar()?);
    let lse: Vec<F> = s.lse.iter().map(|&x| F::c(x)).collect();
    Ok(F::into_storage(softmax_minus_onehot(xs, s.logits.shape().last(), &s.targets, &lse, |_| gs)))
}

pub(crate) fn backward(s: &Saved, g: &Tensor) -> Result<InputGrads> {
    if let Some(cs) = &s.cuda {
        return Ok(vec![Some(cuda_backward("cross_entropy backward", &s.logits, cs, g, 0, 1.0)?), None]);
    }
    let out = match g.dtype() {
        DType::F32 => grad::<f32>(s, g)?,
        _ => grad::<f64>(s, g)?,
    };
    Ok(vec![Some(Tensor::from_cpu(out, s.logits.shape().clone())), None])
}

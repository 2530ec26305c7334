//! RMSNorm (Llama): y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps), per row of C.
//! x is [.., C] (rows N = B*T), w is [C]; the forward saves rstd [N] for the backward:
//!   xhat = x * rstd,  dx = rstd * (dy*w - xhat * mean(dy*w*xhat)),  dw = sum over rows of dy*xhat
//! dw is summed in fixed row blocks whose partials are added in block order (deterministic).
//! CUDA: bf16 x, w, y, dx, dw with f32 statistics; rstd [N] f32 stays on the device
//! (cuda/norm.rs, kernels/cu/rmsnorm.cu).

use crate::cuda::{self, DeviceBuffer};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::{check_float, kernels};
use crate::par;
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Tensor};

pub(crate) struct Saved {
    x: Tensor,
    w: Tensor,
    rstd: Rstd,
}

/// The forward's 1 / rms per row [N], where the forward ran.
enum Rstd {
    Cpu(Vec<f64>),
    Cuda(DeviceBuffer<f32>),
}

fn forward<F: Float>(x: &Tensor, w: &Tensor, eps: f64) -> Result<(CpuStorage, Vec<f64>)> {
    let op = "rmsnorm";
    let (xs, ws) = (x.data::<F>(op)?, w.data::<F>(op)?);
    let c = ws.len();
    let rows = xs.len() / c.max(1);
    let mut rstd = vec![F::zero(); rows]; // [N]
    let mut y = vec![F::zero(); xs.len()]; // [N, C]
                                           // One pass per row: the sum of squares leaves the row in L1 for the scaling.
    par::for_each_row2(&mut y, c, &mut rstd, 1, 2 * c, |r, out, rs| {
        let row = &xs[r * c..(r + 1) * c];
        let ms = kernels::sum_squares(row) / F::c(c as f64);
        rs[0] = F::one() / (ms + F::c(eps)).sqrt();
        for ((o, &v), &wv) in out.iter_mut().zip(row).zip(ws) {
            *o = v * rs[0] * wv;
        }
    });
    Ok((F::into_storage(y), rstd.iter().map(|v| v.as_f64()).collect()))
}

/// RMSNorm of the rows of `x` [.., C] with weight `w` [C].
pub fn rmsnorm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let op = "rmsnorm";
    if w.rank() != 1 || w.dims()[0] != x.shape().last() || x.rank() == 0 {
        return Err(Error::mismatch(op, x.shape(), w.shape(), "the weight must be [C] for x [.., C]"));
    }
    if x.dtype() != w.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: x.dtype(), rhs: w.dtype() });
    }
    if x.is_cuda() || w.is_cuda() {
        if x.dtype() != DType::BF16 {
            return Err(Error::DType { op, got: x.dtype(), expected: "bf16 on CUDA" });
        }
        let c = w.elem_count();
        let rows = x.elem_count() / c.max(1);
        let (y, rstd) = cuda::rmsnorm::rmsnorm_fwd(x.cuda(op)?, w.cuda(op)?, rows, c, eps)?;
        return record(op, &[x, w], y, x.shape().clone(), |_| {
            Op::RmsNorm(Saved { x: x.detach(), w: w.detach(), rstd: Rstd::Cuda(rstd) })
        });
    }
    check_float(op, x)?;
    let (out, rstd) = match x.dtype() {
        DType::F32 => forward::<f32>(x, w, eps)?,
        _ => forward::<f64>(x, w, eps)?,
    };
    record(op, &[x, w], out, x.shape().clone(), |_| {
        Op::RmsNorm(Saved { x: x.detach(), w: w.detach(), rstd: Rstd::Cpu(rstd) })
    })
}

/// (dx, dw) for RMSNorm, from x [N, C], w [C], rstd [N] and dy [N, C].
pub fn rmsnorm_grad<F: Float>(xs: &[F], ws: &[F], rstd: &[F], dy: &[F]) -> (Vec<F>, Vec<F>) {
    let c = ws.len();
    let mut dx = vec![F::zero(); xs.len()];
    par::for_each_row(&mut dx, c, 3 * c, |r, out| {
        let (x, g) = (&xs[r * c..(r + 1) * c], &dy[r * c..(r + 1) * c]);
        // out holds dy*w for the dot product, then becomes dx in place.
        for ((o, &gi), &wi) in out.iter_mut().zip(g).zip(ws) {
            *o = gi * wi;
        }
        let mean = kernels::dot(out, x) * rstd[r] / F::c(c as f64);
        for (o, &xi) in out.iter_mut().zip(x) {
            *o = rstd[r] * (*o - xi * rstd[r] * mean);
        }
    });
    let partials = par::map_row_blocks(rstd.len(), |rows| {
        let mut p = vec![F::zero(); c];
        for r in rows {
            for ((p, &g), &x) in p.iter_mut().zip(&dy[r * c..(r + 1) * c]).zip(&xs[r * c..(r + 1) * c]) {
                *p += g * x * rstd[r];
            }
        }
        p
    });
    let mut dw = vec![F::zero(); c];
    for p in partials {
        for (d, v) in dw.iter_mut().zip(p) {
            *d += v;
        }
    }
    (dx, dw)
}

fn grad<F: Float>(s: &Saved, rstd: &[f64], g: &Tensor) -> Result<(CpuStorage, CpuStorage)> {
    let op = "rmsnorm backward";
    let rstd: Vec<F> = rstd.iter().map(|&v| F::c(v)).collect();
    let (dx, dw) = rmsnorm_grad(s.x.data::<F>(op)?, s.w.data::<F>(op)?, &rstd, g.data::<F>(op)?);
    Ok((F::into_storage(dx), F::into_storage(dw)))
}

pub(crate) fn backward(s: &Saved, g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    let op = "rmsnorm backward";
    let rstd = match &s.rstd {
        Rstd::Cpu(r) => r,
        Rstd::Cuda(r) => {
            let c = s.w.elem_count();
            let rows = s.x.elem_count() / c.max(1);
            let (dx, dw) = cuda::rmsnorm::rmsnorm_bwd(s.x.cuda(op)?, s.w.cuda(op)?, r, g.cuda(op)?, rows, c)?;
            return Ok(vec![
                needs[0].then(|| Tensor::from_cuda(dx, s.x.shape().clone())),
                needs[1].then(|| Tensor::from_cuda(dw, s.w.shape().clone())),
            ]);
        }
    };
    let (dx, dw) = match g.dtype() {
        DType::F32 => grad::<f32>(s, rstd, g)?,
        _ => grad::<f64>(s, rstd, g)?,
    };
    Ok(vec![
        needs[0].then(|| Tensor::from_cpu(dx, s.x.shape().clone())),
        needs[1].then(|| Tensor::from_cpu(dw, s.w.shape().clone())),
    ])
}

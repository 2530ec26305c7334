//! Rotary position embedding, HF rotate_half layout: in each head of D, element i pairs with
//! i + D/2 (not i+1), rotated by angle pos * theta^(-2i/D):
//!   y[i]       = x[i] cos - x[i+D/2] sin
//!   y[i+D/2]   = x[i+D/2] cos + x[i] sin
//! x is [.., T, H, D] with one explicit position per token (so packed sequences restart at 0);
//! positions are i32/u32 with as many elements as there are tokens (B*T).
//! The backward is the inverse rotation (angle negated). Angles follow HF: inv_freq and the
//! product pos * inv_freq in the compute dtype.
//! CUDA: bf16 in and out, angles in f32 as here (cuda/norm.rs, kernels/cu/rope.cu); positions
//! may be a CPU tensor (validated, then uploaded) or an i32/u32 CUDA tensor, used as is: the
//! device copy is not checked, so a negative i32 position rotates by a negative angle there.

use crate::cuda::{self, CudaStorage};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::check_float;
use crate::par;
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Tensor};

pub(crate) struct Saved {
    positions: Positions,
    theta: f64,
    heads: usize,
    shape: crate::Shape,
}

/// The positions as each backend reads them.
enum Positions {
    Cpu(Vec<usize>),
    /// i32 or u32 [tokens] on the device of x.
    Cuda(Tensor),
}

/// Rotates every head of every token; `sign` -1 applies the inverse rotation.
pub fn rope_apply<F: Float>(
    x: &[F],
    positions: &[usize],
    heads: usize,
    d: usize,
    theta: f64,
    sign: f64,
) -> Vec<F> {
    let half = d / 2;
    let inv_freq: Vec<F> =
        (0..half).map(|i| F::one() / F::c(theta).powf(F::c((2 * i) as f64) / F::c(d as f64))).collect();
    let mut out = vec![F::zero(); x.len()];
    par::for_each_row(&mut out, heads * d, heads * d, |n, row| {
        let p = F::c(positions[n] as f64);
        let (cos, sin): (Vec<F>, Vec<F>) = inv_freq
            .iter()
            .map(|&f| {
                let a = p * f;
                (a.cos(), a.sin() * F::c(sign))
            })
            .unzip();
        let src = &x[n * heads * d..(n + 1) * heads * d];
        for h in 0..heads {
            let (xi, yo) = (&src[h * d..(h + 1) * d], &mut row[h * d..(h + 1) * d]);
            for i in 0..half {
                yo[i] = xi[i] * cos[i] - xi[i + half] * sin[i];
                yo[i + half] = xi[i + half] * cos[i] + xi[i] * sin[i];
            }
        }
    });
    out
}

fn apply<F: Float>(
    x: &Tensor,
    pos: &[usize],
    heads: usize,
    d: usize,
    theta: f64,
    sign: f64,
) -> Result<CpuStorage> {
    Ok(F::into_storage(rope_apply(x.data::<F>("rope")?, pos, heads, d, theta, sign)))
}

/// RoPE on `x` [.., T, H, D] at `positions` (one per token).
pub fn rope(x: &Tensor, positions: &Tensor, theta: f64) -> Result<Tensor> {
    let op = "rope";
    if x.rank() < 3 || !x.shape().last().is_multiple_of(2) {
        return Err(Error::bad_shape(op, x.shape(), "x must be [.., T, H, D] with D even"));
    }
    let (heads, d) = (x.shape().dim(-2), x.shape().dim(-1));
    let tokens = x.elem_count() / (heads * d).max(1);
    if positions.elem_count() != tokens {
        return Err(Error::mismatch(op, x.shape(), positions.shape(), "one position per token is needed"));
    }
    if x.is_cuda() {
        if x.dtype() != DType::BF16 {
            return Err(Error::DType { op, got: x.dtype(), expected: "bf16 on CUDA" });
        }
        let xs = x.cuda(op)?;
        let pos = if positions.is_cuda() {
            positions.detach()
        } else {
            let host = crate::ops::embedding::ids_as_indices(op, positions, i32::MAX as usize + 1)?;
            let host: Vec<i32> = host.iter().map(|&p| p as i32).collect();
            let dev = CudaStorage::upload(&xs.gpu, &CpuStorage::I32(host))?;
            Tensor::from_cuda(dev, positions.shape().clone())
        };
        let out = cuda::rope::rope(xs, pos.cuda(op)?, tokens, heads, d, theta, false)?;
        return record(op, &[x, positions], out, x.shape().clone(), |_| {
            Op::Rope(Saved {
                positions: Positions::Cuda(pos.clone()),
                theta,
                heads,
                shape: x.shape().clone(),
            })
        });
    }
    check_float(op, x)?;
    let pos = crate::ops::embedding::ids_as_indices(op, positions, usize::MAX)?;
    let out = match x.dtype() {
        DType::F32 => apply::<f32>(x, &pos, heads, d, theta, 1.0)?,
        _ => apply::<f64>(x, &pos, heads, d, theta, 1.0)?,
    };
    record(op, &[x, positions], out, x.shape().clone(), |_| {
        Op::Rope(Saved { positions: Positions::Cpu(pos.clone()), theta, heads, shape: x.shape().clone() })
    })
}

pub(crate) fn backward(s: &Saved, g: &Tensor) -> Result<InputGrads> {
    let d = s.shape.last();
    let pos = match &s.positions {
        Positions::Cpu(p) => p,
        Positions::Cuda(p) => {
            let op = "rope backward";
            let tokens = s.shape.elem_count() / (s.heads * d).max(1);
            let dx = cuda::rope::rope(g.cuda(op)?, p.cuda(op)?, tokens, s.heads, d, s.theta, true)?;
            return Ok(vec![Some(Tensor::from_cuda(dx, s.shape.clone())), None]);
        }
    };
    let out = match g.dtype() {
        DType::F32 => apply::<f32>(g, pos, s.heads, d, s.theta, -1.0)?,
        _ => apply::<f64>(g, pos, s.heads, d, s.theta, -1.0)?,
    };
    Ok(vec![Some(Tensor::from_cpu(out, s.shape.clone())), None])
}

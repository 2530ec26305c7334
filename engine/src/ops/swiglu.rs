//! SwiGLU, the Llama MLP's gate: y = silu(gate) * up, silu(g) = g * sigmoid(g).
//! gate and up are [.., F]. Backward with s = sigmoid(g):
//!   dgate = dy * up * s * (1 + g (1 - s)),  dup = dy * silu(g)
//! CUDA: bf16 in and out, f32 math (cuda/norm.rs, kernels/cu/swiglu.cu).

use crate::cuda;
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::check_float;
use crate::par;
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Tensor};

pub(crate) struct Saved {
    gate: Tensor,
    up: Tensor,
}

fn sigmoid<F: Float>(x: F) -> F {
    F::one() / (F::one() + (-x).exp())
}

fn forward<F: Float>(gate: &Tensor, up: &Tensor) -> Result<CpuStorage> {
    let (g, u) = (gate.data::<F>("swiglu")?, up.data::<F>("swiglu")?);
    let mut o = vec![F::zero(); g.len()];
    par::zip_elems(g, u, &mut o, |g, u| g * sigmoid(g) * u);
    Ok(F::into_storage(o))
}

/// silu(gate) * up, element-wise.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let op = "swiglu";
    if gate.shape() != up.shape() {
        return Err(Error::mismatch(op, gate.shape(), up.shape(), "gate and up must have the same shape"));
    }
    if gate.dtype() != up.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: gate.dtype(), rhs: up.dtype() });
    }
    let saved = |_: &Tensor| Op::SwiGlu(Saved { gate: gate.detach(), up: up.detach() });
    if gate.is_cuda() || up.is_cuda() {
        if gate.dtype() != DType::BF16 {
            return Err(Error::DType { op, got: gate.dtype(), expected: "bf16 on CUDA" });
        }
        let out = cuda::swiglu::swiglu_fwd(gate.cuda(op)?, up.cuda(op)?)?;
        return record(op, &[gate, up], out, gate.shape().clone(), saved);
    }
    check_float(op, gate)?;
    let out = match gate.dtype() {
        DType::F32 => forward::<f32>(gate, up)?,
        _ => forward::<f64>(gate, up)?,
    };
    record(op, &[gate, up], out, gate.shape().clone(), saved)
}

fn grad<F: Float>(s: &Saved, dy: &Tensor) -> Result<(CpuStorage, CpuStorage)> {
    let op = "swiglu backward";
    let (g, u, dy) = (s.gate.data::<F>(op)?, s.up.data::<F>(op)?, dy.data::<F>(op)?);
    let mut dg = vec![F::zero(); g.len()];
    let mut du = vec![F::zero(); g.len()];
    // Element-wise: a "row" is one element of each gradient, sharing one sigmoid.
    par::for_each_row2(&mut dg, 1, &mut du, 1, 1, |i, dg, du| {
        let sg = sigmoid(g[i]);
        dg[0] = dy[i] * u[i] * sg * (F::one() + g[i] * (F::one() - sg));
        du[0] = dy[i] * g[i] * sg;
    });
    Ok((F::into_storage(dg), F::into_storage(du)))
}

pub(crate) fn backward(s: &Saved, g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    if s.gate.is_cuda() {
        let op = "swiglu backward";
        let (dg, du) = cuda::swiglu::swiglu_bwd(s.gate.cuda(op)?, s.up.cuda(op)?, g.cuda(op)?)?;
        return Ok(vec![
            needs[0].then(|| Tensor::from_cuda(dg, s.gate.shape().clone())),
            needs[1].then(|| Tensor::from_cuda(du, s.up.shape().clone())),
        ]);
    }
    let (dg, du) = match g.dtype() {
        DType::F32 => grad::<f32>(s, g)?,
        _ => grad::<f64>(s, g)?,
    };
    Ok(vec![
        needs[0].then(|| Tensor::from_cpu(dg, s.gate.shape().clone())),
        needs[1].then(|| Tensor::from_cpu(du, s.up.shape().clone())),
    ])
}

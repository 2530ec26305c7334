//! Element-wise unary ops: the small pieces the composed reference versions of the fused ops
//! are built from (exp, log, sigmoid, powf) and the everyday scale and add-a-constant, plus
//! log_sigmoid and relu for the DPO losses (log sigmoid composed as log(sigmoid(x)) gives -inf
//! once sigmoid underflows, near x = -88 in f32, so it is computed as -softplus(-x)).
//! Each saves its input and output; the backward uses whichever makes the derivative cheap.

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::check_float;
use crate::par;
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Tensor};

#[derive(Clone, Copy, Debug)]
pub(crate) enum UnaryKind {
    Exp,
    Log,
    Sigmoid,
    Powf(f64),
    Scale(f64),
    AddScalar(f64),
    LogSigmoid,
    Relu,
}

pub(crate) struct Saved {
    kind: UnaryKind,
    x: Tensor,
    y: Tensor,
}

fn apply<F: Float>(kind: UnaryKind, x: F) -> F {
    match kind {
        UnaryKind::Exp => x.exp(),
        UnaryKind::Log => x.ln(),
        UnaryKind::Sigmoid => F::one() / (F::one() + (-x).exp()),
        UnaryKind::Powf(p) => x.powf(F::c(p)),
        UnaryKind::Scale(s) => x * F::c(s),
        UnaryKind::AddScalar(c) => x + F::c(c),
        // min(x, 0) - ln(1 + e^-|x|): the exponent is never positive, so nothing overflows.
        UnaryKind::LogSigmoid => x.min(F::zero()) - (-x.abs()).exp().ln_1p(),
        UnaryKind::Relu => x.max(F::zero()),
    }
}

/// d y / d x, from the input x and the output y.
fn derivative<F: Float>(kind: UnaryKind, x: F, y: F) -> F {
    match kind {
        UnaryKind::Exp => y,
        UnaryKind::Log => F::one() / x,
        UnaryKind::Sigmoid => y * (F::one() - y),
        UnaryKind::Powf(p) => F::c(p) * x.powf(F::c(p - 1.0)),
        UnaryKind::Scale(s) => F::c(s),
        UnaryKind::AddScalar(_) => F::one(),
        // sigmoid(-x), from x: e^x overflowing to inf gives the right limit 0.
        UnaryKind::LogSigmoid => F::one() / (F::one() + x.exp()),
        // 0 at x = 0, as PyTorch.
        UnaryKind::Relu => {
            if x > F::zero() {
                F::one()
            } else {
                F::zero()
            }
        }
    }
}

fn forward<F: Float>(kind: UnaryKind, x: &Tensor) -> Result<CpuStorage> {
    let xs = x.data::<F>("unary")?;
    let mut o = vec![F::zero(); xs.len()];
    par::map_elems(xs, &mut o, |v| apply(kind, v));
    Ok(F::into_storage(o))
}

fn unary(kind: UnaryKind, op: &'static str, x: &Tensor) -> Result<Tensor> {
    if x.is_cuda() {
        // Only the affine maps have a kernel; the rest act on small tensors (losses) that
        // callers move to the CPU first.
        let out = match kind {
            UnaryKind::Scale(s) => crate::cuda::elementwise::affine(x.cuda(op)?, s as f32, 0.0)?,
            UnaryKind::AddScalar(c) => crate::cuda::elementwise::affine(x.cuda(op)?, 1.0, c as f32)?,
            _ => {
                return Err(Error::WrongDevice {
                    op,
                    device: x.device(),
                    msg: "no CUDA kernel for this op; move the (small) tensor with to_device(Device::Cpu)"
                        .into(),
                })
            }
        };
        return record(op, &[x], out, x.shape().clone(), |y| {
            Op::Unary(Saved { kind, x: x.detach(), y: y.clone() })
        });
    }
    check_float(op, x)?;
    let out = match x.dtype() {
        DType::F32 => forward::<f32>(kind, x)?,
        _ => forward::<f64>(kind, x)?,
    };
    record(op, &[x], out, x.shape().clone(), |y| Op::Unary(Saved { kind, x: x.detach(), y: y.clone() }))
}

pub fn exp(x: &Tensor) -> Result<Tensor> {
    unary(UnaryKind::Exp, "exp", x)
}
pub fn log(x: &Tensor) -> Result<Tensor> {
    unary(UnaryKind::Log, "log", x)
}
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    unary(UnaryKind::Sigmoid, "sigmoid", x)
}
pub fn powf(x: &Tensor, p: f64) -> Result<Tensor> {
    unary(UnaryKind::Powf(p), "powf", x)
}
/// log(sigmoid(x)), stable for any x (see the file header).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    unary(UnaryKind::LogSigmoid, "log_sigmoid", x)
}
/// max(x, 0).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    unary(UnaryKind::Relu, "relu", x)
}
/// x * s.
pub fn scale(x: &Tensor, s: f64) -> Result<Tensor> {
    unary(UnaryKind::Scale(s), "scale", x)
}
/// x + c.
pub fn add_scalar(x: &Tensor, c: f64) -> Result<Tensor> {
    unary(UnaryKind::AddScalar(c), "add_scalar", x)
}

fn grad<F: Float>(s: &Saved, g: &Tensor) -> Result<CpuStorage> {
    let op = "unary backward";
    let (x, y, g) = (s.x.data::<F>(op)?, s.y.data::<F>(op)?, g.data::<F>(op)?);
    let kind = s.kind;
    let o: Vec<F> = (0..x.len()).map(|i| g[i] * derivative(kind, x[i], y[i])).collect();
    Ok(F::into_storage(o))
}

pub(crate) fn backward(s: &Saved, g: &Tensor) -> Result<InputGrads> {
    match s.kind {
        // Linear maps: the gradient is the input gradient scaled (works on either device).
        UnaryKind::Scale(c) if g.is_cuda() => return Ok(vec![Some(scale(g, c)?)]),
        UnaryKind::AddScalar(_) if g.is_cuda() => return Ok(vec![Some(g.clone())]),
        _ => {}
    }
    let out = match g.dtype() {
        DType::F32 => grad::<f32>(s, g)?,
        _ => grad::<f64>(s, g)?,
    };
    Ok(vec![Some(Tensor::from_cpu(out, s.x.shape().clone()))])
}

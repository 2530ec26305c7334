//! Element-wise binary ops (add, sub, mul) with numpy broadcasting: shapes align on the right
//! and a dimension of 1 (or a missing one) stretches. Backward sums the gradient back down to
//! each input's shape (`sum_to_shape`), in a fixed sequential order.

use crate::cuda::elementwise as cuda_ew;
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::check_float;
use crate::par;
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Shape, Tensor};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryKind {
    Add,
    Sub,
    Mul,
}

pub(crate) struct Saved {
    kind: BinaryKind,
    a: Tensor,
    b: Tensor,
}

/// The broadcast shape of `a` and `b`.
pub fn broadcast_shape(op: &'static str, a: &Shape, b: &Shape) -> Result<Shape> {
    let r = a.rank().max(b.rank());
    let mut dims = vec![0; r];
    for (i, d) in dims.iter_mut().enumerate() {
        let da = if i + a.rank() >= r { a.dims()[i + a.rank() - r] } else { 1 };
        let db = if i + b.rank() >= r { b.dims()[i + b.rank() - r] } else { 1 };
        *d = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(Error::mismatch(op, a, b, "shapes do not broadcast")),
        };
    }
    Ok(Shape::from(dims))
}

/// Strides of `s` seen from the broadcast shape `out`: 0 where `s` stretches.
fn broadcast_strides(s: &Shape, out: &Shape) -> Vec<usize> {
    let st = s.strides();
    let off = out.rank() - s.rank();
    (0..out.rank()).map(|i| if i < off || s.dims()[i - off] == 1 { 0 } else { st[i - off] }).collect()
}

/// Flat index into an input with `strides` for flat output index `i` of `out_dims`.
fn source_index(mut i: usize, out_dims: &[usize], strides: &[usize]) -> usize {
    let mut idx = 0;
    for d in (0..out_dims.len()).rev() {
        idx += (i % out_dims[d]) * strides[d];
        i /= out_dims[d];
    }
    idx
}

fn apply<F: Float>(kind: BinaryKind, x: F, y: F) -> F {
    match kind {
        BinaryKind::Add => x + y,
        BinaryKind::Sub => x - y,
        BinaryKind::Mul => x * y,
    }
}

fn forward<F: Float>(kind: BinaryKind, a: &Tensor, b: &Tensor, out: &Shape) -> Result<CpuStorage> {
    let op = "binary";
    let (x, y) = (a.data::<F>(op)?, b.data::<F>(op)?);
    let mut o = vec![F::zero(); out.elem_count()];
    if a.shape() == b.shape() {
        par::zip_elems(x, y, &mut o, |x, y| apply(kind, x, y));
    } else {
        let (sa, sb) = (broadcast_strides(a.shape(), out), broadcast_strides(b.shape(), out));
        let dims = out.dims();
        o.par_chunks_mut(4096).enumerate().for_each(|(c, chunk)| {
            for (j, v) in chunk.iter_mut().enumerate() {
                let i = c * 4096 + j;
                *v = apply(kind, x[source_index(i, dims, &sa)], y[source_index(i, dims, &sb)]);
            }
        });
    }
    Ok(F::into_storage(o))
}

/// The CUDA path: same shapes, or `b` broadcast over the leading dims of `a` (its shape a
/// suffix of `a`'s: a bias or a weight row). Other broadcasts run on the CPU.
fn forward_cuda(
    kind: BinaryKind,
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
) -> Result<crate::cuda::CudaStorage> {
    let out = broadcast_shape(op, a.shape(), b.shape())?;
    let suffix = b.rank() <= a.rank() && a.dims()[a.rank() - b.rank()..] == *b.dims();
    if &out != a.shape() || !suffix {
        return Err(Error::mismatch(
            op,
            a.shape(),
            b.shape(),
            "on CUDA the right side must equal the left or a suffix of its shape",
        ));
    }
    let k = match kind {
        BinaryKind::Add => cuda_ew::Binary::Add,
        BinaryKind::Sub => cuda_ew::Binary::Sub,
        BinaryKind::Mul => cuda_ew::Binary::Mul,
    };
    cuda_ew::binary(k, a.cuda(op)?, b.cuda(op)?)
}

fn binary(kind: BinaryKind, op: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() });
    }
    if a.is_cuda() || b.is_cuda() {
        let out = forward_cuda(kind, op, a, b)?;
        return record(op, &[a, b], out, a.shape().clone(), |_| {
            Op::Binary(Saved { kind, a: a.detach(), b: b.detach() })
        });
    }
    check_float(op, a)?;
    let out_shape = broadcast_shape(op, a.shape(), b.shape())?;
    let out = match a.dtype() {
        DType::F32 => forward::<f32>(kind, a, b, &out_shape)?,
        _ => forward::<f64>(kind, a, b, &out_shape)?,
    };
    record(op, &[a, b], out, out_shape, |_| Op::Binary(Saved { kind, a: a.detach(), b: b.detach() }))
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryKind::Add, "add", a, b)
}
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryKind::Sub, "sub", a, b)
}
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(BinaryKind::Mul, "mul", a, b)
}

/// a + b with no tape, for accumulating gradients.
pub(crate) fn add_untracked(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    add(&a.detach(), &b.detach())
}

fn sum_to<F: Float>(g: &Tensor, shape: &Shape) -> Result<CpuStorage> {
    let x = g.data::<F>("sum_to_shape")?;
    let strides = broadcast_strides(shape, g.shape());
    let mut o = vec![F::zero(); shape.elem_count()];
    for (i, &v) in x.iter().enumerate() {
        o[source_index(i, g.dims(), &strides)] += v;
    }
    Ok(F::into_storage(o))
}

/// Sums `g` (a broadcast result) down to `shape`, the shape of one of its inputs.
pub fn sum_to_shape(g: &Tensor, shape: &Shape) -> Result<Tensor> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    if g.is_cuda() {
        // Summing over the leading dims is a column sum: [rows, n] -> [n].
        let n = shape.elem_count();
        let rows = g.elem_count() / n.max(1);
        let suffix = shape.rank() <= g.rank() && g.dims()[g.rank() - shape.rank()..] == *shape.dims();
        if !suffix {
            return Err(Error::mismatch(
                "sum_to_shape",
                g.shape(),
                shape,
                "on CUDA only a suffix shape is summed to",
            ));
        }
        let cols = cuda_ew::sum_rows(g.cuda("sum_to_shape")?, rows, n)?;
        return Ok(Tensor::from_cuda(cols, shape.clone()));
    }
    let out = match g.dtype() {
        DType::F32 => sum_to::<f32>(g, shape)?,
        DType::F64 => sum_to::<f64>(g, shape)?,
        got => return Err(Error::DType { op: "sum_to_shape", got, expected: "f32 or f64" }),
    };
    Ok(Tensor::from_cpu(out, shape.clone()))
}

pub(crate) fn backward(s: &Saved, g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    let (ga, gb) = match s.kind {
        BinaryKind::Add => (g.clone(), g.clone()),
        BinaryKind::Sub => (g.clone(), crate::ops::scale(g, -1.0)?),
        BinaryKind::Mul => (mul(g, &s.b)?, mul(g, &s.a)?),
    };
    let ga = if needs[0] { Some(sum_to_shape(&ga, s.a.shape())?) } else { None };
    let gb = if needs[1] { Some(sum_to_shape(&gb, s.b.shape())?) } else { None };
    Ok(vec![ga, gb])
}

//! Matmul: C = op(A) op(B), op = identity or transpose (a flag, no copy), 2-D or batched.
//! A is [.., M, K] ([.., K, M] transposed), B is [.., K, N] ([.., N, K] transposed) with the
//! same leading dims, or 2-D and shared by every batch (activations times a weight).
//! CPU fast path: the `gemm` crate, which splits work over output tiles only, so each output
//! element sums over K in a fixed order whatever the thread count. CUDA: bf16 in and out on
//! tensor cores (cuda/matmul.rs, kernels/cu/matmul.cu), f32 accumulation.
//! Backward (the transpose flags keep every case copy-free):
//!   dA = dC op(B)^T  (or op(B) dC^T when A is transposed)
//!   dB = op(A)^T dC  (or dC^T op(A) when B is transposed)

use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Shape, Tensor};

pub(crate) struct Saved {
    a: Tensor,
    b: Tensor,
    ta: bool,
    tb: bool,
}

pub use crate::kernel_args::MatmulDims;

pub fn matmul_dims(a: &Shape, b: &Shape, ta: bool, tb: bool) -> Result<MatmulDims> {
    let op = "matmul";
    if a.rank() < 2 || b.rank() < 2 {
        return Err(Error::mismatch(op, a, b, "both sides need at least 2 dims"));
    }
    let (ar, br) = (a.rank(), b.rank());
    let (m, ka) = if ta { (a.dim(-1), a.dim(-2)) } else { (a.dim(-2), a.dim(-1)) };
    let (kb, n) = if tb { (b.dim(-1), b.dim(-2)) } else { (b.dim(-2), b.dim(-1)) };
    if ka != kb {
        return Err(Error::mismatch(
            op,
            a,
            b,
            format!("inner dims differ ({ka} vs {kb}) with transpose flags ({ta}, {tb})"),
        ));
    }
    let batch: usize = a.dims()[..ar - 2].iter().product();
    let b_shared = br == 2;
    if !b_shared && a.dims()[..ar - 2] != b.dims()[..br - 2] {
        return Err(Error::mismatch(op, a, b, "batch dims differ"));
    }
    if b_shared && ta && ar > 2 {
        return Err(Error::mismatch(op, a, b, "a transposed batched lhs cannot share a 2-D rhs"));
    }
    Ok(MatmulDims { batch, m, n, k: ka, b_shared })
}

/// C = op(A) op(B) on the CPU with the gemm crate.
pub fn gemm_cpu<F: Float>(a: &[F], b: &[F], d: MatmulDims, ta: bool, tb: bool) -> Vec<F> {
    let MatmulDims { batch, m, n, k, b_shared } = d;
    let mut c = vec![F::zero(); batch * m * n];
    if k == 0 || m == 0 || n == 0 {
        return c;
    }
    // A shared B with an untransposed A is one big matmul over batch * M rows.
    let (batch, m) = if b_shared && !ta { (1, batch * m) } else { (batch, m) };
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    for i in 0..batch {
        let a_off = i * m * k;
        let b_off = if b_shared { 0 } else { i * k * n };
        let c_off = i * m * n;
        // SAFETY: the slices hold batch*m*k, (batch)*k*n and batch*m*n elements (checked by
        // matmul_dims and the allocation above); the strides address exactly those ranges.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr().add(c_off),
                1,
                n as isize,
                false,
                a.as_ptr().add(a_off),
                a_cs,
                a_rs,
                b.as_ptr().add(b_off),
                b_cs,
                b_rs,
                F::zero(),
                F::one(),
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
    }
    c
}

fn forward<F: Float>(a: &Tensor, b: &Tensor, d: MatmulDims, ta: bool, tb: bool) -> Result<CpuStorage> {
    Ok(F::into_storage(gemm_cpu(a.data::<F>("matmul")?, b.data::<F>("matmul")?, d, ta, tb)))
}

/// op(A) op(B); see the file header for shapes.
pub fn matmul_t(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> Result<Tensor> {
    let d = matmul_dims(a.shape(), b.shape(), ta, tb)?;
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op: "matmul", lhs: a.dtype(), rhs: b.dtype() });
    }
    let mut dims = a.dims()[..a.rank() - 2].to_vec();
    dims.extend([d.m, d.n]);
    let saved = |_: &Tensor| Op::Matmul(Saved { a: a.detach(), b: b.detach(), ta, tb });
    if a.is_cuda() || b.is_cuda() {
        if a.dtype() != DType::BF16 {
            return Err(Error::DType { op: "matmul", got: a.dtype(), expected: "bf16 on CUDA" });
        }
        let out = crate::cuda::matmul::matmul(a.cuda("matmul")?, b.cuda("matmul")?, d, ta, tb)?;
        return record("matmul", &[a, b], out, Shape::from(dims), saved);
    }
    let out = match a.dtype() {
        DType::F32 => forward::<f32>(a, b, d, ta, tb)?,
        DType::F64 => forward::<f64>(a, b, d, ta, tb)?,
        got => return Err(Error::DType { op: "matmul", got, expected: "f32 or f64" }),
    };
    record("matmul", &[a, b], out, Shape::from(dims), saved)
}

/// A B.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_t(a, b, false, false)
}

pub(crate) fn backward(s: &Saved, g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    let (a, b, ta, tb) = (&s.a, &s.b, s.ta, s.tb);
    let ga = if needs[0] {
        Some(if ta { matmul_t(b, g, tb, true)? } else { matmul_t(g, b, false, !tb)? })
    } else {
        None
    };
    let gb = if needs[1] {
        let d = matmul_dims(a.shape(), b.shape(), ta, tb)?;
        if d.b_shared && a.rank() > 2 {
            // Fold the batch into rows: A is [batch*M, K] and dC is [batch*M, N].
            let rows = d.batch * d.m;
            let a2 = a.reshape([rows, d.k])?;
            let g2 = g.reshape([rows, d.n])?;
            Some(if tb { matmul_t(&g2, &a2, true, false)? } else { matmul_t(&a2, &g2, true, false)? })
        } else {
            Some(if tb { matmul_t(g, a, true, ta)? } else { matmul_t(a, g, !ta, false)? })
        }
    } else {
        None
    };
    Ok(vec![ga, gb])
}

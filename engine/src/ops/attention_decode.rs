//! Attention for generation with a KV cache: the Tq newest queries against all Tk cached keys.
//! q is [B, Tq, H, D] at absolute positions Tk-Tq .. Tk-1; k and v are [B, Tk, Hkv, D]. Causal,
//! GQA and the sliding window as in `attention`; no document mask (one sequence per row).
//! Inference only: it has no backward and refuses inputs that need a gradient. Equal to the
//! last Tq rows of `attention` over the full sequence (tested). `attention_decode_slices` is
//! the same over host f32 slices, for a KV cache kept as growing vectors: wrapping the cache
//! in a tensor every step would copy all of it per token and layer.

use crate::dtype::{Element, Float};
use crate::error::{Error, Result};
use crate::ops::{check_float, kernels};
use crate::par;
use crate::tape::ensure_no_grad;
use crate::{DType, Tensor};

fn decode<F: Float>(q: &[F], k: &[F], v: &[F], dims: [usize; 6], window: Option<usize>) -> Vec<F> {
    let [b, tq, tk, h, hkv, d] = dims;
    let scale = F::one() / F::c(d as f64).sqrt();
    let group = h / hkv;
    let mut out = vec![F::zero(); b * tq * h * d];
    // A row costs a dot product and an axpy of D per visible key: about 2 Tk D.
    par::for_each_row_with(&mut out, d, 2 * tk * d, Vec::new, |s: &mut Vec<F>, r, o| {
        let (bi, i, hh) = (r / (tq * h), (r / h) % tq, r % h);
        let pos = tk - tq + i;
        let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let qi = &q[r * d..(r + 1) * d];
        let krow = |j: usize| ((bi * tk + j) * hkv + hh / group) * d;
        // s [keys]: scores, then unnormalized probabilities; the task reuses the buffer.
        s.clear();
        s.extend((first..=pos).map(|j| kernels::dot(qi, &k[krow(j)..krow(j) + d]) * scale));
        let m = kernels::max(s);
        let inv_z = F::one() / kernels::exp_shift_sum(s, m);
        for (j, &pj) in (first..=pos).zip(s.iter()) {
            for (o, &x) in o.iter_mut().zip(&v[krow(j)..krow(j) + d]) {
                *o += pj * x;
            }
        }
        for o in o.iter_mut() {
            *o *= inv_z;
        }
    });
    out
}

/// The newest `Tq` queries against a KV cache of `Tk` tokens; see the file header.
pub fn attention_decode(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>) -> Result<Tensor> {
    let op = "attention_decode";
    ensure_no_grad(op, &[q, k, v])?;
    check_float(op, q)?;
    if q.rank() != 4 || k.rank() != 4 || k.shape() != v.shape() {
        return Err(Error::mismatch(
            op,
            q.shape(),
            k.shape(),
            "q must be [B, Tq, H, D], k and v [B, Tk, Hkv, D]",
        ));
    }
    let (qd, kd) = (q.dims(), k.dims());
    let (b, tq, h, d, tk, hkv) = (qd[0], qd[1], qd[2], qd[3], kd[1], kd[2]);
    if kd[0] != b || kd[3] != d || hkv == 0 || h % hkv != 0 || tq > tk {
        return Err(Error::mismatch(
            op,
            q.shape(),
            k.shape(),
            "B and D must agree, H be a multiple of Hkv, Tq <= Tk",
        ));
    }
    if q.dtype() != k.dtype() || k.dtype() != v.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: q.dtype(), rhs: k.dtype() });
    }
    let dims = [b, tq, tk, h, hkv, d];
    let out = match q.dtype() {
        DType::F32 => f32::into_storage(decode(q.data(op)?, k.data(op)?, v.data(op)?, dims, window)),
        _ => f64::into_storage(decode(q.data(op)?, k.data(op)?, v.data(op)?, dims, window)),
    };
    Ok(Tensor::from_cpu(out, q.shape().clone()))
}

/// `attention_decode` over host f32 slices: q [B, Tq, H, D], k and v [B, Tk, Hkv, D], with
/// `dims` = [B, Tq, Tk, H, Hkv, D]; returns the output [B, Tq, H, D].
pub fn attention_decode_slices(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dims: [usize; 6],
    window: Option<usize>,
) -> Result<Vec<f32>> {
    let [b, tq, tk, h, hkv, d] = dims;
    let lens_ok = q.len() == b * tq * h * d && k.len() == b * tk * hkv * d && v.len() == k.len();
    if !lens_ok || hkv == 0 || h % hkv != 0 || tq > tk {
        return Err(Error::invalid(
            "attention_decode",
            format!(
                "q, k, v of {}, {}, {} elements for [B, Tq, Tk, H, Hkv, D] = {dims:?} (H a multiple of Hkv, Tq <= Tk)",
                q.len(),
                k.len(),
                v.len()
            ),
        ));
    }
    Ok(decode(q, k, v, dims, window))
}

//! CPU kernels of causal attention (shapes, mask and formulas in attention.rs), tiled so the
//! dot products run as gemm tiles rather than scalar loops; nothing T x T is ever held.
//! Forward: a task owns out [n, H, D] and lse [n, H] of a block of n = BLOCK queries. Per head:
//!   S = scale Q K^T over the keys any row of the block sees     [n, span]
//!   P = exp(S - rowmax) with hidden keys 0,  lse = rowmax + ln(rowsum P),  out = (P V) / rowsum
//! Backward recomputes S twice (flash attention's trade) in two passes, so that every gradient
//! row is owned by one task:
//!   query pass (dq, Di rows):  Di = dO.O,  P = exp(S - lse),  dP = dO V^T,  dS = P (dP - Di),
//!                              dq = scale dS K
//!   key pass (dk, dv rows):    per query head of the kv head, in order: S^T = scale K Q^T,
//!                              P^T, dP^T = V dO^T, dv += P^T dO, dS^T, dk += scale dS^T Q
//! Block boundaries depend on T only and every output element is summed by one task in a
//! fixed order: deterministic at any thread count.

use crate::dtype::Float;
use crate::ops::attention::AttnGeom;
use crate::ops::kernels::{self, gemm_into, Mat};
use rayon::prelude::*;
use std::collections::HashSet;

/// Queries (or keys) per task. Big enough for efficient gemm tiles, small enough that the
/// masked corner of a causal block wastes little and a sequence gives several tasks.
const BLOCK: usize = 64;

/// Outer bounds of what each token sees, per token [B * T]: query i sees keys within
/// [key_lo, i]; key j is seen by queries within [j, query_hi]. Where a document id comes back
/// after another document the bounds cannot be tight, and `doc_check` asks for comparing ids.
struct Spans {
    key_lo: Vec<usize>,
    query_hi: Vec<usize>,
    doc_check: bool,
}

fn spans(g: &AttnGeom) -> Spans {
    let t = g.t;
    let (mut key_lo, mut query_hi) = (Vec::with_capacity(g.b * t), Vec::with_capacity(g.b * t));
    let mut doc_check = false;
    for b in 0..g.b {
        // Runs of equal document ids; the whole row when there are none.
        let (mut start, mut end) = (vec![0; t], vec![t; t]);
        if let Some(doc) = &g.doc {
            let ids = &doc[b * t..(b + 1) * t];
            let (mut seen, mut s, mut contiguous) = (HashSet::new(), 0, true);
            for i in 1..=t {
                if i == t || ids[i] != ids[s] {
                    contiguous &= seen.insert(ids[s]);
                    start[s..i].fill(s);
                    end[s..i].fill(i);
                    s = i;
                }
            }
            if !contiguous {
                start.fill(0);
                end.fill(t);
                doc_check = true;
            }
        }
        key_lo.extend((0..t).map(|i| start[i].max(g.first_key(i))));
        query_hi.extend((0..t).map(|j| (end[j] - 1).min(g.last_query(j))));
    }
    Spans { key_lo, query_hi, doc_check }
}

/// Calls `f(b, first_row, a_block, c_block)` in parallel for every block of BLOCK rows of every
/// sequence, where `a` is [B, T, a_row] and `c` is [B, T, c_row] (both non-empty).
fn par_blocks<F: Send>(
    t: usize,
    (a, a_row): (&mut [F], usize),
    (c, c_row): (&mut [F], usize),
    f: impl Fn(usize, usize, &mut [F], &mut [F]) + Sync + Send,
) {
    a.par_chunks_mut(t * a_row).zip(c.par_chunks_mut(t * c_row)).enumerate().for_each(|(b, (a, c))| {
        let blocks = a.par_chunks_mut(BLOCK * a_row).zip(c.par_chunks_mut(BLOCK * c_row));
        blocks.enumerate().for_each(|(blk, (a, c))| f(b, blk * BLOCK, a, c));
    });
}

/// Sets the entries of a score row that its token does not see to -inf: those outside
/// [from, to) and, when `doc` = (ids of the columns, own id) is given, other documents'.
fn mask_row<F: Float>(row: &mut [F], from: usize, to: usize, doc: Option<(&[usize], usize)>) {
    row[..from].fill(F::neg_infinity());
    row[to..].fill(F::neg_infinity());
    if let Some((ids, own)) = doc {
        for (x, &id) in row[from..to].iter_mut().zip(&ids[from..to]) {
            if id != own {
                *x = F::neg_infinity();
            }
        }
    }
}

/// Forward: (out [B, T, H, D], lse [B, T, H]).
pub fn attention_fwd<F: Float>(q: &[F], k: &[F], v: &[F], g: &AttnGeom) -> (Vec<F>, Vec<F>) {
    let (t, h, hkv, d, group) = (g.t, g.h, g.hkv, g.d, g.h / g.hkv);
    let scale = F::one() / F::c(d as f64).sqrt();
    let mut out = vec![F::zero(); q.len()]; // [B, T, H, D]
    let mut lse = vec![F::zero(); g.b * t * h]; // [B, T, H]
    if q.is_empty() {
        return (out, lse);
    }
    let sp = spans(g);
    let doc_ids = |b: usize, from: usize| &g.doc.as_ref().unwrap()[b * t + from..];
    par_blocks(t, (&mut out, h * d), (&mut lse, h), |b, i0, o, l| {
        let n = l.len() / h;
        let tok = b * t + i0;
        let lo = (tok..tok + n).map(|x| sp.key_lo[x]).min().unwrap_or(i0);
        let span = i0 + n - lo;
        let (qb, kb) = (tok * h * d, (b * t + lo) * hkv * d);
        let mut s = vec![F::zero(); n * span]; // [n, span] scores, then probabilities
        let mut inv_sum = vec![F::zero(); n];
        for hh in 0..h {
            let kv = kb + hh / group * d;
            let qv = Mat { data: q, off: qb + hh * d, rs: h * d, cs: 1 };
            let kt = Mat { data: k, off: kv, rs: 1, cs: hkv * d };
            gemm_into(n, span, d, (&mut s, 0, span, 1), false, qv, kt, scale, false);
            for (r, row) in s.chunks_mut(span).enumerate() {
                let doc = sp.doc_check.then(|| (doc_ids(b, lo), g.doc_of(b, i0 + r)));
                mask_row(row, sp.key_lo[tok + r] - lo, i0 + r + 1 - lo, doc);
                let m = kernels::max(row);
                let z = kernels::exp_shift_sum(row, m);
                l[r * h + hh] = m + z.ln();
                inv_sum[r] = F::one() / z;
            }
            let p = Mat { data: &s, off: 0, rs: span, cs: 1 };
            let vv = Mat { data: v, off: kv, rs: hkv * d, cs: 1 };
            gemm_into(n, d, span, (&mut *o, hh * d, h * d, 1), false, p, vv, F::one(), false);
            for (orow, &inv) in o.chunks_mut(h * d).zip(&inv_sum) {
                for x in &mut orow[hh * d..(hh + 1) * d] {
                    *x *= inv;
                }
            }
        }
    });
    (out, lse)
}

/// Backward: (dq, dk, dv) from the inputs, out, lse and dout.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd<F: Float>(
    q: &[F],
    k: &[F],
    v: &[F],
    out: &[F],
    lse: &[F],
    dout: &[F],
    g: &AttnGeom,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let (t, h, hkv, d, group) = (g.t, g.h, g.hkv, g.d, g.h / g.hkv);
    let scale = F::one() / F::c(d as f64).sqrt();
    let mut dq = vec![F::zero(); q.len()]; // [B, T, H, D]
    let mut di = vec![F::zero(); lse.len()]; // [B, T, H]
    let (mut dk, mut dv) = (vec![F::zero(); k.len()], vec![F::zero(); k.len()]); // [B, T, Hkv, D]
    if q.is_empty() {
        return (dq, dk, dv);
    }
    let sp = spans(g);
    let doc_ids = |b: usize, from: usize| &g.doc.as_ref().unwrap()[b * t + from..];
    // Query pass: dq and Di rows of a block of queries.
    par_blocks(t, (&mut dq, h * d), (&mut di, h), |b, i0, dq, di| {
        let n = di.len() / h;
        let tok = b * t + i0;
        for (r, x) in di.iter_mut().enumerate() {
            let row = (tok * h + r) * d;
            *x = kernels::dot(&dout[row..row + d], &out[row..row + d]);
        }
        let lo = (tok..tok + n).map(|x| sp.key_lo[x]).min().unwrap_or(i0);
        let span = i0 + n - lo;
        let (qb, kb) = (tok * h * d, (b * t + lo) * hkv * d);
        let (mut s, mut dp) = (vec![F::zero(); n * span], vec![F::zero(); n * span]); // [n, span]
        for hh in 0..h {
            let kv = kb + hh / group * d;
            let qv = Mat { data: q, off: qb + hh * d, rs: h * d, cs: 1 };
            let kt = Mat { data: k, off: kv, rs: 1, cs: hkv * d };
            gemm_into(n, span, d, (&mut s, 0, span, 1), false, qv, kt, scale, false);
            let dov = Mat { data: dout, off: qb + hh * d, rs: h * d, cs: 1 };
            let vt = Mat { data: v, off: kv, rs: 1, cs: hkv * d };
            gemm_into(n, span, d, (&mut dp, 0, span, 1), false, dov, vt, F::one(), false);
            for (r, (row, dprow)) in s.chunks_mut(span).zip(dp.chunks(span)).enumerate() {
                let doc = sp.doc_check.then(|| (doc_ids(b, lo), g.doc_of(b, i0 + r)));
                mask_row(row, sp.key_lo[tok + r] - lo, i0 + r + 1 - lo, doc);
                let (l, dii) = (lse[(tok + r) * h + hh], di[r * h + hh]);
                kernels::exp_shift_mul_diff(row, l, dprow, dii);
            }
            let ds = Mat { data: &s, off: 0, rs: span, cs: 1 };
            let kk = Mat { data: k, off: kv, rs: hkv * d, cs: 1 };
            gemm_into(n, d, span, (&mut *dq, hh * d, h * d, 1), false, ds, kk, scale, false);
        }
    });
    // Key pass: dk and dv rows of a block of keys, summing over the kv head's query heads.
    par_blocks(t, (&mut dk, hkv * d), (&mut dv, hkv * d), |b, j0, dk, dv| {
        let n = dk.len() / (hkv * d);
        let tok = b * t + j0;
        let hi = (tok..tok + n).map(|x| sp.query_hi[x]).max().unwrap_or(j0) + 1;
        let span = hi - j0;
        let (kb, qb) = (tok * hkv * d, tok * h * d);
        let (mut s, mut dp) = (vec![F::zero(); n * span], vec![F::zero(); n * span]); // [n, span]
        let (mut lse_col, mut di_col) = (vec![F::zero(); span], vec![F::zero(); span]);
        for hh in 0..h {
            let (kv, first) = (kb + hh / group * d, hh % group == 0);
            for c in 0..span {
                (lse_col[c], di_col[c]) = (lse[(tok + c) * h + hh], di[(tok + c) * h + hh]);
            }
            let kk = Mat { data: k, off: kv, rs: hkv * d, cs: 1 };
            let qt = Mat { data: q, off: qb + hh * d, rs: 1, cs: h * d };
            gemm_into(n, span, d, (&mut s, 0, span, 1), false, kk, qt, scale, false);
            let vv = Mat { data: v, off: kv, rs: hkv * d, cs: 1 };
            let dot = Mat { data: dout, off: qb + hh * d, rs: 1, cs: h * d };
            gemm_into(n, span, d, (&mut dp, 0, span, 1), false, vv, dot, F::one(), false);
            for (r, row) in s.chunks_mut(span).enumerate() {
                let doc = sp.doc_check.then(|| (doc_ids(b, j0), g.doc_of(b, j0 + r)));
                mask_row(row, r, sp.query_hi[tok + r] + 1 - j0, doc);
                kernels::exp_sub_each(row, &lse_col);
            }
            let (pt, dov) = (
                Mat { data: &s, off: 0, rs: span, cs: 1 },
                Mat { data: dout, off: qb + hh * d, rs: h * d, cs: 1 },
            );
            gemm_into(n, d, span, (&mut *dv, kv - kb, hkv * d, 1), !first, pt, dov, F::one(), false);
            for (row, dprow) in s.chunks_mut(span).zip(dp.chunks(span)) {
                for ((x, &y), &dii) in row.iter_mut().zip(dprow).zip(&di_col) {
                    *x *= y - dii;
                }
            }
            let (dst, qv) = (
                Mat { data: &s, off: 0, rs: span, cs: 1 },
                Mat { data: q, off: qb + hh * d, rs: h * d, cs: 1 },
            );
            gemm_into(n, d, span, (&mut *dk, kv - kb, hkv * d, 1), !first, dst, qv, scale, false);
        }
    });
    (dq, dk, dv)
}

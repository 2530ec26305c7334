//! Fused lm_head + cross-entropy: loss over logits = h W^T without ever holding the logits of
//! the whole batch. h is [N, C] (N = B*T rows), W is [V, C], targets [N] (i32, -100 ignored).
//! Logits are made one tile at a time: a chunk of rows times a block of the vocabulary, about
//! 4M logits. Tiling the vocabulary too keeps every gemm well shaped (a 32000-wide vocabulary
//! would otherwise leave ~130-row chunks) and lets W stream through once per row chunk.
//! Forward, per row chunk, vocabulary blocks in order: an online logsumexp per row
//!   (m, s) <- (max(m, m_b), s e^(m - max) + s_b e^(m_b - max))   for the block's max m_b, sum s_b
//! and the target's logit from the block that holds it; only the logsumexp is kept.
//! Backward recomputes each tile's logits and turns them, in place, into
//!   d = g * (exp(logits - lse) - onehot)     [rows, Vb]
//!   dh[rows]  += d W[block]                  [rows, C], vocabulary blocks in order
//!   dW[block] += d^T h[rows]                 [Vb, C], row chunks in order
//! with gemm adding straight into dh and dW: no temporaries, one tile buffer for every tile.
//! Each gemm splits output tiles only, so the result is the same at any thread count.
//! On CUDA (h and W bf16): the same row chunks, each against the whole vocabulary, run by
//! cuda/linear_cross_entropy.rs (the forward keeps one logsumexp per row, f32, on the device).
//! The same machinery gives per-sequence log-probs (`Reduce::PerSequence`, DPO's fused head in
//! linear_logprob.rs): row r's term is logp_r = -loss_r, summed per sequence of T rows into
//! out [B], and the backward scales row r by -g[r / T] instead of the scalar g.

use crate::cuda::linear_cross_entropy::LinearCe;
use crate::cuda::{self, CudaData, CudaStorage, DeviceBuffer, Gpu};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::check_float;
use crate::ops::cross_entropy::{
    device_targets, softmax_minus_onehot_in_place, targets_with_ignore, CrossEntropy, CudaSaved,
};
use crate::ops::kernels::{self, gemm_into, Mat};
use crate::par;
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Shape, Tensor};
use half::bf16;

pub(crate) struct Saved {
    h: Tensor,
    w: Tensor,
    targets: Vec<Option<usize>>,
    lse: Vec<f64>,
    tile: Tile,
    reduce: Reduce,
    /// Device targets and logsumexps (h and W on a GPU); `lse` above is then empty.
    cuda: Option<CudaSaved>,
}

/// How per-row losses become the op's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reduce {
    /// The summed loss, a scalar.
    Sum,
    /// Summed log-probs (minus the losses) of each sequence of `t` consecutive rows: [N / t].
    PerSequence { t: usize },
}

impl Reduce {
    fn out_shape(self, n: usize) -> Shape {
        match self {
            Reduce::Sum => Shape::new(&[]),
            Reduce::PerSequence { t } => Shape::new(&[n / t.max(1)]),
        }
    }
}

/// Logits per tile (16 MB in f32).
const TILE_LOGITS: usize = 1 << 22;
/// Vocabulary block by default: wide rows for the softmax, room for 512-row chunks.
const VOCAB_BLOCK: usize = 8192;

/// Rows per chunk and vocabulary entries per block of one tile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tile {
    rows: usize,
    vocab: usize,
}

impl Tile {
    /// `rows` per chunk (at least 1) and the widest vocabulary block within the tile budget.
    fn for_rows(rows: usize, v: usize) -> Tile {
        let rows = rows.max(1);
        Tile { rows, vocab: (TILE_LOGITS / rows).clamp(1, v.max(1)) }
    }
    /// (start, end) of every row chunk of `n` rows and every vocabulary block of `v`.
    fn chunks(n: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..n).step_by(size).map(move |s| (s, (s + size).min(n)))
    }
}

/// Rows per chunk by default: a tile of `VOCAB_BLOCK` entries of the vocabulary.
pub fn default_chunk_rows(v: usize) -> usize {
    TILE_LOGITS / v.clamp(1, VOCAB_BLOCK)
}

/// out [rows, vb] = h[r0..r1] [rows, C] W[v0..v1]^T.
fn tile_logits<F: Float>(
    out: &mut [F],
    h: &[F],
    w: &[F],
    c: usize,
    rows: (usize, usize),
    block: (usize, usize),
) {
    let ((r0, r1), (v0, v1)) = (rows, block);
    let hv = Mat { data: h, off: r0 * c, rs: c, cs: 1 };
    let wt = Mat { data: w, off: v0 * c, rs: 1, cs: c };
    gemm_into(r1 - r0, v1 - v0, c, (out, 0, v1 - v0, 1), false, hv, wt, F::one(), true);
}

fn forward<F: Float>(
    h: &Tensor,
    w: &Tensor,
    t: &[Option<usize>],
    tile: Tile,
    reduce: Reduce,
) -> Result<(CpuStorage, Vec<f64>)> {
    let (hs, ws) = (h.data::<F>("linear_cross_entropy")?, w.data::<F>("linear_cross_entropy")?);
    let (v, c, n) = (w.dims()[0], w.dims()[1], t.len());
    let mut buf = vec![F::zero(); tile.rows.min(n) * tile.vocab.min(v)]; // [rows, Vb]
                                                                         // Per row: running max, running sum of exp(logit - max), target logit.
    let mut state = vec![F::zero(); 3 * n]; // [N, 3]
    for (r0, r1) in Tile::chunks(n, tile.rows) {
        let st = &mut state[3 * r0..3 * r1];
        st.chunks_mut(3).for_each(|s| s[0] = F::neg_infinity());
        for (v0, v1) in Tile::chunks(v, tile.vocab) {
            let vb = v1 - v0;
            let logits = &mut buf[..(r1 - r0) * vb];
            tile_logits(logits, hs, ws, c, (r0, r1), (v0, v1));
            let logits = &*logits;
            par::for_each_row(st, 3, vb, |r, s| {
                let Some(target) = t[r0 + r] else { return };
                let row = &logits[r * vb..(r + 1) * vb];
                let mb = kernels::max(row);
                let sb = kernels::sum_exp(row, mb);
                let m = if mb > s[0] { mb } else { s[0] };
                s[1] = s[1] * (s[0] - m).exp() + sb * (mb - m).exp();
                s[0] = m;
                if (v0..v1).contains(&target) {
                    s[2] = row[target - v0];
                }
            });
        }
    }
    let mut lse = vec![0.0; n];
    let mut out = vec![F::zero(); if let Reduce::PerSequence { t } = reduce { n / t } else { 1 }];
    for (r, s) in state.chunks(3).enumerate() {
        if t[r].is_some() {
            let l = s[0] + s[1].ln();
            match reduce {
                Reduce::Sum => out[0] += l - s[2],
                // log p = x_target - lse, added in row order per sequence.
                Reduce::PerSequence { t } => out[r / t] += s[2] - l,
            }
            lse[r] = l.as_f64();
        }
    }
    Ok((F::into_storage(out), lse))
}

/// Summed cross-entropy of the logits h W^T against `targets`, with the count of counted rows.
pub fn linear_cross_entropy(h: &Tensor, w: &Tensor, targets: &Tensor) -> Result<CrossEntropy> {
    linear_cross_entropy_chunked(h, w, targets, default_chunk_rows(w.dims().first().copied().unwrap_or(1)))
}

/// `linear_cross_entropy` with `chunk` rows of logits at a time (and the widest block of the
/// vocabulary that keeps a tile within 4M logits).
pub fn linear_cross_entropy_chunked(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    chunk: usize,
) -> Result<CrossEntropy> {
    let v = w.dims().first().copied().unwrap_or(1);
    let (loss_sum, count) = fused(h, w, targets, Tile::for_rows(chunk, v), Reduce::Sum)?;
    Ok(CrossEntropy { loss_sum, count: count.iter().filter(|x| x.is_some()).count() })
}

/// `linear_cross_entropy` with tiles of `rows` rows by `vocab` entries of the vocabulary.
pub fn linear_cross_entropy_tiled(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    rows: usize,
    vocab: usize,
) -> Result<CrossEntropy> {
    let tile = Tile { rows: rows.max(1), vocab: vocab.max(1) };
    let (loss_sum, count) = fused(h, w, targets, tile, Reduce::Sum)?;
    Ok(CrossEntropy { loss_sum, count: count.iter().filter(|x| x.is_some()).count() })
}

/// The tile of `rows` row chunks (the default when None) and `vocab`-wide blocks (the widest
/// within the tile budget when None), for W [V, C].
pub(crate) fn tile_of(w: &Tensor, rows: Option<usize>, vocab: Option<usize>) -> Tile {
    let v = w.dims().first().copied().unwrap_or(1);
    let t = Tile::for_rows(rows.unwrap_or_else(|| default_chunk_rows(v)), v);
    Tile { vocab: vocab.map_or(t.vocab, |b| b.max(1)), ..t }
}

/// The op: its output (see `Reduce`) on the tape, and the checked targets (None = ignored).
pub(crate) fn fused(
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    tile: Tile,
    reduce: Reduce,
) -> Result<(Tensor, Vec<Option<usize>>)> {
    let op = match reduce {
        Reduce::Sum => "linear_cross_entropy",
        Reduce::PerSequence { .. } => "linear_sequence_logprobs",
    };
    if h.is_cuda() || w.is_cuda() {
        if h.dtype() != DType::BF16 || w.dtype() != DType::BF16 {
            let got = if h.dtype() != DType::BF16 { h.dtype() } else { w.dtype() };
            return Err(Error::DType { op, got, expected: "bf16 h and W on CUDA" });
        }
    } else {
        check_float(op, h)?;
    }
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
    if let Reduce::PerSequence { t: len } = reduce {
        if len == 0 || t.len() % len != 0 {
            return Err(Error::mismatch(op, h.shape(), targets.shape(), "rows must be whole sequences"));
        }
    }
    let shape = reduce.out_shape(t.len());
    let (out, lse, cuda): (crate::storage::Storage, _, _) = if h.is_cuda() {
        let (out, saved) = forward_cuda(op, h, w, targets, &t, tile, reduce)?;
        (out.into(), Vec::new(), Some(saved))
    } else {
        let (out, lse) = match h.dtype() {
            DType::F32 => forward::<f32>(h, w, &t, tile, reduce)?,
            _ => forward::<f64>(h, w, &t, tile, reduce)?,
        };
        (out.into(), lse, None)
    };
    let y = record(op, &[h, w, targets], out, shape, |_| {
        Op::LinearCrossEntropy(Saved {
            h: h.detach(),
            w: w.detach(),
            targets: t.clone(),
            lse,
            tile,
            reduce,
            cuda,
        })
    })?;
    Ok((y, t))
}

fn cuda_inputs<'a>(
    op: &'static str,
    h: &'a Tensor,
    w: &'a Tensor,
) -> Result<(&'a std::sync::Arc<Gpu>, &'a DeviceBuffer<bf16>, &'a DeviceBuffer<bf16>)> {
    let (hc, wc) = (h.cuda(op)?, w.cuda(op)?);
    if hc.gpu.ordinal != wc.gpu.ordinal {
        return Err(Error::invalid(
            op,
            format!("h on cuda:{} and W on cuda:{}", hc.gpu.ordinal, wc.gpu.ordinal),
        ));
    }
    Ok((&hc.gpu, hc.bf16(op)?, wc.bf16(op)?))
}

/// The CUDA problem of h [N, C], W [V, C] in row chunks of `tile.rows`.
fn problem(h: &Tensor, w: &Tensor, tile: Tile) -> LinearCe {
    LinearCe { n: h.dims()[0], v: w.dims()[0], c: w.dims()[1], rows: tile.rows }
}

fn forward_cuda(
    op: &'static str,
    h: &Tensor,
    w: &Tensor,
    targets: &Tensor,
    t: &[Option<usize>],
    tile: Tile,
    reduce: Reduce,
) -> Result<(CudaStorage, CudaSaved)> {
    let (gpu, hs, ws) = cuda_inputs(op, h, w)?;
    let dt = device_targets(op, h, targets, t)?;
    let (loss, lse) =
        cuda::linear_cross_entropy::forward_rows(gpu, hs, ws, dt.cuda(op)?.i32(op)?, problem(h, w, tile))?;
    let out = match reduce {
        Reduce::Sum => CudaStorage::new(
            gpu.clone(),
            CudaData::F32(cuda::reduce::sum_all(gpu, &CudaData::F32(loss), 1.0)?),
        ),
        // logp_r = -loss_r exactly, summed per sequence by a fixed tree.
        Reduce::PerSequence { t: len } => {
            let rows = CudaStorage::new(gpu.clone(), CudaData::F32(loss)); // [B, T]
            cuda::reduce::sum_last(&rows, t.len() / len, len, -1.0)?
        }
    };
    Ok((out, CudaSaved { targets: dt, lse }))
}

/// (dh, dW) on CUDA, each only when needed.
fn backward_cuda(
    s: &Saved,
    cs: &CudaSaved,
    g: &Tensor,
    needs: &[bool],
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let op = "linear_cross_entropy backward";
    let (gpu, hs, ws) = cuda_inputs(op, &s.h, &s.w)?;
    let g = if g.is_cuda() && g.dtype() == DType::F32 {
        g.clone()
    } else {
        g.detach().to_dtype(DType::F32)?.to_device(s.h.device())?
    };
    // Per-sequence: each row's scale -g[r / T], made on the host from g [B] (a few floats; the
    // row chunks need not start at a sequence, so the kernels' g[r / g_div] cannot index it).
    let rows: Vec<f32>;
    let scale = match s.reduce {
        Reduce::Sum => cuda::linear_cross_entropy::Scale::Sum(g.cuda(op)?.f32(op)?),
        Reduce::PerSequence { t } => {
            let gh = g.to_vec_f64()?;
            rows = (0..s.targets.len()).map(|r| -(gh[r / t] as f32)).collect();
            cuda::linear_cross_entropy::Scale::Rows(&rows)
        }
    };
    let (dh, dw) = cuda::linear_cross_entropy::backward(
        gpu,
        hs,
        ws,
        cs.targets(op)?,
        &cs.lse,
        scale,
        problem(&s.h, &s.w, s.tile),
        (needs[0], needs[1]),
    )?;
    Ok((
        dh.map(|x| Tensor::from_cuda(x, s.h.shape().clone())),
        dw.map(|x| Tensor::from_cuda(x, s.w.shape().clone())),
    ))
}

/// (dh, dW), each only when needed (empty otherwise).
fn grad<F: Float>(s: &Saved, g: &Tensor, needs: &[bool]) -> Result<(CpuStorage, CpuStorage)> {
    let op = "linear_cross_entropy backward";
    let (hs, ws) = (s.h.data::<F>(op)?, s.w.data::<F>(op)?);
    let (v, c, n, tile) = (s.w.dims()[0], s.w.dims()[1], s.targets.len(), s.tile);
    // Row r's scale: g (a summed loss) or -g[r / T] (log-probs: d logp / dx = onehot - softmax).
    let gs: Vec<F> = match s.reduce {
        Reduce::Sum => vec![F::c(g.to_scalar()?)],
        Reduce::PerSequence { .. } => g.data::<F>(op)?.iter().map(|&x| -x).collect(),
    };
    let div = match s.reduce {
        Reduce::Sum => usize::MAX,
        Reduce::PerSequence { t } => t,
    };
    let lse: Vec<F> = s.lse.iter().map(|&x| F::c(x)).collect();
    let mut dh = vec![F::zero(); if needs[0] { n * c } else { 0 }]; // [N, C]
    let mut dw = vec![F::zero(); if needs[1] { v * c } else { 0 }]; // [V, C]
    let mut buf = vec![F::zero(); tile.rows.min(n) * tile.vocab.min(v)]; // [rows, Vb]
    for (r0, r1) in Tile::chunks(n, tile.rows) {
        let rows = r1 - r0;
        for (v0, v1) in Tile::chunks(v, tile.vocab) {
            let vb = v1 - v0;
            let d = &mut buf[..rows * vb];
            tile_logits(d, hs, ws, c, (r0, r1), (v0, v1));
            let scale = |r: usize| gs[(r0 + r) / div];
            softmax_minus_onehot_in_place(d, vb, v0, &s.targets[r0..r1], &lse[r0..r1], scale);
            let d = Mat { data: &*d, off: 0, rs: vb, cs: 1 };
            if needs[0] {
                let wb = Mat { data: ws, off: v0 * c, rs: c, cs: 1 };
                gemm_into(rows, c, vb, (&mut dh, r0 * c, c, 1), v0 > 0, d, wb, F::one(), true);
            }
            if needs[1] {
                let (dt, hv) = (Mat { rs: 1, cs: vb, ..d }, Mat { data: hs, off: r0 * c, rs: c, cs: 1 });
                gemm_into(vb, c, rows, (&mut dw, v0 * c, c, 1), r0 > 0, dt, hv, F::one(), true);
            }
        }
    }
    Ok((F::into_storage(dh), F::into_storage(dw)))
}

pub(crate) fn backward(s: &Saved, g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    if let Some(cs) = &s.cuda {
        let (dh, dw) = backward_cuda(s, cs, g, needs)?;
        return Ok(vec![dh, dw, None]);
    }
    let (dh, dw) = match g.dtype() {
        DType::F32 => grad::<f32>(s, g, needs)?,
        _ => grad::<f64>(s, g, needs)?,
    };
    Ok(vec![
        needs[0].then(|| Tensor::from_cpu(dh, s.h.shape().clone())),
        needs[1].then(|| Tensor::from_cpu(dw, s.w.shape().clone())),
        None,
    ])
}

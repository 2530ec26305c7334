//! Fused lm_head + per-sequence log-probs: what DPO (and multiple-choice scoring) needs from a
//! model, without ever holding the logits [B, T, V]. h [B, T, C] (or [B*T, C]), W [V, C],
//! labels [B, T] (i32; -100 = not counted, e.g. prompt tokens); out [B] with
//!   out_b = sum over counted t of (x_bt[label_bt] - logsumexp(x_bt)),  x_bt = h_bt W^T
//! and each sequence's count of counted tokens. It is `linear_cross_entropy` with its per-row
//! terms negated and summed per sequence instead of over the batch (ops/linear_cross_entropy.rs
//! holds the tiles, the online logsumexp and both backends), so the two cannot drift apart:
//! memory is one logits tile (about 4M logits) plus one logsumexp per row, and the backward
//! recomputes each tile and scales row r by -g[r / T]:
//!   dx_bt = g_b (onehot(label_bt) - softmax(x_bt));  dh = dx W,  dW = dx^T h  (tile by tile).
//! Composed, the same is `sequence_logprobs(matmul_t(h, W), labels)` (ops/logprob.rs), which
//! the tests hold it to, forward and gradients.

use crate::error::{Error, Result};
use crate::ops::linear_cross_entropy::{fused, tile_of, Reduce};
use crate::ops::SequenceLogProbs;
use crate::Tensor;

/// Summed log-probs [B] of `labels` [B, T] under the logits h W^T; see the file header.
pub fn linear_sequence_logprobs(h: &Tensor, w: &Tensor, labels: &Tensor) -> Result<SequenceLogProbs> {
    run(h, w, labels, None, None)
}

/// `linear_sequence_logprobs` with tiles of `rows` rows by `vocab` entries of the vocabulary
/// (on CUDA the vocabulary is not blocked: `vocab` is ignored there).
pub fn linear_sequence_logprobs_tiled(
    h: &Tensor,
    w: &Tensor,
    labels: &Tensor,
    rows: usize,
    vocab: usize,
) -> Result<SequenceLogProbs> {
    run(h, w, labels, Some(rows), Some(vocab))
}

fn run(
    h: &Tensor,
    w: &Tensor,
    labels: &Tensor,
    rows: Option<usize>,
    vocab: Option<usize>,
) -> Result<SequenceLogProbs> {
    let op = "linear_sequence_logprobs";
    if labels.rank() != 2 {
        return Err(Error::bad_shape(op, labels.shape(), "labels must be [B, T]"));
    }
    let (b, t) = (labels.dims()[0], labels.dims()[1]);
    let h2 = match h.rank() {
        3 if h.dims()[..2] == [b, t] => h.reshape([b * t, h.dims()[2]])?,
        2 if h.dims()[0] == b * t => h.clone(),
        _ => {
            return Err(Error::mismatch(
                op,
                h.shape(),
                labels.shape(),
                "h must be [B, T, C] (or [B*T, C]) for labels [B, T]",
            ))
        }
    };
    if t == 0 {
        return Err(Error::bad_shape(op, labels.shape(), "sequences of no token have no log-prob"));
    }
    let flat = labels.reshape([b * t])?;
    let (logps, l) = fused(&h2, w, &flat, tile_of(w, rows, vocab), Reduce::PerSequence { t })?;
    let counts = (0..b).map(|s| l[s * t..(s + 1) * t].iter().filter(|x| x.is_some()).count()).collect();
    Ok(SequenceLogProbs { logps, counts })
}

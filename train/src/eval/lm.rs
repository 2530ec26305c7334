//! `eval --task lm`: mean negative log-likelihood over every predicted token of every sequence,
//! weighted by tokens (not a mean of per-sequence means), its perplexity and the token count.
//! A sequence longer than the context is cut into windows of seq_len+1 tokens that overlap by
//! one, so every token after the first is predicted exactly once (each window from a fresh
//! context, like non-overlapping strided evaluation).

use crate::error::{Result, TrainError};
use serde::Serialize;
use solar_engine::Tensor;
use solar_model::llama::next_token_targets;
use solar_model::{Llama, ModelInput};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LmEval {
    pub loss: f64,
    pub ppl: f64,
    pub tokens: usize,
}

/// [start, end) windows of `seq` for context `seq_len`; each predicts tokens start+1..end.
pub fn windows(len: usize, seq_len: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start + 1 < len {
        let end = (start + seq_len + 1).min(len);
        out.push((start, end));
        start = end - 1;
    }
    out
}

/// Token-weighted NLL of `sequences` under `model`.
pub fn eval_lm(model: &Llama, sequences: &[Vec<u32>], seq_len: usize) -> Result<LmEval> {
    if seq_len == 0 {
        return Err(TrainError::Msg("--seq-len must be at least 1".into()));
    }
    let mut sum = 0.0;
    let mut tokens = 0;
    for seq in sequences {
        for (start, end) in windows(seq.len(), seq_len) {
            // Inputs are window[..-1]; targets the window shifted by one.
            let t = end - start - 1;
            let window = &seq[start..end];
            let input = ModelInput::rows(&window[..t], 1, t)?;
            let mut targets = next_token_targets(&window[..t], 1, t);
            targets[t - 1] = window[t] as i32;
            let ce = model.loss(None, &input, &Tensor::from_vec(targets, [1, t])?)?;
            sum += ce.loss_sum.to_scalar()?;
            tokens += ce.count;
        }
    }
    if tokens == 0 {
        return Err(TrainError::Msg("no token to predict: every sequence has fewer than 2 tokens".into()));
    }
    let loss = sum / tokens as f64;
    Ok(LmEval { loss, ppl: loss.exp(), tokens })
}

#[cfg(test)]
mod tests {
    use super::windows;

    #[test]
    fn windows_predict_every_token_once() {
        assert_eq!(windows(1, 4), vec![]);
        assert_eq!(windows(5, 4), vec![(0, 5)]);
        assert_eq!(windows(10, 4), vec![(0, 5), (4, 9), (8, 10)]);
        for (len, ctx) in [(37, 5), (2, 1), (100, 99)] {
            let predicted: usize = windows(len, ctx).iter().map(|(s, e)| e - s - 1).sum();
            assert_eq!(predicted, len - 1);
        }
    }
}

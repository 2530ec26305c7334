//! What a trainer step minimizes, by stage: the language-model loss over scored tokens
//! (pretrain and SFT rows) for now; DPO over preference pairs plugs in here as another variant.
//! `step` runs the step's rows in micro-batches, scaling each micro-batch's summed loss by
//! 1/(the step's scored tokens) before its backward, so the gradients add up to those of the
//! step's token-weighted mean whatever the split.

use crate::data::rows::{collate, LmRow};
use crate::error::Result;
use serde_json::{json, Value};
use solar_engine::{ops, Grads, Tape};
use solar_model::Llama;

pub enum Objective {
    /// Next-token loss on packed or single rows (pretrain, SFT), with optional held-out rows.
    Lm { rows: Vec<LmRow>, eval: Option<Vec<LmRow>> },
}

/// A step's mean loss over its `count` scored units (tokens, or pairs) and extra metrics.
pub struct StepLoss {
    pub loss: f64,
    pub count: usize,
    pub extra: Value,
}

/// FNV-1a over a stream of words: a stable fingerprint of the training data.
fn fnv(words: impl Iterator<Item = u64>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

fn row_words(r: &LmRow) -> impl Iterator<Item = u64> + '_ {
    let n = std::iter::once(r.len() as u64);
    n.chain(r.ids.iter().map(|&x| x as u64))
        .chain(r.labels.iter().map(|&x| x as u32 as u64))
        .chain(r.positions.iter().map(|&x| x as u64))
        .chain(r.doc_ids.iter().map(|&x| x as u64))
}

/// Summed loss and scored tokens of `rows` without a tape, `batch` rows at a time.
pub fn lm_loss(model: &Llama, rows: &[&LmRow], batch: usize) -> Result<(f64, usize)> {
    let (mut sum, mut count) = (0.0, 0);
    for chunk in rows.chunks(batch.max(1)) {
        let b = collate(chunk)?;
        let ce = model.loss(None, &b.input, &b.targets)?;
        sum += ce.loss_sum.to_scalar()?;
        count += ce.count;
    }
    Ok((sum, count))
}

impl Objective {
    /// Training rows (or pairs) to draw steps from.
    pub fn rows(&self) -> usize {
        match self {
            Objective::Lm { rows, .. } => rows.len(),
        }
    }

    pub fn fingerprint(&self) -> String {
        match self {
            Objective::Lm { rows, .. } => fnv(rows.iter().flat_map(row_words)),
        }
    }

    /// Forward and backward of one optimizer step's rows, gradients added into `grads`.
    pub fn step(&self, model: &Llama, picked: &[usize], batch: usize, grads: &mut Grads) -> Result<StepLoss> {
        match self {
            Objective::Lm { rows, .. } => {
                let picked: Vec<&LmRow> = picked.iter().map(|&i| &rows[i]).collect();
                let count: usize = picked.iter().map(|r| r.scored()).sum();
                let mut sum = 0.0;
                for chunk in picked.chunks(batch.max(1)) {
                    let tape = Tape::new();
                    let b = collate(chunk)?;
                    let ce = model.loss(Some(&tape), &b.input, &b.targets)?;
                    sum += ce.loss_sum.to_scalar()?;
                    if ce.count > 0 {
                        let scaled = ops::scale(&ce.loss_sum, 1.0 / count as f64)?;
                        tape.backward_into(&scaled, grads)?;
                    }
                }
                Ok(StepLoss { loss: sum / count.max(1) as f64, count, extra: json!({}) })
            }
        }
    }

    /// Held-out loss, when held-out data was given.
    pub fn eval(&self, model: &Llama, batch: usize) -> Result<Option<f64>> {
        match self {
            Objective::Lm { eval: Some(rows), .. } => {
                let refs: Vec<&LmRow> = rows.iter().collect();
                let (sum, count) = lm_loss(model, &refs, batch)?;
                Ok(Some(sum / count.max(1) as f64))
            }
            Objective::Lm { eval: None, .. } => Ok(None),
        }
    }
}

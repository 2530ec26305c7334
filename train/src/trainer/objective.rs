//! What a trainer step minimizes, by stage: the language-model loss over scored tokens
//! (pretrain and SFT rows), or the DPO loss over preference pairs against reference log-probs
//! computed before training. `step` runs the step's rows in micro-batches, scaling each
//! micro-batch's summed loss by 1/(the step's count: scored tokens, or pairs) before its
//! backward, so the gradients add up to those of the step's mean whatever the split.

use crate::data::rows::{collate, LmRow, PairRow};
use crate::dpo::{dpo_loss_sum, policy_pass, DpoConfig, DpoSums, RefLogps};
use crate::error::Result;
use serde_json::{json, Value};
use solar_engine::{ops, Grads, Tape, TensorId};
use solar_model::Llama;

pub enum Objective {
    /// Next-token loss on packed or single rows (pretrain, SFT), with optional held-out rows.
    Lm { rows: Vec<LmRow>, eval: Option<Vec<LmRow>> },
    /// DPO on pairs, with each pair's reference log-probs; optional held-out pairs likewise.
    Dpo {
        pairs: Vec<PairRow>,
        refs: Vec<RefLogps>,
        cfg: DpoConfig,
        eval: Option<(Vec<PairRow>, Vec<RefLogps>)>,
    },
}

/// A step's mean loss over its `count` scored units (tokens, or pairs) and extra metrics.
/// `processed` is every token the step's forward passes read (prompts and unscored tokens
/// included, padding not): what throughput is measured in, as trainers read it.
pub struct StepLoss {
    pub loss: f64,
    pub count: usize,
    pub processed: usize,
    pub extra: Value,
}

/// What the gradients of a micro-batch are doing, for data parallel ranks (ZeRO-2 reduces a
/// gradient as soon as it is complete).
pub enum GradEvent {
    /// The gradient of this watched tensor is complete for the micro-batch.
    Ready(TensorId),
    /// The micro-batch is done (its backward ran, or it had nothing to score).
    MicroBatchDone,
}

/// How a step's rows are shared with other data parallel ranks.
pub struct StepSplit<'a> {
    /// The rows of the step (positions in `picked`) this process runs: all of them alone.
    pub mine: std::ops::Range<usize>,
    /// Sums host numbers over the ranks (loss sums, DPO statistics); nothing alone.
    pub reduce: &'a dyn Fn(&mut [f64]) -> Result<()>,
    /// Told of each `GradEvent`, with the gradients so far.
    pub on_grads: &'a mut dyn FnMut(GradEvent, &mut Grads) -> Result<()>,
    /// Micro-batch rounds every rank reports before the losses are summed: a rank with fewer
    /// rows reports empty ones, so all ranks' reductions pair up.
    pub rounds: usize,
}

impl StepSplit<'_> {
    /// A single process: every row, nothing to sum with.
    pub fn alone(rows: usize, run: impl FnOnce(&mut StepSplit<'_>) -> Result<StepLoss>) -> Result<StepLoss> {
        let mut nothing = |_: GradEvent, _: &mut Grads| Ok(());
        run(&mut StepSplit { mine: 0..rows, reduce: &|_| Ok(()), on_grads: &mut nothing, rounds: 0 })
    }

    /// Reports the empty rounds that bring this rank's `done` micro-batches up to `rounds`.
    fn pad_rounds(&mut self, done: usize, grads: &mut Grads) -> Result<()> {
        for _ in done..self.rounds {
            (self.on_grads)(GradEvent::MicroBatchDone, grads)?;
        }
        Ok(())
    }

    /// The backward of one micro-batch's scaled loss, telling `on_grads` of each gradient as
    /// it completes.
    fn backward(&mut self, tape: &Tape, loss: &solar_engine::Tensor, grads: &mut Grads) -> Result<()> {
        let on = &mut self.on_grads;
        tape.backward_notifying(loss, grads, &mut |id, g| {
            (on)(GradEvent::Ready(id), g)
                .map_err(|e| solar_engine::Error::invalid("gradient reduction", e.to_string()))
        })?;
        Ok(())
    }
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
    /// What `StepLoss::count` counts.
    pub fn scored_unit(&self) -> &'static str {
        match self {
            Objective::Lm { .. } => "tokens",
            Objective::Dpo { .. } => "pairs",
        }
    }

    /// Training rows (or pairs) to draw steps from.
    pub fn rows(&self) -> usize {
        match self {
            Objective::Lm { rows, .. } => rows.len(),
            Objective::Dpo { pairs, .. } => pairs.len(),
        }
    }

    pub fn fingerprint(&self) -> String {
        match self {
            Objective::Lm { rows, .. } => fnv(rows.iter().flat_map(row_words)),
            Objective::Dpo { pairs, refs, .. } => fnv(pairs
                .iter()
                .flat_map(|p| row_words(&p.chosen).chain(row_words(&p.rejected)))
                .chain(refs.iter().flat_map(|r| [r.chosen.to_bits(), r.rejected.to_bits()]))),
        }
    }

    /// The length of every row the step over `picked` runs forward and backward (a pair's
    /// chosen and rejected rows both): what its FLOPs are counted from (mfu.rs).
    pub fn row_lens(&self, picked: &[usize]) -> Vec<usize> {
        match self {
            Objective::Lm { rows, .. } => picked.iter().map(|&i| rows[i].len()).collect(),
            Objective::Dpo { pairs, .. } => {
                picked.iter().flat_map(|&i| [pairs[i].chosen.len(), pairs[i].rejected.len()]).collect()
            }
        }
    }

    /// Forward and backward of one optimizer step's rows, gradients added into `grads`. With
    /// data parallel ranks (`split`), this process runs only its rows of the step, scaled by
    /// the whole step's count, and the losses are summed over the ranks.
    pub fn step(
        &self,
        model: &Llama,
        picked: &[usize],
        batch: usize,
        grads: &mut Grads,
        split: &mut StepSplit<'_>,
    ) -> Result<StepLoss> {
        let mine = split.mine.clone();
        let micro_batches = mine.len().div_ceil(batch.max(1));
        match self {
            Objective::Lm { rows, .. } => {
                let picked: Vec<&LmRow> = picked.iter().map(|&i| &rows[i]).collect();
                let count: usize = picked.iter().map(|r| r.scored()).sum();
                let processed = picked.iter().map(|r| r.len()).sum();
                let mut sum = 0.0;
                for chunk in picked[mine].chunks(batch.max(1)) {
                    let tape = Tape::new();
                    let b = collate(chunk)?;
                    let ce = model.loss(Some(&tape), &b.input, &b.targets)?;
                    sum += ce.loss_sum.to_scalar()?;
                    if ce.count > 0 {
                        let scaled = ops::scale(&ce.loss_sum, 1.0 / count as f64)?;
                        split.backward(&tape, &scaled, grads)?;
                    }
                    (split.on_grads)(GradEvent::MicroBatchDone, grads)?;
                }
                split.pad_rounds(micro_batches, grads)?;
                let mut sums = [sum];
                (split.reduce)(&mut sums)?;
                let sum = sums[0];
                Ok(StepLoss { loss: sum / count.max(1) as f64, count, processed, extra: json!({}) })
            }
            Objective::Dpo { pairs, refs, cfg, .. } => {
                let count = picked.len();
                let processed = picked.iter().map(|&i| pairs[i].chosen.len() + pairs[i].rejected.len()).sum();
                let mut total = DpoSums::default();
                for chunk in picked[mine].chunks(batch.max(1)) {
                    let tape = Tape::new();
                    let p: Vec<&PairRow> = chunk.iter().map(|&i| &pairs[i]).collect();
                    let r: Vec<&RefLogps> = chunk.iter().map(|&i| &refs[i]).collect();
                    let (sum, sums) = dpo_loss_sum(model, &tape, &p, &r, cfg)?;
                    split.backward(&tape, &ops::scale(&sum, 1.0 / count as f64)?, grads)?;
                    total.add(&sums);
                    (split.on_grads)(GradEvent::MicroBatchDone, grads)?;
                }
                split.pad_rounds(micro_batches, grads)?;
                let mut numbers = total.to_numbers();
                (split.reduce)(&mut numbers)?;
                let means = DpoSums::from_numbers(numbers).means();
                let extra: serde_json::Map<String, Value> = means
                    .iter()
                    .filter(|(k, _)| **k != "loss")
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect();
                Ok(StepLoss {
                    loss: means.get("loss").copied().unwrap_or(f64::NAN),
                    count,
                    processed,
                    extra: Value::Object(extra),
                })
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
            Objective::Lm { eval: None, .. } | Objective::Dpo { eval: None, .. } => Ok(None),
            Objective::Dpo { eval: Some((pairs, refs)), cfg, .. } => {
                let mut total = DpoSums::default();
                for (chunk, rc) in pairs.chunks(batch.max(1)).zip(refs.chunks(batch.max(1))) {
                    let p: Vec<&PairRow> = chunk.iter().collect();
                    let r: Vec<&RefLogps> = rc.iter().collect();
                    total.add(&policy_pass(model, None, &p, &r, cfg)?.1);
                }
                Ok(total.means().get("loss").copied())
            }
        }
    }
}

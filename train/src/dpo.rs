//! Direct preference optimization: the loss and metrics TRL's DPOTrainer computes (PAPER.md,
//! "Formulas Solar follows"). Per pair, with log-probs summed over the completion tokens,
//!   h = [log pi(y+) - log ref(y+)] - [log pi(y-) - log ref(y-)]
//!   sigmoid: -(1-e) log sigmoid(beta h) - e log sigmoid(-beta h)   (e = label smoothing)
//!   ipo:     (h - 1/(2 beta))^2, every log-prob first divided by its completion length
//!   hinge:   relu(1 - beta h)
//! and rewards beta (log pi - log ref) per side, as TRL logs them (IPO's from the
//! length-normalized log-probs, as TRL does).
//!
//! The reference's log-probs are computed once, before training and without a tape
//! (`reference_logps`), so only the policy is held while training. The policy runs chosen and
//! rejected rows through one batch (TRL's concatenated forward). `dpo_loss_sum` returns the SUM
//! of the per-pair losses so micro-batches add up; the trainer divides by the step's pair count.

use crate::data::rows::{collate, LmRow, PairRow};
use crate::error::{Result, TrainError};
use solar_engine::ops;
use solar_engine::{DType, Tape, Tensor};
use solar_model::Llama;
use std::collections::BTreeMap;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpoLoss {
    Sigmoid,
    Ipo,
    Hinge,
}

impl FromStr for DpoLoss {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<DpoLoss> {
        match s {
            "sigmoid" => Ok(DpoLoss::Sigmoid),
            "ipo" => Ok(DpoLoss::Ipo),
            "hinge" => Ok(DpoLoss::Hinge),
            other => Err(TrainError::Msg(format!("unknown DPO loss '{other}'; known: sigmoid, ipo, hinge"))),
        }
    }
}

impl DpoLoss {
    /// The name --loss takes (and resume identities record).
    pub fn name(self) -> &'static str {
        match self {
            DpoLoss::Sigmoid => "sigmoid",
            DpoLoss::Ipo => "ipo",
            DpoLoss::Hinge => "hinge",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpoConfig {
    pub beta: f64,
    pub loss: DpoLoss,
    /// e in the conservative sigmoid loss: the assumed chance a preference label is flipped.
    pub label_smoothing: f64,
}

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig { beta: 0.1, loss: DpoLoss::Sigmoid, label_smoothing: 0.0 }
    }
}

impl DpoConfig {
    /// beta must be positive (IPO divides by it); label smoothing lies in [0, 0.5] and only the
    /// sigmoid loss has it, so a value elsewhere is refused rather than silently ignored.
    pub fn validate(&self) -> Result<()> {
        if !(self.beta.is_finite() && self.beta > 0.0) {
            return Err(TrainError::Msg(format!("--beta must be a positive number, got {}", self.beta)));
        }
        if !(0.0..=0.5).contains(&self.label_smoothing) {
            return Err(TrainError::Msg(format!(
                "--label-smoothing must lie in [0, 0.5], got {}",
                self.label_smoothing
            )));
        }
        if self.label_smoothing > 0.0 && self.loss != DpoLoss::Sigmoid {
            return Err(TrainError::Msg("--label-smoothing applies to the sigmoid loss only".into()));
        }
        Ok(())
    }
}

/// The reference model's summed completion log-probs of one pair (never length-normalized
/// here: IPO divides at loss time, by the same counts the policy sees).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RefLogps {
    pub chosen: f64,
    pub rejected: f64,
}

/// Sums over pairs of what TRL logs; `means` divides by `count`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DpoSums {
    pub count: usize,
    pub loss: f64,
    pub chosen_rewards: f64,
    pub rejected_rewards: f64,
    pub accuracies: f64,
    pub margins: f64,
    pub logps_chosen: f64,
    pub logps_rejected: f64,
}

impl DpoSums {
    pub fn add(&mut self, o: &DpoSums) {
        self.count += o.count;
        self.loss += o.loss;
        self.chosen_rewards += o.chosen_rewards;
        self.rejected_rewards += o.rejected_rewards;
        self.accuracies += o.accuracies;
        self.margins += o.margins;
        self.logps_chosen += o.logps_chosen;
        self.logps_rejected += o.logps_rejected;
    }

    /// The sums as numbers to add over ranks, and back (`from_numbers(to_numbers())` is exact).
    pub fn to_numbers(&self) -> [f64; 8] {
        [
            self.count as f64,
            self.loss,
            self.chosen_rewards,
            self.rejected_rewards,
            self.accuracies,
            self.margins,
            self.logps_chosen,
            self.logps_rejected,
        ]
    }
    pub fn from_numbers(v: [f64; 8]) -> DpoSums {
        DpoSums {
            count: v[0] as usize,
            loss: v[1],
            chosen_rewards: v[2],
            rejected_rewards: v[3],
            accuracies: v[4],
            margins: v[5],
            logps_chosen: v[6],
            logps_rejected: v[7],
        }
    }

    /// Means under TRL's metric names (empty when no pair was counted).
    pub fn means(&self) -> BTreeMap<&'static str, f64> {
        if self.count == 0 {
            return BTreeMap::new();
        }
        let n = self.count as f64;
        BTreeMap::from([
            ("loss", self.loss / n),
            ("rewards/chosen", self.chosen_rewards / n),
            ("rewards/rejected", self.rejected_rewards / n),
            ("rewards/accuracies", self.accuracies / n),
            ("rewards/margins", self.margins / n),
            ("logps/chosen", self.logps_chosen / n),
            ("logps/rejected", self.logps_rejected / n),
        ])
    }
}

/// Every pair's chosen rows, then every rejected row (TRL's concatenation order).
fn concatenated<'a>(pairs: &[&'a PairRow]) -> Vec<&'a LmRow> {
    pairs.iter().map(|p| &p.chosen).chain(pairs.iter().map(|p| &p.rejected)).collect()
}

/// Summed completion log-probs [2N] of the concatenated rows and each row's scored tokens.
/// A completion with nothing scored has no log-prob to compare (and IPO would divide by 0).
fn completion_logps(model: &Llama, tape: Option<&Tape>, pairs: &[&PairRow]) -> Result<(Tensor, Vec<usize>)> {
    for (i, p) in pairs.iter().enumerate() {
        for (side, row) in [("chosen", &p.chosen), ("rejected", &p.rejected)] {
            if row.scored() == 0 {
                return Err(TrainError::Msg(format!("pair {i}: the {side} completion has no scored token")));
            }
        }
    }
    let batch = collate(&concatenated(pairs))?;
    let lp = model.sequence_logprobs(tape, &batch.input, &batch.targets)?; // [2N]
    Ok((lp.logps, lp.counts))
}

/// The reference's log-probs of every pair, `batch` pairs (2 * batch rows) per forward, with
/// no tape.
pub fn reference_logps(reference: &Llama, pairs: &[PairRow], batch: usize) -> Result<Vec<RefLogps>> {
    if batch == 0 {
        return Err(TrainError::Msg("the reference batch size must be at least 1".into()));
    }
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch) {
        // Scoring a large data set takes a while: SIGINT/SIGTERM stop it between batches.
        solar_model::output::interrupt::check()?;
        let refs: Vec<&PairRow> = chunk.iter().collect();
        let (logps, _) = completion_logps(reference, None, &refs)?;
        let v = logps.to_vec_f64()?;
        let n = chunk.len();
        out.extend((0..n).map(|i| RefLogps { chosen: v[i], rejected: v[n + i] }));
    }
    Ok(out)
}

/// `reference_logps` shared out over data parallel ranks: batch i (of `batch` pairs, the
/// batches one process scores, so the same numbers) is scored by rank i mod size, and the
/// ranks' results are summed: each pair's from the rank that scored it plus zeros, exactly.
pub fn reference_logps_on(
    reference: &Llama,
    pairs: &[PairRow],
    batch: usize,
    comm: Option<&solar_engine::comm::Comm>,
) -> Result<Vec<RefLogps>> {
    let Some(comm) = comm else { return reference_logps(reference, pairs, batch) };
    if batch == 0 {
        return Err(TrainError::Msg("the reference batch size must be at least 1".into()));
    }
    let mut flat = vec![0.0f64; 2 * pairs.len()];
    for (i, chunk) in pairs.chunks(batch).enumerate() {
        if i % comm.size() == comm.rank() {
            for (j, r) in reference_logps(reference, chunk, batch)?.into_iter().enumerate() {
                flat[2 * (i * batch + j)] = r.chosen;
                flat[2 * (i * batch + j) + 1] = r.rejected;
            }
        }
    }
    comm.all_reduce_f64(&mut flat)?;
    Ok(flat.chunks_exact(2).map(|c| RefLogps { chosen: c[0], rejected: c[1] }).collect())
}

/// 1 per pair, or 1/count for IPO's length normalization.
fn length_factors(cfg: &DpoConfig, counts: &[usize]) -> Vec<f64> {
    counts.iter().map(|&c| if cfg.loss == DpoLoss::Ipo { 1.0 / c as f64 } else { 1.0 }).collect()
}

fn constant(values: Vec<f64>, dtype: DType) -> Result<Tensor> {
    let n = values.len();
    Ok(Tensor::from_vec(values, [n])?.to_dtype(dtype)?)
}

/// The loss head: per-pair losses [N] on the tape from the policy's summed completion log-probs
/// `chosen` and `rejected` [N] (f32 or f64), the reference's, and each completion's scored-token
/// count. Separate from the model so it can be checked in f64 against finite differences.
pub fn dpo_pair_losses(
    chosen: &Tensor,
    rejected: &Tensor,
    refs: &[&RefLogps],
    counts: (&[usize], &[usize]),
    cfg: &DpoConfig,
) -> Result<Tensor> {
    cfg.validate()?;
    let n = refs.len();
    if chosen.dims() != [n] || rejected.dims() != [n] || counts.0.len() != n || counts.1.len() != n {
        return Err(TrainError::Msg(format!(
            "DPO loss: {n} reference pairs for policy log-probs {} and {}",
            chosen.shape(),
            rejected.shape()
        )));
    }
    let dt = chosen.dtype();
    let (fc, fr) = (length_factors(cfg, counts.0), length_factors(cfg, counts.1));
    let pc = ops::mul(chosen, &constant(fc.clone(), dt)?)?;
    let pr = ops::mul(rejected, &constant(fr.clone(), dt)?)?;
    // The reference's log-ratio is a constant: h = (pc - pr) - ref_ratio.
    let ref_ratio: Vec<f64> = (0..n).map(|i| refs[i].chosen * fc[i] - refs[i].rejected * fr[i]).collect();
    let h = ops::sub(&ops::sub(&pc, &pr)?, &constant(ref_ratio, dt)?)?;
    let beta = cfg.beta;
    Ok(match cfg.loss {
        DpoLoss::Sigmoid => {
            let e = cfg.label_smoothing;
            let agree = ops::scale(&ops::unary::log_sigmoid(&ops::scale(&h, beta)?)?, -(1.0 - e))?;
            if e == 0.0 {
                agree
            } else {
                let flipped = ops::unary::log_sigmoid(&ops::scale(&h, -beta)?)?;
                ops::add(&agree, &ops::scale(&flipped, -e)?)?
            }
        }
        DpoLoss::Ipo => ops::powf(&ops::add_scalar(&h, -1.0 / (2.0 * beta))?, 2.0)?,
        DpoLoss::Hinge => ops::unary::relu(&ops::add_scalar(&ops::scale(&h, -beta)?, 1.0)?)?,
    })
}

/// TRL's metrics of one micro-batch, from the policy's log-probs [2N] and the per-pair losses.
fn sums_of(logps: &[f64], counts: &[usize], losses: &[f64], refs: &[&RefLogps], cfg: &DpoConfig) -> DpoSums {
    let n = refs.len();
    let (fc, fr) = (length_factors(cfg, &counts[..n]), length_factors(cfg, &counts[n..]));
    let mut s = DpoSums { count: n, loss: losses.iter().sum(), ..Default::default() };
    for i in 0..n {
        let (pc, pr) = (logps[i] * fc[i], logps[n + i] * fr[i]);
        let rc = cfg.beta * (pc - refs[i].chosen * fc[i]);
        let rr = cfg.beta * (pr - refs[i].rejected * fr[i]);
        s.chosen_rewards += rc;
        s.rejected_rewards += rr;
        s.accuracies += if rc > rr { 1.0 } else { 0.0 };
        s.margins += rc - rr;
        s.logps_chosen += pc;
        s.logps_rejected += pr;
    }
    s
}

/// The policy pass shared by training (with a tape) and evaluation (without).
pub(crate) fn policy_pass(
    policy: &Llama,
    tape: Option<&Tape>,
    pairs: &[&PairRow],
    refs: &[&RefLogps],
    cfg: &DpoConfig,
) -> Result<(Tensor, DpoSums)> {
    if pairs.is_empty() || pairs.len() != refs.len() {
        return Err(TrainError::Msg(format!(
            "DPO loss: {} pairs with {} reference log-probs (need the same, at least 1)",
            pairs.len(),
            refs.len()
        )));
    }
    let n = pairs.len();
    let (logps, counts) = completion_logps(policy, tape, pairs)?;
    let chosen = ops::index_select(&logps, 0, &(0..n).collect::<Vec<_>>())?;
    let rejected = ops::index_select(&logps, 0, &(n..2 * n).collect::<Vec<_>>())?;
    let losses = dpo_pair_losses(&chosen, &rejected, refs, (&counts[..n], &counts[n..]), cfg)?;
    let sums = sums_of(&logps.to_vec_f64()?, &counts, &losses.to_vec_f64()?, refs, cfg);
    Ok((ops::sum(&losses)?, sums))
}

/// The SUM over `pairs` of the per-pair DPO loss, as a scalar on `tape`, with the metric sums.
/// `refs[i]` is the reference's log-probs of `pairs[i]` (from `reference_logps`).
pub fn dpo_loss_sum(
    policy: &Llama,
    tape: &Tape,
    pairs: &[&PairRow],
    refs: &[&RefLogps],
    cfg: &DpoConfig,
) -> Result<(Tensor, DpoSums)> {
    policy_pass(policy, Some(tape), pairs, refs, cfg)
}

//! `eval --task dpo`: the DPO loss and TRL's reward metrics of a policy against a reference over
//! preference pairs, each a mean over the pairs (every pair weighs the same, as in TRL's
//! evaluation). Nothing is recorded: both models run without a tape, `batch` pairs at a time.

use crate::data::rows::PairRow;
use crate::dpo::{policy_pass, reference_logps, DpoConfig, DpoSums, RefLogps};
use crate::error::{Result, TrainError};
use serde::Serialize;
use solar_model::Llama;

/// What `eval --task dpo --json` prints (TRL's names); `pairs` is not printed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DpoEval {
    pub loss: f64,
    #[serde(rename = "rewards/chosen")]
    pub rewards_chosen: f64,
    #[serde(rename = "rewards/rejected")]
    pub rewards_rejected: f64,
    #[serde(rename = "rewards/accuracies")]
    pub rewards_accuracies: f64,
    #[serde(rename = "rewards/margins")]
    pub rewards_margins: f64,
    #[serde(skip)]
    pub pairs: usize,
}

impl DpoEval {
    fn from_sums(s: &DpoSums) -> DpoEval {
        let m = s.means();
        let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
        DpoEval {
            loss: get("loss"),
            rewards_chosen: get("rewards/chosen"),
            rewards_rejected: get("rewards/rejected"),
            rewards_accuracies: get("rewards/accuracies"),
            rewards_margins: get("rewards/margins"),
            pairs: s.count,
        }
    }
}

/// Mean DPO loss and reward metrics of `policy` against `reference` over `pairs`.
pub fn eval_dpo(
    policy: &Llama,
    reference: &Llama,
    pairs: &[PairRow],
    cfg: &DpoConfig,
    batch: usize,
) -> Result<DpoEval> {
    cfg.validate()?;
    if pairs.is_empty() {
        return Err(TrainError::Msg("no preference pair to evaluate".into()));
    }
    if policy.config.vocab_size != reference.config.vocab_size {
        return Err(TrainError::Msg(format!(
            "the policy's vocabulary ({}) differs from the reference's ({})",
            policy.config.vocab_size, reference.config.vocab_size
        )));
    }
    let refs = reference_logps(reference, pairs, batch)?;
    let mut sums = DpoSums::default();
    for (chunk, ref_chunk) in pairs.chunks(batch).zip(refs.chunks(batch)) {
        let p: Vec<&PairRow> = chunk.iter().collect();
        let r: Vec<&RefLogps> = ref_chunk.iter().collect();
        let (_, s) = policy_pass(policy, None, &p, &r, cfg)?;
        sums.add(&s);
    }
    Ok(DpoEval::from_sums(&sums))
}

//! The trainer's settings, shared by pretrain, sft and dpo. What defines a run (optimizer,
//! schedule, batch geometry, seed, data) is written into every checkpoint, so `--resume` can
//! refuse a run whose settings differ and say which ones.

use crate::trainer::schedule::Schedule;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    pub schedule: String,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Global-norm clipping threshold; 0 turns it off.
    pub clip: f64,
    /// Optimizer steps; None = derived from `epochs`.
    pub steps: Option<usize>,
    pub epochs: Option<f64>,
    /// Micro-batch rows.
    pub batch: usize,
    pub grad_accum: usize,
    pub seq_len: usize,
    pub seed: u64,
    pub shuffle: bool,
    pub log_every: usize,
    pub eval_every: usize,
    pub save_every: usize,
    pub keep: usize,
    pub max_bad_steps: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: 3e-4,
            min_lr: 0.0,
            warmup: 0,
            schedule: "cosine".into(),
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            clip: 1.0,
            steps: None,
            epochs: None,
            batch: 8,
            grad_accum: 1,
            seq_len: 512,
            seed: 0,
            shuffle: true,
            log_every: 1,
            eval_every: 0,
            save_every: 0,
            keep: 3,
            max_bad_steps: 5,
        }
    }
}

/// Keys that do not change the trained weights: they may differ on resume.
const FREE_ON_RESUME: [&str; 5] = ["log_every", "eval_every", "save_every", "keep", "max_bad_steps"];

impl TrainConfig {
    pub fn schedule(&self) -> Schedule {
        self.schedule.parse().unwrap_or(Schedule::Cosine)
    }

    /// Rows per optimizer step.
    pub fn rows_per_step(&self) -> usize {
        self.batch * self.grad_accum
    }

    /// Optimizer steps for `rows` rows of data.
    pub fn total_steps(&self, rows: usize) -> usize {
        match (self.steps, self.epochs) {
            (Some(s), _) => s,
            (None, Some(e)) => ((e * rows as f64) / self.rows_per_step() as f64).ceil().max(1.0) as usize,
            (None, None) => rows.div_ceil(self.rows_per_step()).max(1),
        }
    }

    /// Checks the values make sense; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        let finite = [self.lr, self.min_lr, self.weight_decay, self.beta1, self.beta2, self.eps, self.clip];
        let step_rows = self.batch.checked_mul(self.grad_accum).and_then(|r| r.checked_mul(self.seq_len));
        let checks: [(bool, &str); 11] = [
            (
                finite.iter().all(|x| x.is_finite()) && self.epochs.is_none_or(f64::is_finite),
                "--lr, --min-lr, --weight-decay, --beta1, --beta2, --eps, --clip and --epochs must be finite numbers",
            ),
            (self.lr > 0.0 && self.lr.is_finite(), "--lr must be positive"),
            (self.min_lr >= 0.0 && self.min_lr <= self.lr, "--min-lr must be between 0 and --lr"),
            (self.schedule.parse::<Schedule>().is_ok(), "--schedule must be constant, linear or cosine"),
            (self.weight_decay >= 0.0, "--weight-decay must be >= 0"),
            (
                (0.0..1.0).contains(&self.beta1) && (0.0..1.0).contains(&self.beta2),
                "--beta1/--beta2 must be in [0, 1)",
            ),
            (self.eps > 0.0, "--eps must be positive"),
            (self.clip >= 0.0, "--clip must be >= 0 (0 turns clipping off)"),
            (
                self.batch > 0 && self.grad_accum > 0 && self.seq_len > 1,
                "--batch, --grad-accum must be >= 1, --seq-len >= 2",
            ),
            (step_rows.is_some(), "--batch x --grad-accum x --seq-len overflows: lower them"),
            (
                self.epochs.is_none_or(|e| e > 0.0) && self.steps != Some(0),
                "--steps/--epochs must be positive",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(msg.to_string()),
            None => Ok(()),
        }
    }

    /// The settings that must match for a resume, as a JSON object.
    pub fn identity(&self) -> Map<String, Value> {
        let Ok(Value::Object(mut m)) = serde_json::to_value(self) else { return Map::new() };
        for k in FREE_ON_RESUME {
            m.remove(k);
        }
        m
    }
}

/// Prefixes of identity keys added after checkpoints were first written: a checkpoint that
/// lacks one predates it, so its value is unknown rather than different.
const ADDED_LATER: [&str; 1] = ["model."];

/// Names of the keys whose values differ between two identities (a run's and a checkpoint's).
pub fn differences(now: &Map<String, Value>, saved: &Map<String, Value>) -> Vec<String> {
    let mut keys: Vec<&String> = now.keys().chain(saved.keys()).collect();
    keys.sort();
    keys.dedup();
    let unknown = |k: &str| !saved.contains_key(k) && ADDED_LATER.iter().any(|p| k.starts_with(p));
    keys.into_iter()
        .filter(|k| !unknown(k) && now.get(*k) != saved.get(*k))
        .map(|k| {
            let show = |v: Option<&Value>| v.map_or("(none)".to_string(), |v| v.to_string());
            format!("{k}: checkpoint {} vs now {}", show(saved.get(k)), show(now.get(k)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_model_key_missing_from_an_old_checkpoint_is_unknown_but_a_different_one_differs() {
        let now = map(json!({"lr": 1.0, "model.hidden_size": 64}));
        assert_eq!(differences(&now, &map(json!({"lr": 1.0}))), Vec::<String>::new());
        assert_eq!(
            differences(&now, &map(json!({"lr": 1.0, "model.hidden_size": 32}))),
            vec!["model.hidden_size: checkpoint 32 vs now 64".to_string()]
        );
        // Other keys keep counting when missing.
        assert_eq!(differences(&now, &map(json!({"model.hidden_size": 64}))).len(), 1);
    }
}

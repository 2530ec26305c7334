//! Learning-rate schedules. Warmup rises linearly to `lr` over `warmup` steps, counting the
//! first step as 1/warmup (llm.c's convention: no step is wasted at lr 0, unlike transformers'
//! schedulers whose first step uses 0); then constant, or linear or cosine decay towards
//! `min_lr` as transformers does it: progress (step - warmup) / (total - warmup), so the last
//! step still learns and `min_lr` is where the schedule would arrive one step later.

use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(Schedule::Constant),
            "linear" => Ok(Schedule::Linear),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(format!("unknown schedule '{s}' (constant, linear or cosine)")),
        }
    }
}

impl Schedule {
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Linear => "linear",
            Schedule::Cosine => "cosine",
        }
    }

    /// The learning rate of 0-based `step` out of `total`.
    pub fn lr(self, step: usize, total: usize, lr: f64, min_lr: f64, warmup: usize) -> f64 {
        if step < warmup {
            return lr * (step + 1) as f64 / warmup as f64;
        }
        let span = total.saturating_sub(warmup).max(1);
        let progress = ((step - warmup) as f64 / span as f64).min(1.0);
        match self {
            Schedule::Constant => lr,
            Schedule::Linear => lr - (lr - min_lr) * progress,
            Schedule::Cosine => {
                min_lr + 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * (lr - min_lr)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay_to_min_at_the_last_step() {
        let s = Schedule::Cosine;
        assert_eq!(s.lr(0, 10, 1.0, 0.1, 4), 0.25);
        assert_eq!(s.lr(3, 10, 1.0, 0.1, 4), 1.0);
        assert_eq!(s.lr(4, 10, 1.0, 0.1, 4), 1.0);
        // Six decay steps: the last is at progress 5/6, above min_lr.
        let last = 0.1 + 0.5 * (1.0 + (std::f64::consts::PI * 5.0 / 6.0).cos()) * 0.9;
        assert!((s.lr(9, 10, 1.0, 0.1, 4) - last).abs() < 1e-12);
        assert!((Schedule::Linear.lr(9, 10, 1.0, 0.0, 0) - 0.1).abs() < 1e-12);
        assert_eq!(Schedule::Constant.lr(7, 10, 0.5, 0.0, 2), 0.5);
    }
}

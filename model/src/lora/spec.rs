//! What a LoRA run adapts and how strongly: rank r, alpha, dropout, the targeted projections (by
//! PEFT's `target_modules` names) and rank-stabilized scaling. The names are PEFT's so that a
//! spec round-trips through adapter_config.json unchanged.

use std::fmt;

/// A projection of a decoder layer that LoRA can adapt, by PEFT's module name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// Every target, in the order transformers lists a layer's parameters (attention, then MLP).
pub const ALL_TARGETS: [Target; 7] =
    [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

impl Target {
    /// PEFT's `target_modules` name (the module's own name in transformers).
    pub fn peft_name(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The module's path inside a layer: `self_attn.q_proj`, `mlp.down_proj`, ...
    pub fn module(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// The target whose base weight is `model.layers.{i}.{suffix}` (suffix ends in `.weight`).
    pub fn of_weight_suffix(suffix: &str) -> Option<Target> {
        let module = suffix.strip_suffix(".weight")?;
        ALL_TARGETS.into_iter().find(|t| t.module() == module)
    }

    pub fn parse(name: &str) -> Option<Target> {
        ALL_TARGETS.into_iter().find(|t| t.peft_name() == name)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.peft_name())
    }
}

/// PEFT's defaults for a Llama when `target_modules` is not given.
pub const DEFAULT_TARGETS: [Target; 2] = [Target::Q, Target::V];

#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub r: usize,
    pub alpha: f64,
    /// Probability of zeroing an input element of the adapter path while training.
    pub dropout: f64,
    /// Sorted, without duplicates.
    pub targets: Vec<Target>,
    /// Scale by alpha / sqrt(r) (rank-stabilized LoRA) instead of alpha / r.
    pub rslora: bool,
}

impl LoraSpec {
    /// The factor the adapter path is multiplied by.
    pub fn scaling(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    pub fn targets(&self, t: Target) -> bool {
        self.targets.contains(&t)
    }

    /// Checks the values; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.r == 0 {
            return Err("--lora-r must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!("--lora-alpha must be a positive finite number, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("--lora-dropout must lie in [0, 1), got {}", self.dropout));
        }
        if self.targets.is_empty() {
            return Err("--lora-targets names no module".into());
        }
        Ok(())
    }

    /// The target names as PEFT writes `target_modules`.
    pub fn target_names(&self) -> Vec<&'static str> {
        self.targets.iter().map(|t| t.peft_name()).collect()
    }
}

/// `--lora-targets`: comma-separated PEFT module names, or `all-linear` (every projection of
/// every layer; PEFT's `all-linear` leaves the output head out, and so does Solar).
pub fn parse_targets(text: &str) -> Result<Vec<Target>, String> {
    let text = text.trim();
    if text == "all-linear" {
        return Ok(ALL_TARGETS.to_vec());
    }
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let t = Target::parse(part).ok_or_else(|| {
            let known: Vec<&str> = ALL_TARGETS.iter().map(|t| t.peft_name()).collect();
            format!("--lora-targets: unknown module '{part}'; known: {}, or all-linear", known.join(", "))
        })?;
        out.push(t);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_sorted_and_all_linear_is_every_projection() {
        assert_eq!(parse_targets("v_proj,q_proj,v_proj").unwrap(), vec![Target::Q, Target::V]);
        assert_eq!(parse_targets("all-linear").unwrap().len(), 7);
        assert!(parse_targets("q_proj,lm_head").unwrap_err().contains("lm_head"));
        assert!(parse_targets("").is_err());
    }

    #[test]
    fn scaling_is_alpha_over_r_or_over_sqrt_r_and_bad_values_are_refused() {
        let mut s =
            LoraSpec { r: 4, alpha: 8.0, dropout: 0.0, targets: DEFAULT_TARGETS.to_vec(), rslora: false };
        assert_eq!(s.scaling(), 2.0);
        s.rslora = true;
        assert_eq!(s.scaling(), 4.0);
        for bad in [f64::NAN, 0.0, -1.0, f64::INFINITY] {
            assert!(LoraSpec { alpha: bad, ..s.clone() }.validate().is_err());
        }
        for bad in [f64::NAN, 1.0, -0.1] {
            assert!(LoraSpec { dropout: bad, ..s.clone() }.validate().is_err());
        }
        assert!(LoraSpec { r: 0, ..s.clone() }.validate().is_err());
        assert!(s.validate().is_ok());
    }
}

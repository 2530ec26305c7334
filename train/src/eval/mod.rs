//! Evaluation tasks behind `solar-train eval --task ...`.

pub mod dpo;
pub mod lm;

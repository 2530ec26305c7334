//! Evaluation tasks behind `solar-train eval --task ...`.

pub mod lm;

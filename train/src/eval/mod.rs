//! Evaluation tasks behind `solar-train eval --task ...`.

pub mod choice;
pub mod dpo;
pub mod generate;
pub mod heatmap;
pub mod heatmap_svg;
pub mod layers;
pub mod lm;

//! solar-train: the training side of Solar (datasets, trainers, merging, evaluation) and the
//! op benchmark suite that `solar-train bench` runs.

pub mod bench;
pub mod byte_bar;
pub mod data;
pub mod demo;
pub mod dpo;
pub mod error;
pub mod eval;
pub mod merge;
pub mod pipeline;
pub mod trainer;

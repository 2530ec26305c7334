//! solar-train: the training side of Solar (datasets, trainers, merging, evaluation) and the
//! op benchmark suite that `solar-train bench` runs.

pub mod bench;

//! solar-train

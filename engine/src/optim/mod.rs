//! Optimizer kernels: the AdamW update and the global gradient norm with clipping. The trainer
//! (schedules, parameter groups, checkpoints) lives in solar-train and calls these.

pub mod adamw;
pub mod clip;

pub use adamw::{AdamW, AdamWConfig, Moments};
pub use clip::{clip_grad_norm, global_grad_norm, grad_sum_squares};

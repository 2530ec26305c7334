//! The engine's error type. Every shape, dtype or index problem is an `Err` that names the op
//! and the shapes involved, so a bad call never panics or reads out of bounds.

use crate::{DType, Device, Shape};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: shape mismatch: {lhs} vs {rhs}: {msg}")]
    ShapeMismatch { op: &'static str, lhs: Shape, rhs: Shape, msg: String },

    #[error("{op}: bad shape {shape}: {msg}")]
    BadShape { op: &'static str, shape: Shape, msg: String },

    #[error("{op}: dtype {got:?} not supported here (expected {expected})")]
    DType { op: &'static str, got: DType, expected: &'static str },

    #[error("{op}: dtype mismatch: {lhs:?} vs {rhs:?}")]
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },

    #[error("{op}: index {index} out of range 0..{bound} at position {position}")]
    IndexOutOfRange { op: &'static str, index: i64, bound: usize, position: usize },

    #[error("{op}: {device} is not available: {msg}")]
    DeviceUnavailable { op: &'static str, device: Device, msg: String },

    #[error("{op}: the tensor is on {device}: {msg}")]
    WrongDevice { op: &'static str, device: Device, msg: String },

    #[error(
        "{op} has no backward, but one of its inputs needs a gradient; \
         detach the input or run it outside the tape"
    )]
    NoBackward { op: &'static str },

    #[error("{op}: inputs are recorded on two different tapes")]
    TwoTapes { op: &'static str },

    #[error("backward: {0}")]
    Backward(String),

    #[error("{op}: {msg}")]
    Invalid { op: &'static str, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid { op, msg: msg.into() }
    }
    pub fn bad_shape(op: &'static str, shape: &Shape, msg: impl Into<String>) -> Self {
        Error::BadShape { op, shape: shape.clone(), msg: msg.into() }
    }
    pub fn mismatch(op: &'static str, lhs: &Shape, rhs: &Shape, msg: impl Into<String>) -> Self {
        Error::ShapeMismatch { op, lhs: lhs.clone(), rhs: rhs.clone(), msg: msg.into() }
    }
}

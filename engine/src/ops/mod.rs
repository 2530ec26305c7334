//! Every op, forward and backward side by side, one file per op family. Each op validates its
//! inputs (errors name the op and the shapes), computes on the CPU fast path and records itself
//! on the tape when an input is on one.

pub mod attention;
mod attention_cpu;
pub mod attention_decode;
pub mod binary;
pub mod cross_entropy;
pub mod embedding;
pub mod kernels;
pub mod layout;
pub mod linear_cross_entropy;
pub mod linear_logprob;
pub mod logprob;
pub mod matmul;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod softmax;
pub mod swiglu;
pub mod transfer;
pub mod unary;

pub use attention::{attention, AttentionMask};
pub use attention_decode::{attention_decode, attention_decode_slices};
pub use binary::{add, mul, sub};
pub use cross_entropy::{cross_entropy, cross_entropy_mean, CrossEntropy, IGNORE_INDEX};
pub use embedding::embedding;
pub use layout::{index_select, permute};
pub use linear_cross_entropy::{
    linear_cross_entropy, linear_cross_entropy_chunked, linear_cross_entropy_tiled,
};
pub use linear_logprob::{linear_sequence_logprobs, linear_sequence_logprobs_tiled};
pub use logprob::{sequence_logprobs, SequenceLogProbs};
pub use matmul::{matmul, matmul_t};
pub use reduce::{argmax_last, mean, mean_last, sum, sum_last};
pub use rmsnorm::rmsnorm;
pub use rope::rope;
pub use softmax::{gather_last, log_softmax, softmax};
pub use swiglu::swiglu;
pub use unary::{add_scalar, exp, log, powf, scale, sigmoid};

use crate::error::{Error, Result};
use crate::{DType, Tensor};

/// The CPU computes in f32 (f64 for gradient checks); bf16 is a storage type there.
pub(crate) fn check_float(op: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        got => Err(Error::DType { op, got, expected: "f32 or f64 (cast bf16 with to_dtype first)" }),
    }
}

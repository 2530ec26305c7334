//! solar-engine: Solar's tensor engine. Tensors (contiguous, row-major, Arc-shared), a tape
//! autograd, and every op SOLAR training needs with forward and backward side by side. The CPU
//! backend is the reference: a loop oracle (`oracle`) and a parallel fast path (`ops`) that is
//! bitwise deterministic at any thread count. The CUDA backend (`cuda`) keeps tensors in device
//! memory and runs each op with Solar's own kernels (kernels/cu) on the same tape.

pub mod alloc_stats;
pub mod comm;
pub mod cuda;
pub mod device;
pub mod dtype;
pub mod error;
pub mod kernel_args;
pub mod ops;
pub mod optim;
pub mod oracle;
pub mod par;
pub mod recompute;
pub mod rng;
pub mod shape;
pub mod storage;
pub mod tape;
pub mod tensor;

pub use device::Device;
pub use dtype::{DType, Element, Float};
pub use error::{Error, Result};
pub use rng::Rng;
pub use shape::Shape;
pub use storage::{CpuStorage, Storage};
pub use tape::{Grads, Tape};
pub use tensor::{Tensor, TensorId};

/// Runs `f` on a rayon pool of `threads` threads (tests and `--threads`).
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::invalid("with_threads", e.to_string()))?;
    Ok(pool.install(f))
}

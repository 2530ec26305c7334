//! Launchers of kernels/cu/swiglu.cu: y = silu(gate) * up element-wise (bf16, math in f32) and
//! its backward (dgate, dup) from dy. Grid-stride launches over 8-element chunks.

use super::launch::{Elem as E, Param as P};
use super::{grid_1d, Arg, CudaData, CudaStorage, Kernel};
use crate::error::{Error, Result};
use half::bf16;

/// gate, up, y, n.
pub const SWIGLU_FWD: Kernel = Kernel {
    module: "swiglu",
    name: "swiglu_fwd_bf16",
    params: &[P::ConstPtr(E::BF16), P::ConstPtr(E::BF16), P::MutPtr(E::BF16), P::I64],
};
/// gate, up, dy, dgate, dup, n.
pub const SWIGLU_BWD: Kernel = Kernel {
    module: "swiglu",
    name: "swiglu_bwd_bf16",
    params: &[
        P::ConstPtr(E::BF16),
        P::ConstPtr(E::BF16),
        P::ConstPtr(E::BF16),
        P::MutPtr(E::BF16),
        P::MutPtr(E::BF16),
        P::I64,
    ],
};
pub const KERNELS: &[&Kernel] = &[&SWIGLU_FWD, &SWIGLU_BWD];

/// silu(gate) * up, element-wise (bf16, any shape, both the same).
pub fn swiglu_fwd(gate: &CudaStorage, up: &CudaStorage) -> Result<CudaStorage> {
    let op = "swiglu";
    let (g, u) = (gate.bf16(op)?, up.bf16(op)?);
    if g.len() != u.len() {
        return Err(Error::invalid(op, format!("gate has {} elements, up {}", g.len(), u.len())));
    }
    let gpu = &gate.gpu;
    let n = g.len();
    let mut y = gpu.alloc::<bf16>(n)?;
    if n > 0 {
        let args = [Arg::ptr(g), Arg::ptr(u), Arg::ptr_mut(&mut y), Arg::i64(n as i64)];
        // SAFETY: gate, up and y hold n elements; the kernel writes each y[i] once.
        unsafe { gpu.launch(op, &SWIGLU_FWD, grid_1d(n.div_ceil(8)), &args) }?;
    }
    Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(y)))
}

/// (dgate, dup) of swiglu for the incoming gradient `dy` (all bf16, the same length).
pub fn swiglu_bwd(
    gate: &CudaStorage,
    up: &CudaStorage,
    dy: &CudaStorage,
) -> Result<(CudaStorage, CudaStorage)> {
    let op = "swiglu backward";
    let (g, u, d) = (gate.bf16(op)?, up.bf16(op)?, dy.bf16(op)?);
    if g.len() != u.len() || g.len() != d.len() {
        return Err(Error::invalid(op, "gate, up and dy must have the same number of elements"));
    }
    let gpu = &gate.gpu;
    let n = g.len();
    let mut dg = gpu.alloc::<bf16>(n)?;
    let mut du = gpu.alloc::<bf16>(n)?;
    if n > 0 {
        let args = [
            Arg::ptr(g),
            Arg::ptr(u),
            Arg::ptr(d),
            Arg::ptr_mut(&mut dg),
            Arg::ptr_mut(&mut du),
            Arg::i64(n as i64),
        ];
        // SAFETY: all five buffers hold n elements; the kernel writes each dg[i], du[i] once.
        unsafe { gpu.launch(op, &SWIGLU_BWD, grid_1d(n.div_ceil(8)), &args) }?;
    }
    Ok((CudaStorage::new(gpu.clone(), CudaData::BF16(dg)), CudaStorage::new(gpu.clone(), CudaData::BF16(du))))
}

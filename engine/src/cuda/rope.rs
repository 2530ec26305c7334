//! Launchers of kernels/cu/rope.cu: rotary position embedding of x [tokens, heads, D] bf16 in
//! HF's rotate_half layout at positions [tokens] (i32, or u32 below 2^31 read as i32). The
//! backward is the same rotation by the negated angle, applied to dy. The inv_freq table
//! (D/2 f32) lives in dynamic shared memory.

use super::launch::{Elem as E, Param as P};
use super::rmsnorm::{c_i32, cfg};
use super::{Arg, CudaData, CudaStorage, Kernel};
use crate::error::{Error, Result};
use half::bf16;

/// x, pos, y, N (tokens), H, D, theta.
const PARAMS: &[P] =
    &[P::ConstPtr(E::BF16), P::ConstPtr(E::I32), P::MutPtr(E::BF16), P::I64, P::I32, P::I32, P::F32];
pub const ROPE_FWD: Kernel = Kernel { module: "rope", name: "rope_fwd_bf16", params: PARAMS };
/// dy, pos, dx, N, H, D, theta.
pub const ROPE_BWD: Kernel = Kernel { module: "rope", name: "rope_bwd_bf16", params: PARAMS };
pub const KERNELS: &[&Kernel] = &[&ROPE_FWD, &ROPE_BWD];

/// RoPE of `x` [tokens, heads, d] bf16 at `pos` [tokens]; `inverse` rotates by the negated
/// angle (the backward, applied to dy).
pub fn rope(
    x: &CudaStorage,
    pos: &CudaStorage,
    tokens: usize,
    heads: usize,
    d: usize,
    theta: f64,
    inverse: bool,
) -> Result<CudaStorage> {
    let op = if inverse { "rope backward" } else { "rope" };
    let xs = x.bf16(op)?;
    if xs.len() != tokens * heads * d || pos.len() != tokens || d & 1 != 0 {
        return Err(Error::invalid(op, format!("buffers do not match [{tokens}, {heads}, {d}] with D even")));
    }
    let gpu = &x.gpu;
    let mut y = gpu.alloc::<bf16>(xs.len())?;
    if xs.is_empty() {
        return Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(y)));
    }
    let smem = d / 2 * 4;
    let kernel = if inverse { &ROPE_BWD } else { &ROPE_FWD };
    let w = if d & 15 == 0 { 8 } else { 1 };
    let items = tokens * (d / 2 / w);
    let config = cfg(items.div_ceil(256).min(gpu.sm_count * 16), 256, smem);
    let p = match &pos.data {
        CudaData::I32(p) => Arg::ptr(p),
        CudaData::U32(p) => Arg::u32_as_i32(p),
        _ => return Err(Error::DType { op, got: pos.dtype(), expected: "i32 or u32 positions" }),
    };
    let args = [
        Arg::ptr(xs),
        p,
        Arg::ptr_mut(&mut y),
        Arg::i64(tokens as i64),
        Arg::i32(c_i32(op, heads)?),
        Arg::i32(c_i32(op, d)?),
        Arg::f32(theta as f32),
    ];
    // SAFETY: x and y hold tokens*heads*d bf16, pos tokens 32-bit ints; smem is the d/2 floats of
    // the inv_freq table; the kernel writes every element of y.
    unsafe { gpu.launch(op, kernel, config, &args) }?;
    Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(y)))
}

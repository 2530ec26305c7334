//! Launchers of kernels/cu/attention.cu: causal flash attention with GQA, document ids and an
//! optional sliding window, bf16 q, k, v [B, T, H|Hkv, D] (D 16, 32, 64 or 128), f32 statistics.
//! Forward: O bf16 [B, T, H, D] and the logsumexp f32 [B, H, T] the backward recomputes P from.
//! Backward: delta = rowsum(dO * O) [B, H, T], then dq (one block per query block and head),
//! then dk and dv (one block per key block and kv head, summing its query heads in order).
//! No atomics: every output element is written once, so two runs are bitwise equal.

use super::launch::{Elem as E, Param as P};
use super::{Arg, CudaData, CudaStorage, DeviceBuffer, Gpu, Kernel, LaunchConfig};
use crate::error::{Error, Result};
pub use crate::kernel_args::AttnDims;
use half::bf16;

/// q, k, v, doc (or null), out, lse, T, H, Hkv, window, scale.
const FWD: &[P] = &[
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::I32),
    P::MutPtr(E::BF16),
    P::MutPtr(E::F32),
    P::I32,
    P::I32,
    P::I32,
    P::I32,
    P::F32,
];
/// q, k, v, doc, dout, lse, delta, dq, T, H, Hkv, window, scale.
const DQ: &[P] = &[
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::I32),
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::F32),
    P::ConstPtr(E::F32),
    P::MutPtr(E::BF16),
    P::I32,
    P::I32,
    P::I32,
    P::I32,
    P::F32,
];
/// q, k, v, doc, dout, lse, delta, dk, dv, T, H, Hkv, window, scale.
const DKDV: &[P] = &[
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::I32),
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::F32),
    P::ConstPtr(E::F32),
    P::MutPtr(E::BF16),
    P::MutPtr(E::BF16),
    P::I32,
    P::I32,
    P::I32,
    P::I32,
    P::F32,
];
const fn k(name: &'static str, params: &'static [P]) -> Kernel {
    Kernel { module: "attention", name, params }
}
/// Per head dim D = 16, 32, 64, 128 (`d_index`).
pub const ATTENTION_FWD: [Kernel; 4] = [
    k("attention_fwd_d16_bf16", FWD),
    k("attention_fwd_d32_bf16", FWD),
    k("attention_fwd_d64_bf16", FWD),
    k("attention_fwd_d128_bf16", FWD),
];
pub const ATTENTION_BWD_DQ: [Kernel; 4] = [
    k("attention_bwd_dq_d16_bf16", DQ),
    k("attention_bwd_dq_d32_bf16", DQ),
    k("attention_bwd_dq_d64_bf16", DQ),
    k("attention_bwd_dq_d128_bf16", DQ),
];
pub const ATTENTION_BWD_DKDV: [Kernel; 4] = [
    k("attention_bwd_dkdv_d16_bf16", DKDV),
    k("attention_bwd_dkdv_d32_bf16", DKDV),
    k("attention_bwd_dkdv_d64_bf16", DKDV),
    k("attention_bwd_dkdv_d128_bf16", DKDV),
];
/// out, dout, delta, T, H, D, rows.
pub const ATTENTION_BWD_DELTA: Kernel = k(
    "attention_bwd_delta_bf16",
    &[P::ConstPtr(E::BF16), P::ConstPtr(E::BF16), P::MutPtr(E::F32), P::I32, P::I32, P::I32, P::I64],
);
pub const KERNELS: &[&Kernel] = &[
    &ATTENTION_FWD[0],
    &ATTENTION_FWD[1],
    &ATTENTION_FWD[2],
    &ATTENTION_FWD[3],
    &ATTENTION_BWD_DELTA,
    &ATTENTION_BWD_DQ[0],
    &ATTENTION_BWD_DQ[1],
    &ATTENTION_BWD_DQ[2],
    &ATTENTION_BWD_DQ[3],
    &ATTENTION_BWD_DKDV[0],
    &ATTENTION_BWD_DKDV[1],
    &ATTENTION_BWD_DKDV[2],
    &ATTENTION_BWD_DKDV[3],
];

/// The index of head dim `d` in the per-D kernel tables (`AttnDims::check` admitted it).
fn d_index(d: usize) -> usize {
    match d {
        16 => 0,
        32 => 1,
        64 => 2,
        _ => 3,
    }
}

/// Queries (forward, dq) or keys (dk/dv) per thread block; the kernels' 64-row tiles.
const BLOCK: usize = 64;
/// Threads per block of the tile kernels (4 warps of 16 rows).
const THREADS: u32 = 128;

impl AttnDims {
    fn check(&self, op: &'static str) -> Result<()> {
        if ![16, 32, 64, 128].contains(&self.d) {
            return Err(Error::invalid(
                op,
                format!("head dim {} on CUDA (the kernels have 16, 32, 64 and 128)", self.d),
            ));
        }
        if self.hkv == 0 || self.h / self.hkv * self.hkv != self.h {
            return Err(Error::invalid(op, format!("{} query heads for {} kv heads", self.h, self.hkv)));
        }
        if self.t > i32::MAX as usize / 2 || self.h > 65535 || self.b > 65535 {
            return Err(Error::invalid(
                op,
                format!(
                    "B {} T {} H {} exceed the kernels' grid (B, H <= 65535, T < 2^30)",
                    self.b, self.t, self.h
                ),
            ));
        }
        Ok(())
    }
    /// The kernels' window argument: 0 for none (a window of T or more is none as well).
    fn window_arg(&self) -> i32 {
        self.window.map_or(0, |w| w.min(i32::MAX as usize) as i32)
    }
    fn scale(&self) -> f32 {
        (1.0 / (self.d as f64).sqrt()) as f32
    }
    fn grid(&self, heads: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.t.div_ceil(BLOCK) as u32, heads as u32, self.b as u32),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// Document ids [B, T] as the kernels read them (i32 or u32, compared for equality only).
pub enum DocIds<'a> {
    None,
    I32(&'a DeviceBuffer<i32>),
    U32(&'a DeviceBuffer<u32>),
}

impl<'a> DocIds<'a> {
    /// The ids held by `s` (i32 or u32), or an error naming the dtype.
    pub fn of(op: &'static str, s: &'a CudaStorage) -> Result<DocIds<'a>> {
        match &s.data {
            CudaData::I32(x) => Ok(DocIds::I32(x)),
            CudaData::U32(x) => Ok(DocIds::U32(x)),
            _ => Err(Error::DType { op, got: s.dtype(), expected: "i32 or u32 document ids" }),
        }
    }
    fn len(&self) -> Option<usize> {
        match self {
            DocIds::None => None,
            DocIds::I32(x) => Some(x.len()),
            DocIds::U32(x) => Some(x.len()),
        }
    }

    /// The kernels' `const int* doc` argument: null for none.
    fn arg(&self) -> Arg<'a> {
        match self {
            DocIds::None => Arg::null(),
            DocIds::I32(x) => Arg::ptr(*x),
            DocIds::U32(x) => Arg::u32_as_i32(*x),
        }
    }
}

fn check_lens(op: &'static str, dims: &AttnDims, q: usize, k: usize, v: usize, doc: &DocIds) -> Result<()> {
    if q != dims.q_len() || k != dims.kv_len() || v != dims.kv_len() {
        return Err(Error::invalid(op, format!("{q}, {k}, {v} elements of q, k, v for {dims:?}")));
    }
    if let Some(n) = doc.len() {
        if n != dims.b * dims.t {
            return Err(Error::invalid(op, format!("{n} document ids for B {} x T {}", dims.b, dims.t)));
        }
    }
    Ok(())
}

/// (out bf16 [B, T, H, D], lse f32 [B, H, T]).
pub fn forward(
    gpu: &Gpu,
    q: &DeviceBuffer<bf16>,
    k: &DeviceBuffer<bf16>,
    v: &DeviceBuffer<bf16>,
    doc: &DocIds,
    dims: &AttnDims,
) -> Result<(DeviceBuffer<bf16>, DeviceBuffer<f32>)> {
    let op = "cuda attention";
    dims.check(op)?;
    check_lens(op, dims, q.len(), k.len(), v.len(), doc)?;
    let mut out = gpu.alloc::<bf16>(dims.q_len())?;
    let mut lse = gpu.alloc::<f32>(dims.rows())?;
    if dims.q_len() == 0 {
        return Ok((out, lse));
    }
    let args = [
        Arg::ptr(q),
        Arg::ptr(k),
        Arg::ptr(v),
        doc.arg(),
        Arg::ptr_mut(&mut out),
        Arg::ptr_mut(&mut lse),
        Arg::i32(dims.t as i32),
        Arg::i32(dims.h as i32),
        Arg::i32(dims.hkv as i32),
        Arg::i32(dims.window_arg()),
        Arg::f32(dims.scale()),
    ];
    // SAFETY: q, out hold B*T*H*D elements, k, v B*T*Hkv*D, doc B*T, lse B*H*T (checked above);
    // every block writes its own 64 query rows of one head, rows >= T are never stored.
    unsafe { gpu.launch(op, &ATTENTION_FWD[d_index(dims.d)], dims.grid(dims.h), &args) }?;
    Ok((out, lse))
}

/// Query rows per block of the key-side kernel (attn::dkdv_bq).
fn dkdv_bq(d: usize) -> usize {
    if d == 128 {
        32
    } else {
        64
    }
}

/// Dynamic shared memory of attention_bwd_dkdv_d{D}_bf16 (K, V tiles of 64 rows, Q, dO tiles of
/// BQ rows, rows of D + 8 bf16; lse, delta, query document ids [BQ]; key document ids [64]).
fn dkdv_smem(d: usize) -> usize {
    let bq = dkdv_bq(d);
    (2 * BLOCK + 2 * bq) * (d + 8) * 2 + bq * 4 * 3 + BLOCK * 4
}

/// (dq [B, T, H, D], dk, dv [B, T, Hkv, D]), bf16, from the forward's inputs, out and lse and
/// the output gradient dout (bf16 [B, T, H, D]).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Gpu,
    q: &DeviceBuffer<bf16>,
    k: &DeviceBuffer<bf16>,
    v: &DeviceBuffer<bf16>,
    doc: &DocIds,
    out: &DeviceBuffer<bf16>,
    lse: &DeviceBuffer<f32>,
    dout: &DeviceBuffer<bf16>,
    dims: &AttnDims,
) -> Result<(DeviceBuffer<bf16>, DeviceBuffer<bf16>, DeviceBuffer<bf16>)> {
    let op = "cuda attention backward";
    dims.check(op)?;
    check_lens(op, dims, q.len(), k.len(), v.len(), doc)?;
    if out.len() != dims.q_len() || dout.len() != dims.q_len() || lse.len() != dims.rows() {
        return Err(Error::invalid(
            op,
            format!("{} out, {} dout, {} lse elements for {dims:?}", out.len(), dout.len(), lse.len()),
        ));
    }
    let mut dq = gpu.alloc::<bf16>(dims.q_len())?;
    let mut dk = gpu.alloc::<bf16>(dims.kv_len())?;
    let mut dv = gpu.alloc::<bf16>(dims.kv_len())?;
    if dims.q_len() == 0 {
        return Ok((dq, dk, dv));
    }
    let (t, h, hkv, d) = (dims.t as i32, dims.h as i32, dims.hkv as i32, dims.d as i32);
    let (w, scale) = (dims.window_arg(), dims.scale());
    let di = d_index(dims.d);

    // delta = rowsum(dO * O) [B, H, T]: one warp per (token, head) row, 8 rows per 256-thread block.
    let mut delta = gpu.alloc::<f32>(dims.rows())?;
    let cfg = LaunchConfig {
        grid_dim: (dims.rows().div_ceil(8) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let args = [
        Arg::ptr(out),
        Arg::ptr(dout),
        Arg::ptr_mut(&mut delta),
        Arg::i32(t),
        Arg::i32(h),
        Arg::i32(d),
        Arg::i64(dims.rows() as i64),
    ];
    // SAFETY: out, dout hold rows*D elements, delta rows; one warp writes each row's delta.
    unsafe { gpu.launch(op, &ATTENTION_BWD_DELTA, cfg, &args) }?;

    let args = [
        Arg::ptr(q),
        Arg::ptr(k),
        Arg::ptr(v),
        doc.arg(),
        Arg::ptr(dout),
        Arg::ptr(lse),
        Arg::ptr(&delta),
        Arg::ptr_mut(&mut dq),
        Arg::i32(t),
        Arg::i32(h),
        Arg::i32(hkv),
        Arg::i32(w),
        Arg::f32(scale),
    ];
    // SAFETY: lengths checked above; each block writes the dq rows of its 64 queries of one head.
    unsafe { gpu.launch(op, &ATTENTION_BWD_DQ[di], dims.grid(dims.h), &args) }?;

    let smem = dkdv_smem(dims.d);
    let cfg = LaunchConfig { shared_mem_bytes: smem as u32, ..dims.grid(dims.hkv) };
    let args = [
        Arg::ptr(q),
        Arg::ptr(k),
        Arg::ptr(v),
        doc.arg(),
        Arg::ptr(dout),
        Arg::ptr(lse),
        Arg::ptr(&delta),
        Arg::ptr_mut(&mut dk),
        Arg::ptr_mut(&mut dv),
        Arg::i32(t),
        Arg::i32(h),
        Arg::i32(hkv),
        Arg::i32(w),
        Arg::f32(scale),
    ];
    // SAFETY: lengths checked above; each block writes the dk and dv rows of its 64 keys of one
    // kv head, summed over the head's query heads inside the block.
    unsafe { gpu.launch(op, &ATTENTION_BWD_DKDV[di], cfg, &args) }?;
    Ok((dq, dk, dv))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher's block shape and dynamic shared memory are the kernels' (checked by
    /// NVRTC's front end, no GPU): a drift would launch too little shared memory.
    #[test]
    fn compile_launch_constants_match_attention_cu() {
        let mut asserts = format!("static_assert(attn::NT == {THREADS}, \"threads per block\");\n");
        for d in [16, 32, 64, 128] {
            asserts += &format!(
                "static_assert(attn::dkdv_bq({d}) == {}, \"dkdv query block, D={d}\");\n\
                 static_assert(attn::dkdv_smem<{d}, attn::dkdv_bq({d})>() == {}, \"dkdv smem, D={d}\");\n",
                dkdv_bq(d),
                dkdv_smem(d)
            );
        }
        solar_kernels::check_launch_constants("attention", &asserts, "sm_90").unwrap();
    }
}

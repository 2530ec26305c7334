//! Launchers of kernels/cu/attention.cu: causal flash attention with GQA, document ids and an
//! optional sliding window, bf16 q, k, v [B, T, H|Hkv, D] (D 16, 32, 64 or 128), f32 statistics.
//! Forward: O bf16 [B, T, H, D] and the logsumexp f32 [B, H, T] the backward recomputes P from.
//! Backward: delta = rowsum(dO * O) [B, H, T], then dq (one block per query block and head),
//! then dk and dv (one block per key block and kv head, summing its query heads in order).
//! No atomics: every output element is written once, so two runs are bitwise equal.

use super::{launch_err, CudaData, CudaSlice, CudaStorage, Gpu, LaunchConfig, PushKernelArg};
use crate::error::{Error, Result};
use half::bf16;

/// Queries (forward, dq) or keys (dk/dv) per thread block; the kernels' 64-row tiles.
const BLOCK: usize = 64;
/// Threads per block of the tile kernels (4 warps of 16 rows).
const THREADS: u32 = 128;

/// Sizes and the window of one attention call (document ids travel separately, on the GPU).
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub hkv: usize,
    pub d: usize,
    /// Mistral's sliding window (query i sees keys j with i - j < window); None: no window.
    pub window: Option<usize>,
}

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
    fn q_len(&self) -> usize {
        self.b * self.t * self.h * self.d
    }
    fn kv_len(&self) -> usize {
        self.b * self.t * self.hkv * self.d
    }
    fn rows(&self) -> usize {
        self.b * self.h * self.t
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
    I32(&'a CudaSlice<i32>),
    U32(&'a CudaSlice<u32>),
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
}

fn push_doc<'a>(b: &mut cudarc::driver::LaunchArgs<'a>, doc: &'a DocIds<'a>, null: &'a u64) {
    match doc {
        DocIds::None => b.arg(null),
        DocIds::I32(x) => b.arg(*x),
        DocIds::U32(x) => b.arg(*x),
    };
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
    q: &CudaSlice<bf16>,
    k: &CudaSlice<bf16>,
    v: &CudaSlice<bf16>,
    doc: &DocIds,
    dims: &AttnDims,
) -> Result<(CudaSlice<bf16>, CudaSlice<f32>)> {
    let op = "cuda attention";
    dims.check(op)?;
    check_lens(op, dims, q.len(), k.len(), v.len(), doc)?;
    let mut out = gpu.alloc::<bf16>(dims.q_len())?;
    let mut lse = gpu.alloc::<f32>(dims.rows())?;
    if dims.q_len() == 0 {
        return Ok((out, lse));
    }
    let f = gpu.func("attention", &format!("attention_fwd_d{}_bf16", dims.d))?;
    let (t, h, hkv, w, scale, null) =
        (dims.t as i32, dims.h as i32, dims.hkv as i32, dims.window_arg(), dims.scale(), 0u64);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(q).arg(k).arg(v);
    push_doc(&mut b, doc, &null);
    // SAFETY: q, out hold B*T*H*D elements, k, v B*T*Hkv*D, doc B*T, lse B*H*T (checked above);
    // every block writes its own 64 query rows of one head, rows >= T are never stored.
    unsafe {
        b.arg(&mut out).arg(&mut lse).arg(&t).arg(&h).arg(&hkv).arg(&w).arg(&scale).launch(dims.grid(dims.h))
    }
    .map_err(launch_err(op))?;
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
    q: &CudaSlice<bf16>,
    k: &CudaSlice<bf16>,
    v: &CudaSlice<bf16>,
    doc: &DocIds,
    out: &CudaSlice<bf16>,
    lse: &CudaSlice<f32>,
    dout: &CudaSlice<bf16>,
    dims: &AttnDims,
) -> Result<(CudaSlice<bf16>, CudaSlice<bf16>, CudaSlice<bf16>)> {
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
    let (w, scale, null) = (dims.window_arg(), dims.scale(), 0u64);

    // delta = rowsum(dO * O): one warp per (token, head) row, 8 rows per 256-thread block.
    let mut delta = gpu.alloc::<f32>(dims.rows())?;
    let rows = dims.rows() as i64;
    let f = gpu.func("attention", "attention_bwd_delta_bf16")?;
    let cfg = LaunchConfig {
        grid_dim: (dims.rows().div_ceil(8) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: out, dout hold rows*D elements, delta rows; one warp writes each row's delta.
    unsafe {
        gpu.stream
            .launch_builder(&f)
            .arg(out)
            .arg(dout)
            .arg(&mut delta)
            .arg(&t)
            .arg(&h)
            .arg(&d)
            .arg(&rows)
            .launch(cfg)
    }
    .map_err(launch_err(op))?;

    let f = gpu.func("attention", &format!("attention_bwd_dq_d{}_bf16", dims.d))?;
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(q).arg(k).arg(v);
    push_doc(&mut b, doc, &null);
    // SAFETY: lengths checked above; each block writes the dq rows of its 64 queries of one head.
    unsafe {
        b.arg(dout)
            .arg(lse)
            .arg(&delta)
            .arg(&mut dq)
            .arg(&t)
            .arg(&h)
            .arg(&hkv)
            .arg(&w)
            .arg(&scale)
            .launch(dims.grid(dims.h))
    }
    .map_err(launch_err(op))?;

    let smem = dkdv_smem(dims.d);
    let f = gpu.func_smem(op, "attention", &format!("attention_bwd_dkdv_d{}_bf16", dims.d), smem)?;
    let cfg = LaunchConfig { shared_mem_bytes: smem as u32, ..dims.grid(dims.hkv) };
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(q).arg(k).arg(v);
    push_doc(&mut b, doc, &null);
    // SAFETY: lengths checked above; each block writes the dk and dv rows of its 64 keys of one
    // kv head, summed over the head's query heads inside the block.
    unsafe {
        b.arg(dout)
            .arg(lse)
            .arg(&delta)
            .arg(&mut dk)
            .arg(&mut dv)
            .arg(&t)
            .arg(&h)
            .arg(&hkv)
            .arg(&w)
            .arg(&scale)
            .launch(cfg)
    }
    .map_err(launch_err(op))?;
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

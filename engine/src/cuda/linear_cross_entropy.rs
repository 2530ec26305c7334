//! The fused lm_head + cross-entropy on CUDA (ops/linear_cross_entropy.rs holds the op, its
//! CPU path and the algorithm). No kernels of its own: it drives matmul.cu and
//! cross_entropy.cu over row chunks, so it lives beside their launchers, and the op never
//! touches device copies or memsets. h [N, C] and W [V, C] are bf16, targets [N] i32 on the
//! device (validated on the host, -100 ignored). Each chunk of rows is one logits tile
//! [rows, V] bf16 from the tensor-core gemm (the vocabulary is not blocked, so W is used in
//! place): the forward keeps an online (max, sum-exp, target logit) per row and then one
//! logsumexp per row (f32); the backward recomputes each tile, turns it into
//! d = g * (softmax - onehot) in place, then dh[rows] = d W and dW += d^T h[rows] (f32
//! accumulation over row chunks in order, bf16 at the end). Chunks run in order, so results are
//! bitwise reproducible. The forward's per-row losses also serve per-sequence log-probs (the
//! op sums them per sequence), whose backward scales each row by its own value (`Scale::Rows`).

use super::cross_entropy::{chunk_finish, chunk_forward, cross_entropy_backward_in_place, RowScale};
use super::elementwise::cast;
use super::matmul::gemm;
use super::reduce::sum_all;
use super::{CudaData, CudaStorage, DeviceBuffer, Gpu};
use crate::error::Result;
use crate::kernel_args::MatmulDims;
use crate::DType;
use half::bf16;
use std::sync::Arc;

/// The problem: h [n, c], W [v, c], `rows` rows of h per logits tile.
#[derive(Clone, Copy, Debug)]
pub struct LinearCe {
    pub n: usize,
    pub v: usize,
    pub c: usize,
    pub rows: usize,
}

impl LinearCe {
    /// (start, end) of every row chunk.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> {
        let (n, size) = (self.n, self.rows.max(1));
        (0..n).step_by(size).map(move |s| (s, (s + size).min(n)))
    }
}

/// h[r0..r1] [rows, C]: None when the chunk is all of h (use h itself), else a device copy (the
/// gemm takes whole buffers; a chunk of h is small beside its logits tile).
fn rows_of(
    gpu: &Gpu,
    h: &DeviceBuffer<bf16>,
    c: usize,
    (r0, r1): (usize, usize),
) -> Result<Option<DeviceBuffer<bf16>>> {
    if r0 == 0 && r1 * c == h.len() {
        return Ok(None);
    }
    let mut out = gpu.alloc::<bf16>((r1 - r0) * c)?;
    gpu.copy(&h.slice(r0 * c..r1 * c), &mut out)?;
    Ok(Some(out))
}

/// The logits tile [rows, V] = h[rows] W^T, bf16.
fn tile_logits(
    gpu: &Gpu,
    hr: &DeviceBuffer<bf16>,
    w: &DeviceBuffer<bf16>,
    rows: usize,
    p: &LinearCe,
) -> Result<DeviceBuffer<bf16>> {
    let mut logits = gpu.alloc::<bf16>(rows * p.v)?;
    let d = MatmulDims { batch: 1, m: rows, n: p.v, k: p.c, b_shared: false };
    gemm(gpu, hr, w, &mut logits, d, false, true, false)?;
    Ok(logits)
}

/// (per-row losses loss [N], lse [N], both f32; ignored rows 0): the op sums them (the
/// cross-entropy) or sums them per sequence with scale -1 (log-probs).
pub fn forward_rows(
    gpu: &Arc<Gpu>,
    h: &DeviceBuffer<bf16>,
    w: &DeviceBuffer<bf16>,
    targets: &DeviceBuffer<i32>,
    p: LinearCe,
) -> Result<(DeviceBuffer<f32>, DeviceBuffer<f32>)> {
    let mut state = gpu.alloc::<f32>(3 * p.n)?; // [N, 3]: max, sum-exp, target logit
    for (r0, r1) in p.chunks() {
        let rows = r1 - r0;
        let copy = rows_of(gpu, h, p.c, (r0, r1))?;
        let logits = CudaData::BF16(tile_logits(gpu, copy.as_ref().unwrap_or(h), w, rows, &p)?);
        let mut st = state.slice_mut(3 * r0..3 * r1);
        chunk_forward(gpu, &logits, &targets.slice(r0..r1), &mut st, rows, p.v, 0, true)?;
    }
    chunk_finish(gpu, &state, targets, p.n)
}

/// (the summed loss, f32 [1] on the device; lse [N] f32 for the backward).
pub fn forward(
    gpu: &Arc<Gpu>,
    h: &DeviceBuffer<bf16>,
    w: &DeviceBuffer<bf16>,
    targets: &DeviceBuffer<i32>,
    p: LinearCe,
) -> Result<(CudaStorage, DeviceBuffer<f32>)> {
    let (loss, lse) = forward_rows(gpu, h, w, targets, p)?;
    let sum = sum_all(gpu, &CudaData::F32(loss), 1.0)?;
    Ok((CudaStorage::new(gpu.clone(), CudaData::F32(sum)), lse))
}

/// The backward's scale of row r: the summed loss's gradient g (f32 [1] on the device) for
/// every row, or one value per row from the host (log-probs: -g[r / T]), uploaded per chunk.
pub enum Scale<'a> {
    Sum(&'a DeviceBuffer<f32>),
    Rows(&'a [f32]),
}

/// (dh [N, C] bf16, dW [V, C] bf16), each only when `needs` asks, for rows scaled by `scale`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    gpu: &Arc<Gpu>,
    h: &DeviceBuffer<bf16>,
    w: &DeviceBuffer<bf16>,
    targets: &DeviceBuffer<i32>,
    lse: &DeviceBuffer<f32>,
    scale: Scale,
    p: LinearCe,
    needs: (bool, bool),
) -> Result<(Option<CudaStorage>, Option<CudaStorage>)> {
    let (n, v, c) = (p.n, p.v, p.c);
    if let Scale::Rows(r) = scale {
        if r.len() != n {
            return Err(crate::error::Error::invalid(
                "cuda linear_cross_entropy backward",
                format!("{} row scales for {n} rows", r.len()),
            ));
        }
    }
    let mut dh = if needs.0 { Some(gpu.alloc::<bf16>(n * c)?) } else { None }; // [N, C]
    let mut dw = if needs.1 { Some(gpu.alloc::<f32>(v * c)?) } else { None }; // [V, C] f32
    if let Some(dw) = dw.as_mut().filter(|_| n == 0) {
        gpu.memset_zeros(dw)?;
    }
    for (r0, r1) in p.chunks() {
        let rows = r1 - r0;
        let copy = rows_of(gpu, h, c, (r0, r1))?;
        let hr = copy.as_ref().unwrap_or(h);
        let mut d = CudaData::BF16(tile_logits(gpu, hr, w, rows, &p)?);
        // Per-row scales: this chunk's, uploaded (g[r / 1] of the chunk's own rows).
        let uploaded = match scale {
            Scale::Sum(_) => None,
            Scale::Rows(r) => Some(gpu.upload(&r[r0..r1])?),
        };
        let row_scale = match (&scale, &uploaded) {
            (Scale::Sum(g), _) => RowScale::Device { g, g_div: 0, alpha: 1.0 },
            (Scale::Rows(_), Some(g)) => RowScale::Device { g, g_div: 1, alpha: 1.0 },
            (Scale::Rows(_), None) => unreachable!("uploaded above"),
        };
        cross_entropy_backward_in_place(
            gpu,
            &mut d,
            &targets.slice(r0..r1),
            &lse.slice(r0..r1),
            &row_scale,
            rows,
            v,
            0,
        )?;
        let CudaData::BF16(d) = d else { unreachable!("the tile is bf16") };
        if let Some(dh) = dh.as_mut() {
            // dh[rows] = d [rows, V] W [V, C]
            let dims = MatmulDims { batch: 1, m: rows, n: c, k: v, b_shared: false };
            if rows == n {
                gemm(gpu, &d, w, dh, dims, false, false, false)?;
            } else {
                let mut part = gpu.alloc::<bf16>(rows * c)?;
                gemm(gpu, &d, w, &mut part, dims, false, false, false)?;
                gpu.copy(&part, &mut dh.slice_mut(r0 * c..r1 * c))?;
            }
        }
        if let Some(dw) = dw.as_mut() {
            // dW += d^T [V, rows] h[rows] [rows, C], row chunks in order.
            let dims = MatmulDims { batch: 1, m: v, n: c, k: rows, b_shared: false };
            gemm(gpu, &d, hr, dw, dims, true, false, r0 > 0)?;
        }
    }
    let dh = dh.map(|x| CudaStorage::new(gpu.clone(), CudaData::BF16(x)));
    let dw = match dw {
        Some(x) => Some(cast(&CudaStorage::new(gpu.clone(), CudaData::F32(x)), DType::BF16)?),
        None => None,
    };
    Ok((dh, dw))
}

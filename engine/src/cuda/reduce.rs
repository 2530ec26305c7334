//! Launchers of kernels/cu/reduce.cu: sums over all elements in two fixed stages (the loss sum,
//! sum, mean, the global grad norm's sum of squares), sums over the last dim, argmax over the
//! last dim, and the reductions' backward (a broadcast). Launch shapes depend on sizes only, so
//! results are bitwise reproducible; no float atomics.

use super::launch::{Elem as E, Param as P};
use super::{grid_1d, Arg, CudaData, CudaStorage, DeviceBuffer, DeviceElem, Gpu, Kernel, LaunchConfig};
use crate::error::{Error, Result};
use crate::DType;
use std::sync::Arc;

const fn k(name: &'static str, params: &'static [P]) -> Kernel {
    Kernel { module: "reduce", name, params }
}
/// x [n], partials [ceil(n / chunk)], n, chunk.
pub const SUM_PARTIALS_F32: Kernel =
    k("sum_partials_f32", &[P::ConstPtr(E::F32), P::MutPtr(E::F32), P::I64, P::I64]);
pub const SUM_PARTIALS_BF16: Kernel =
    k("sum_partials_bf16", &[P::ConstPtr(E::BF16), P::MutPtr(E::F32), P::I64, P::I64]);
pub const SUMSQ_PARTIALS_F32: Kernel =
    k("sumsq_partials_f32", &[P::ConstPtr(E::F32), P::MutPtr(E::F32), P::I64, P::I64]);
pub const SUMSQ_PARTIALS_BF16: Kernel =
    k("sumsq_partials_bf16", &[P::ConstPtr(E::BF16), P::MutPtr(E::F32), P::I64, P::I64]);
/// partials [p], out [1], p, scale.
pub const SUM_FINISH: Kernel = k("sum_finish", &[P::ConstPtr(E::F32), P::MutPtr(E::F32), P::I64, P::F32]);
/// x [rows, cols], y [rows], rows, cols, scale.
const SUM_LAST_F32: &[P] = &[P::ConstPtr(E::F32), P::MutPtr(E::F32), P::I64, P::I64, P::F32];
const SUM_LAST_BF16: &[P] = &[P::ConstPtr(E::BF16), P::MutPtr(E::BF16), P::I64, P::I64, P::F32];
pub const SUM_LAST_WARP_F32: Kernel = k("sum_last_warp_f32", SUM_LAST_F32);
pub const SUM_LAST_WARP_BF16: Kernel = k("sum_last_warp_bf16", SUM_LAST_BF16);
pub const SUM_LAST_BLOCK_F32: Kernel = k("sum_last_block_f32", SUM_LAST_F32);
pub const SUM_LAST_BLOCK_BF16: Kernel = k("sum_last_block_bf16", SUM_LAST_BF16);
/// x [rows, cols], idx [rows] (u32), rows, cols.
pub const ARGMAX_LAST_F32: Kernel =
    k("argmax_last_f32", &[P::ConstPtr(E::F32), P::MutPtr(E::U32), P::I64, P::I64]);
pub const ARGMAX_LAST_BF16: Kernel =
    k("argmax_last_bf16", &[P::ConstPtr(E::BF16), P::MutPtr(E::U32), P::I64, P::I64]);
/// g [n / c], dx [n], n, c, scale. (Same parameters as a sum over the last dim.)
pub const REDUCE_BWD_F32: Kernel = k("reduce_bwd_f32", SUM_LAST_F32);
pub const REDUCE_BWD_BF16: Kernel = k("reduce_bwd_bf16", SUM_LAST_BF16);
pub const KERNELS: &[&Kernel] = &[
    &SUM_PARTIALS_F32,
    &SUM_PARTIALS_BF16,
    &SUMSQ_PARTIALS_F32,
    &SUMSQ_PARTIALS_BF16,
    &SUM_FINISH,
    &SUM_LAST_WARP_F32,
    &SUM_LAST_WARP_BF16,
    &SUM_LAST_BLOCK_F32,
    &SUM_LAST_BLOCK_BF16,
    &ARGMAX_LAST_F32,
    &ARGMAX_LAST_BF16,
    &REDUCE_BWD_F32,
    &REDUCE_BWD_BF16,
];

/// Elements per stage-1 block (a multiple of 8: chunk starts keep 16-byte alignment).
pub const CHUNK: usize = 8192;
const STAGE1_THREADS: u32 = 256;
const FINISH_THREADS: u32 = 1024;
/// Rows up to this width get one warp each in sum_last; wider rows one block each.
const WARP_ROW_MAX: usize = 1024;
const MAX_GRID: usize = 65535;

pub(crate) fn cfg(grid: usize, block: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (grid.max(1) as u32, 1, 1), block_dim: (block, 1, 1), shared_mem_bytes: 0 }
}

/// The f32 or bf16 kernel of a pair by `dtype`; anything else is an error.
fn by_dtype(
    op: &'static str,
    dtype: DType,
    f32k: &'static Kernel,
    bf16k: &'static Kernel,
) -> Result<&'static Kernel> {
    match dtype {
        DType::F32 => Ok(f32k),
        DType::BF16 => Ok(bf16k),
        got => Err(Error::DType { op, got, expected: "f32 or bf16 on CUDA" }),
    }
}

/// Stage-1 partials an `n`-element input writes.
pub fn partial_count(n: usize) -> usize {
    n.div_ceil(CHUNK).max(1)
}

/// Stage 1: partials[off + b] = sum (or sum of squares) of x's b-th chunk, for every chunk b
/// of the `partial_count(x.len())` chunks.
pub fn stage1(
    gpu: &Gpu,
    x: &CudaData,
    square: bool,
    partials: &mut DeviceBuffer<f32>,
    off: usize,
) -> Result<()> {
    let op = if square { "cuda sum of squares" } else { "cuda sum" };
    let (n, xarg, kernel) = match (x, square) {
        (CudaData::F32(s), false) => (s.len(), Arg::ptr(s), &SUM_PARTIALS_F32),
        (CudaData::BF16(s), false) => (s.len(), Arg::ptr(s), &SUM_PARTIALS_BF16),
        (CudaData::F32(s), true) => (s.len(), Arg::ptr(s), &SUMSQ_PARTIALS_F32),
        (CudaData::BF16(s), true) => (s.len(), Arg::ptr(s), &SUMSQ_PARTIALS_BF16),
        (CudaData::I32(_), _) => return Err(Error::DType { op, got: DType::I32, expected: "f32 or bf16" }),
        (CudaData::U32(_), _) => return Err(Error::DType { op, got: DType::U32, expected: "f32 or bf16" }),
    };
    let p = partial_count(n);
    if off + p > partials.len() {
        return Err(Error::invalid(op, format!("{p} partials at {off} overflow {}", partials.len())));
    }
    let mut out = partials.slice_mut(off..off + p);
    let args = [xarg, Arg::ptr_mut(&mut out), Arg::i64(n as i64), Arg::i64(CHUNK as i64)];
    // SAFETY: x holds n elements; block b (< p) reads x[b*CHUNK .. min((b+1)*CHUNK, n)) and
    // writes out[b], and out holds p elements.
    unsafe { gpu.launch(op, kernel, cfg(p, STAGE1_THREADS), &args) }
}

/// Stage 2: scale * (sum of partials[0 .. p] in a fixed tree), as f32 [1] on the device.
pub fn finish(gpu: &Gpu, partials: &DeviceBuffer<f32>, p: usize, scale: f32) -> Result<DeviceBuffer<f32>> {
    let mut out = gpu.alloc::<f32>(1)?;
    let p64 = p.min(partials.len()) as i64;
    let args = [Arg::ptr(partials), Arg::ptr_mut(&mut out), Arg::i64(p64), Arg::f32(scale)];
    // SAFETY: partials holds at least p64 elements; one block writes out[0].
    unsafe { gpu.launch("cuda sum", &SUM_FINISH, cfg(1, FINISH_THREADS), &args) }?;
    Ok(out)
}

/// scale * sum of every element of x (f32 or bf16), as f32 [1] on the device.
pub fn sum_all(gpu: &Gpu, x: &CudaData, scale: f32) -> Result<DeviceBuffer<f32>> {
    let n = match x {
        CudaData::F32(s) => s.len(),
        CudaData::BF16(s) => s.len(),
        _ => 0,
    };
    let p = partial_count(n);
    let mut partials = gpu.alloc::<f32>(p)?;
    stage1(gpu, x, false, &mut partials, 0)?;
    finish(gpu, &partials, p, scale)
}

/// Sum of squares over every tensor of `xs` together (the global grad norm squared): stage 1
/// per tensor into one partials buffer, tensors in the order given, then one stage 2. One f32
/// comes back to the host.
pub fn sum_squares(gpu: &Arc<Gpu>, xs: &[&CudaData]) -> Result<f64> {
    let lens: Vec<usize> = xs
        .iter()
        .map(|x| match x {
            CudaData::F32(s) => s.len(),
            CudaData::BF16(s) => s.len(),
            CudaData::I32(s) => s.len(),
            CudaData::U32(s) => s.len(),
        })
        .collect();
    let total: usize = lens.iter().map(|&n| partial_count(n)).sum();
    if total == 0 {
        return Ok(0.0);
    }
    let mut partials = gpu.alloc::<f32>(total)?;
    let mut off = 0;
    for (x, &n) in xs.iter().zip(&lens) {
        stage1(gpu, x, true, &mut partials, off)?;
        off += partial_count(n);
    }
    let out = finish(gpu, &partials, total, 1.0)?;
    Ok(gpu.download(&out)?[0] as f64)
}

/// A launch of `kernel` from x (rows * cols elements) into a fresh y of `ylen` elements of
/// x's dtype: x, y, `a`, `b`, scale (sum over the last dim, and its backward).
fn rows_typed<T: DeviceElem>(
    gpu: &Gpu,
    op: &'static str,
    kernel: &'static Kernel,
    x: &DeviceBuffer<T>,
    ylen: usize,
    (a, b, scale): (i64, i64, f32),
    config: LaunchConfig,
) -> Result<DeviceBuffer<T>> {
    let mut y = gpu.alloc::<T>(ylen)?;
    if ylen > 0 {
        let args = [Arg::ptr(x), Arg::ptr_mut(&mut y), Arg::i64(a), Arg::i64(b), Arg::f32(scale)];
        // SAFETY: each caller states the lengths its kernel reads and writes.
        unsafe { gpu.launch(op, kernel, config, &args) }?;
    }
    Ok(y)
}

/// y [rows] = scale * sum over the last dim of x [rows, cols], in x's dtype.
pub fn sum_last(x: &CudaStorage, rows: usize, cols: usize, scale: f32) -> Result<CudaStorage> {
    let op = "cuda sum_last";
    let gpu = &x.gpu;
    if rows * cols != x.len() {
        by_dtype(op, x.dtype(), &SUM_LAST_WARP_F32, &SUM_LAST_WARP_BF16)?;
        return Err(Error::invalid(op, format!("{rows} x {cols} is not {} elements", x.len())));
    }
    let (kernel, config) = if cols <= WARP_ROW_MAX {
        (
            by_dtype(op, x.dtype(), &SUM_LAST_WARP_F32, &SUM_LAST_WARP_BF16)?,
            cfg(rows.div_ceil(8).min(MAX_GRID), 256),
        )
    } else {
        (by_dtype(op, x.dtype(), &SUM_LAST_BLOCK_F32, &SUM_LAST_BLOCK_BF16)?, cfg(rows.min(MAX_GRID), 256))
    };
    let sizes = (rows as i64, cols as i64, scale);
    // x holds rows*cols elements, y rows; row r is written once.
    let data = match &x.data {
        CudaData::F32(s) => CudaData::F32(rows_typed(gpu, op, kernel, s, rows, sizes, config)?),
        CudaData::BF16(s) => CudaData::BF16(rows_typed(gpu, op, kernel, s, rows, sizes, config)?),
        _ => unreachable!("by_dtype admitted f32 and bf16 only"),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

/// u32 [rows]: the first index of the largest element of each row of x [rows, cols].
pub fn argmax_last(x: &CudaStorage, rows: usize, cols: usize) -> Result<CudaStorage> {
    let op = "cuda argmax_last";
    let gpu = &x.gpu;
    let kernel = by_dtype(op, x.dtype(), &ARGMAX_LAST_F32, &ARGMAX_LAST_BF16)?;
    if cols == 0 || cols > i32::MAX as usize || rows * cols != x.len() {
        return Err(Error::invalid(op, format!("{rows} rows of {cols} (of {} elements)", x.len())));
    }
    let mut y = gpu.alloc::<u32>(rows)?;
    if rows > 0 {
        let xarg = match &x.data {
            CudaData::F32(s) => Arg::ptr(s),
            CudaData::BF16(s) => Arg::ptr(s),
            _ => unreachable!("by_dtype admitted f32 and bf16 only"),
        };
        let args = [xarg, Arg::ptr_mut(&mut y), Arg::i64(rows as i64), Arg::i64(cols as i64)];
        // SAFETY: x holds rows*cols elements, y holds rows; block-strided rows, each written once.
        unsafe { gpu.launch(op, kernel, cfg(rows.min(MAX_GRID), 256), &args) }?;
    }
    Ok(CudaStorage::new(gpu.clone(), CudaData::U32(y)))
}

/// dx [n] = scale * g[i / c]: the backward of a sum over all elements (c = n) or over the last
/// dim (c = its size; g holds n / c values). In g's dtype.
pub fn broadcast_back(g: &CudaStorage, n: usize, c: usize, scale: f32) -> Result<CudaStorage> {
    let op = "cuda reduce backward";
    let gpu = &g.gpu;
    let kernel = by_dtype(op, g.dtype(), &REDUCE_BWD_F32, &REDUCE_BWD_BF16)?;
    let c = c.max(1);
    if n > 0 && n != g.len() * c {
        return Err(Error::invalid(
            op,
            format!("{} gradient values do not broadcast to {n} by {c}", g.len()),
        ));
    }
    let sizes = (n as i64, c as i64, scale);
    // g holds n / c elements, y n; grid-stride, each y[i] written once.
    let data = match &g.data {
        CudaData::F32(s) => CudaData::F32(rows_typed(gpu, op, kernel, s, n, sizes, grid_1d(n))?),
        CudaData::BF16(s) => CudaData::BF16(rows_typed(gpu, op, kernel, s, n, sizes, grid_1d(n))?),
        _ => unreachable!("by_dtype admitted f32 and bf16 only"),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

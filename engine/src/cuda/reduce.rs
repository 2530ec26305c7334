//! Launchers of kernels/cu/reduce.cu: sums over all elements in two fixed stages (the loss sum,
//! sum, mean, the global grad norm's sum of squares), sums over the last dim, argmax over the
//! last dim, and the reductions' backward (a broadcast). Launch shapes depend on sizes only, so
//! results are bitwise reproducible; no float atomics.

use super::{launch_err, CudaData, CudaSlice, CudaStorage, Gpu, LaunchConfig, PushKernelArg};
use crate::error::{Error, Result};
use crate::DType;
use std::sync::Arc;

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

/// "f32" or "bf16", the kernel-name suffix of a float dtype; anything else is an error.
pub(crate) fn float_suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
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
    partials: &mut CudaSlice<f32>,
    off: usize,
) -> Result<()> {
    let op = if square { "cuda sum of squares" } else { "cuda sum" };
    let (n, sfx) = match x {
        CudaData::F32(s) => (s.len(), "f32"),
        CudaData::BF16(s) => (s.len(), "bf16"),
        CudaData::I32(_) => return Err(Error::DType { op, got: DType::I32, expected: "f32 or bf16" }),
        CudaData::U32(_) => return Err(Error::DType { op, got: DType::U32, expected: "f32 or bf16" }),
    };
    let p = partial_count(n);
    if off + p > partials.len() {
        return Err(Error::invalid(op, format!("{p} partials at {off} overflow {}", partials.len())));
    }
    let name = format!("{}_partials_{sfx}", if square { "sumsq" } else { "sum" });
    let f = gpu.func("reduce", &name)?;
    let (n64, chunk64) = (n as i64, CHUNK as i64);
    let mut out = partials.slice_mut(off..off + p);
    let mut b = gpu.stream.launch_builder(&f);
    match x {
        CudaData::F32(s) => b.arg(s),
        CudaData::BF16(s) => b.arg(s),
        _ => unreachable!("checked above"),
    };
    // SAFETY: x holds n elements; block b (< p) reads x[b*CHUNK .. min((b+1)*CHUNK, n)) and
    // writes out[b], and out holds p elements.
    unsafe { b.arg(&mut out).arg(&n64).arg(&chunk64).launch(cfg(p, STAGE1_THREADS)) }
        .map_err(launch_err(op))?;
    Ok(())
}

/// Stage 2: scale * (sum of partials[0 .. p] in a fixed tree), as f32 [1] on the device.
pub fn finish(gpu: &Gpu, partials: &CudaSlice<f32>, p: usize, scale: f32) -> Result<CudaSlice<f32>> {
    let op = "cuda sum";
    let f = gpu.func("reduce", "sum_finish")?;
    let mut out = gpu.alloc::<f32>(1)?;
    let p64 = p.min(partials.len()) as i64;
    // SAFETY: partials holds at least p64 elements; one block writes out[0].
    unsafe {
        gpu.stream
            .launch_builder(&f)
            .arg(partials)
            .arg(&mut out)
            .arg(&p64)
            .arg(&scale)
            .launch(cfg(1, FINISH_THREADS))
    }
    .map_err(launch_err(op))?;
    Ok(out)
}

/// scale * sum of every element of x (f32 or bf16), as f32 [1] on the device.
pub fn sum_all(gpu: &Gpu, x: &CudaData, scale: f32) -> Result<CudaSlice<f32>> {
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

/// y [rows] = scale * sum over the last dim of x [rows, cols], in x's dtype.
pub fn sum_last(x: &CudaStorage, rows: usize, cols: usize, scale: f32) -> Result<CudaStorage> {
    let op = "cuda sum_last";
    let gpu = &x.gpu;
    let sfx = float_suffix(op, x.dtype())?;
    if rows * cols != x.len() {
        return Err(Error::invalid(op, format!("{rows} x {cols} is not {} elements", x.len())));
    }
    let (name, cfgv) = if cols <= WARP_ROW_MAX {
        (format!("sum_last_warp_{sfx}"), cfg(rows.div_ceil(8).min(MAX_GRID), 256))
    } else {
        (format!("sum_last_block_{sfx}"), cfg(rows.min(MAX_GRID), 256))
    };
    let f = gpu.func("reduce", &name)?;
    let (r64, c64) = (rows as i64, cols as i64);
    let data = match &x.data {
        CudaData::F32(s) => {
            let mut y = gpu.alloc::<f32>(rows)?;
            if rows > 0 {
                // SAFETY: s holds rows*cols elements, y holds rows; row r is written once.
                unsafe {
                    gpu.stream
                        .launch_builder(&f)
                        .arg(s)
                        .arg(&mut y)
                        .arg(&r64)
                        .arg(&c64)
                        .arg(&scale)
                        .launch(cfgv)
                }
                .map_err(launch_err(op))?;
            }
            CudaData::F32(y)
        }
        CudaData::BF16(s) => {
            let mut y = gpu.alloc::<half::bf16>(rows)?;
            if rows > 0 {
                // SAFETY: as above.
                unsafe {
                    gpu.stream
                        .launch_builder(&f)
                        .arg(s)
                        .arg(&mut y)
                        .arg(&r64)
                        .arg(&c64)
                        .arg(&scale)
                        .launch(cfgv)
                }
                .map_err(launch_err(op))?;
            }
            CudaData::BF16(y)
        }
        _ => unreachable!("float_suffix admitted f32 and bf16 only"),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

/// u32 [rows]: the first index of the largest element of each row of x [rows, cols].
pub fn argmax_last(x: &CudaStorage, rows: usize, cols: usize) -> Result<CudaStorage> {
    let op = "cuda argmax_last";
    let gpu = &x.gpu;
    let sfx = float_suffix(op, x.dtype())?;
    if cols == 0 || cols > i32::MAX as usize || rows * cols != x.len() {
        return Err(Error::invalid(op, format!("{rows} rows of {cols} (of {} elements)", x.len())));
    }
    let f = gpu.func("reduce", &format!("argmax_last_{sfx}"))?;
    let (r64, c64) = (rows as i64, cols as i64);
    let mut y = gpu.alloc::<u32>(rows)?;
    if rows > 0 {
        let mut b = gpu.stream.launch_builder(&f);
        match &x.data {
            CudaData::F32(s) => b.arg(s),
            CudaData::BF16(s) => b.arg(s),
            _ => unreachable!("float_suffix admitted f32 and bf16 only"),
        };
        // SAFETY: x holds rows*cols elements, y holds rows; block-strided rows, each written once.
        unsafe { b.arg(&mut y).arg(&r64).arg(&c64).launch(cfg(rows.min(MAX_GRID), 256)) }
            .map_err(launch_err(op))?;
    }
    Ok(CudaStorage::new(gpu.clone(), CudaData::U32(y)))
}

/// dx [n] = scale * g[i / c]: the backward of a sum over all elements (c = n) or over the last
/// dim (c = its size; g holds n / c values). In g's dtype.
pub fn broadcast_back(g: &CudaStorage, n: usize, c: usize, scale: f32) -> Result<CudaStorage> {
    let op = "cuda reduce backward";
    let gpu = &g.gpu;
    let sfx = float_suffix(op, g.dtype())?;
    let c = c.max(1);
    if n > 0 && n != g.len() * c {
        return Err(Error::invalid(
            op,
            format!("{} gradient values do not broadcast to {n} by {c}", g.len()),
        ));
    }
    let f = gpu.func("reduce", &format!("reduce_bwd_{sfx}"))?;
    let (n64, c64) = (n as i64, c as i64);
    let data = match &g.data {
        CudaData::F32(s) => {
            let mut y = gpu.alloc::<f32>(n)?;
            if n > 0 {
                // SAFETY: s holds n / c elements, y holds n; grid-stride, each y[i] written once.
                unsafe {
                    gpu.stream
                        .launch_builder(&f)
                        .arg(s)
                        .arg(&mut y)
                        .arg(&n64)
                        .arg(&c64)
                        .arg(&scale)
                        .launch(super::grid_1d(n))
                }
                .map_err(launch_err(op))?;
            }
            CudaData::F32(y)
        }
        CudaData::BF16(s) => {
            let mut y = gpu.alloc::<half::bf16>(n)?;
            if n > 0 {
                // SAFETY: as above.
                unsafe {
                    gpu.stream
                        .launch_builder(&f)
                        .arg(s)
                        .arg(&mut y)
                        .arg(&n64)
                        .arg(&c64)
                        .arg(&scale)
                        .launch(super::grid_1d(n))
                }
                .map_err(launch_err(op))?;
            }
            CudaData::BF16(y)
        }
        _ => unreachable!("float_suffix admitted f32 and bf16 only"),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

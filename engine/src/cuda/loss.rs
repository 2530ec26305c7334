//! Launchers of kernels/cu/cross_entropy.cu: per-row cross-entropy and logsumexp over logits
//! [N, V] (f32 or bf16) with i32 targets (-100 ignored), the online variant over vocabulary
//! blocks of a row chunk (the fused lm_head loss), and the backward
//!   dx = alpha * g[r / g_div] * (softmax(x_r) - onehot(t_r))
//! into a new buffer or in place over the logits. Losses and logsumexps are f32. The engine
//! validates targets on the host first (the kernels turn a stray target into NaN, never an
//! out-of-bounds read).

use super::reduce::cfg;
use super::{launch_err, CudaData, CudaSlice, CudaStorage, Gpu, PushKernelArg};
use crate::error::{Error, Result};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtrMut};

/// Threads per block for rows of `v` logits (one block per row).
fn block_for(v: usize) -> u32 {
    match v {
        v if v >= 16384 => 512,
        v if v >= 2048 => 256,
        _ => 128,
    }
}

/// One block per row; rows beyond the grid are strided.
fn row_cfg(n: usize, v: usize) -> cudarc::driver::LaunchConfig {
    cfg(n.min(i32::MAX as usize), block_for(v))
}

fn float_data(op: &'static str, d: &CudaData) -> Result<(&'static str, usize)> {
    match d {
        CudaData::F32(s) => Ok(("f32", s.len())),
        CudaData::BF16(s) => Ok(("bf16", s.len())),
        CudaData::I32(_) => Err(Error::DType { op, got: crate::DType::I32, expected: "f32 or bf16 logits" }),
        CudaData::U32(_) => Err(Error::DType { op, got: crate::DType::U32, expected: "f32 or bf16 logits" }),
    }
}

/// (loss [N], lse [N]) of logits [N, V]: loss_r = lse_r - x_r[t_r], zero where t_r = -100.
pub fn cross_entropy_rows(
    logits: &CudaStorage,
    targets: &CudaSlice<i32>,
    n: usize,
    v: usize,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let op = "cuda cross_entropy";
    let gpu = &logits.gpu;
    let (sfx, len) = float_data(op, &logits.data)?;
    if len != n * v || targets.len() < n {
        return Err(Error::invalid(
            op,
            format!("{len} logits and {} targets for {n} rows of {v}", targets.len()),
        ));
    }
    let mut loss = gpu.alloc::<f32>(n)?;
    let mut lse = gpu.alloc::<f32>(n)?;
    if n == 0 {
        return Ok((loss, lse));
    }
    let f = gpu.func("cross_entropy", &format!("cross_entropy_fwd_{sfx}"))?;
    let (n64, v64) = (n as i64, v as i64);
    let mut b = gpu.stream.launch_builder(&f);
    match &logits.data {
        CudaData::F32(s) => b.arg(s),
        CudaData::BF16(s) => b.arg(s),
        _ => unreachable!("float_data admitted f32 and bf16 only"),
    };
    // SAFETY: logits hold n*v elements, targets n, loss and lse n; block-strided rows, each
    // row's loss and lse written once by its block's thread 0.
    unsafe { b.arg(targets).arg(&mut loss).arg(&mut lse).arg(&n64).arg(&v64).launch(row_cfg(n, v)) }
        .map_err(launch_err(op))?;
    Ok((loss, lse))
}

/// Where the backward's per-row scale comes from: alpha times a host value, or alpha times
/// g[r / g_div] from a device vector (g_div 0: g[0] for every row).
pub enum RowScale<'a> {
    Host(f32),
    Device { g: &'a CudaSlice<f32>, g_div: usize, alpha: f32 },
}

fn push_scale<'a>(
    b: &mut cudarc::driver::LaunchArgs<'a>,
    s: &'a RowScale<'a>,
    null: &'a u64,
    g_div: &'a i64,
    alpha: &'a f32,
) {
    match s {
        RowScale::Host(_) => b.arg(null).arg(g_div).arg(alpha),
        RowScale::Device { g, .. } => b.arg(*g).arg(g_div).arg(alpha),
    };
}

/// Refuses a device scale vector shorter than the rows read from it (g[r / g_div], r < n).
fn check_scale(op: &'static str, s: &RowScale, n: usize) -> Result<()> {
    if let RowScale::Device { g, g_div, .. } = s {
        let need = if *g_div == 0 { 1 } else { n.div_ceil(*g_div) };
        if n > 0 && g.len() < need {
            return Err(Error::invalid(
                op,
                format!("{} scale values for {n} rows, {g_div} a value", g.len()),
            ));
        }
    }
    Ok(())
}

fn scale_args(s: &RowScale) -> (i64, f32) {
    match s {
        RowScale::Host(a) => (0, *a),
        RowScale::Device { g_div, alpha, .. } => (*g_div as i64, *alpha),
    }
}

/// dlogits [N, V] (logits' dtype, a new buffer) = scale_r * (softmax(x_r) - onehot(t_r)),
/// zero rows where t_r = -100.
pub fn cross_entropy_backward(
    logits: &CudaStorage,
    targets: &CudaSlice<i32>,
    lse: &CudaSlice<f32>,
    scale: &RowScale,
    n: usize,
    v: usize,
) -> Result<CudaStorage> {
    let op = "cuda cross_entropy backward";
    let gpu = &logits.gpu;
    let (sfx, len) = float_data(op, &logits.data)?;
    if len != n * v || targets.len() < n || lse.len() < n {
        return Err(Error::invalid(
            op,
            format!("{len} logits, {} targets, {} lse for {n} rows of {v}", targets.len(), lse.len()),
        ));
    }
    let f = gpu.func("cross_entropy", &format!("cross_entropy_bwd_{sfx}"))?;
    let (n64, w64, col0) = (n as i64, v as i64, 0i64);
    check_scale(op, scale, n)?;
    let (g_div, alpha) = scale_args(scale);
    let null = 0u64;
    let data = match &logits.data {
        CudaData::F32(s) => {
            let mut dx = gpu.alloc::<f32>(len)?;
            if n > 0 {
                let mut b = gpu.stream.launch_builder(&f);
                b.arg(s).arg(&mut dx).arg(targets).arg(lse);
                push_scale(&mut b, scale, &null, &g_div, &alpha);
                // SAFETY: s and dx hold n*v elements, targets and lse n; each element of dx is
                // written once, by the thread that reads the same element of s.
                unsafe { b.arg(&n64).arg(&w64).arg(&col0).launch(row_cfg(n, v)) }.map_err(launch_err(op))?;
            }
            CudaData::F32(dx)
        }
        CudaData::BF16(s) => {
            let mut dx = gpu.alloc::<half::bf16>(len)?;
            if n > 0 {
                let mut b = gpu.stream.launch_builder(&f);
                b.arg(s).arg(&mut dx).arg(targets).arg(lse);
                push_scale(&mut b, scale, &null, &g_div, &alpha);
                // SAFETY: as above.
                unsafe { b.arg(&n64).arg(&w64).arg(&col0).launch(row_cfg(n, v)) }.map_err(launch_err(op))?;
            }
            CudaData::BF16(dx)
        }
        _ => unreachable!("float_data admitted f32 and bf16 only"),
    };
    Ok(CudaStorage::new(gpu.clone(), data))
}

/// The same backward in place over a tile of logits [rows, w] holding vocabulary columns
/// col0 .. col0 + w (the fused lm_head loss turns its logits tile into the gradient).
/// `targets` and `lse` are the tile's rows (views of the whole batch's).
#[allow(clippy::too_many_arguments)]
pub fn cross_entropy_backward_in_place(
    gpu: &Gpu,
    tile: &mut CudaData,
    targets: &CudaView<i32>,
    lse: &CudaView<f32>,
    scale: &RowScale,
    rows: usize,
    w: usize,
    col0: usize,
) -> Result<()> {
    let op = "cuda cross_entropy backward";
    let (sfx, len) = float_data(op, tile)?;
    if len < rows * w || targets.len() < rows || lse.len() < rows {
        return Err(Error::invalid(op, format!("a tile of {len} for {rows} rows of {w}")));
    }
    if rows == 0 {
        return Ok(());
    }
    let f = gpu.func("cross_entropy", &format!("cross_entropy_bwd_{sfx}"))?;
    let (n64, w64, c64) = (rows as i64, w as i64, col0 as i64);
    check_scale(op, scale, rows)?;
    let (g_div, alpha) = scale_args(scale);
    let null = 0u64;
    let stream = &gpu.stream;
    // x and dx are the same buffer: pass its address twice (the kernel reads each element
    // before the same thread overwrites it).
    let (ptr, _sync) = match tile {
        CudaData::F32(s) => s.device_ptr_mut(stream),
        CudaData::BF16(s) => s.device_ptr_mut(stream),
        _ => unreachable!("float_data admitted f32 and bf16 only"),
    };
    let mut b = stream.launch_builder(&f);
    b.arg(&ptr).arg(&ptr).arg(targets).arg(lse);
    push_scale(&mut b, scale, &null, &g_div, &alpha);
    // SAFETY: the tile holds at least rows*w elements, targets and lse rows; every element is
    // read then written by one thread.
    unsafe { b.arg(&n64).arg(&w64).arg(&c64).launch(row_cfg(rows, w)) }.map_err(launch_err(op))?;
    Ok(())
}

/// Online (max, sum-exp, target logit) of a tile of logits [rows, w] holding vocabulary
/// columns col0 .. col0 + w, merged into `state` [rows, 3] (fresh when `first`). Blocks of the
/// vocabulary in order; then `chunk_finish`.
#[allow(clippy::too_many_arguments)]
pub fn chunk_forward(
    gpu: &Gpu,
    tile: &CudaData,
    targets: &CudaView<i32>,
    state: &mut CudaViewMut<f32>,
    rows: usize,
    w: usize,
    col0: usize,
    first: bool,
) -> Result<()> {
    let op = "cuda linear_cross_entropy";
    let (sfx, len) = float_data(op, tile)?;
    if len < rows * w || targets.len() < rows || state.len() < 3 * rows {
        return Err(Error::invalid(op, format!("a tile of {len} for {rows} rows of {w}")));
    }
    if rows == 0 {
        return Ok(());
    }
    let f = gpu.func("cross_entropy", &format!("cross_entropy_chunk_fwd_{sfx}"))?;
    let (n64, w64, c64, first32) = (rows as i64, w as i64, col0 as i64, first as i32);
    let mut b = gpu.stream.launch_builder(&f);
    match tile {
        CudaData::F32(s) => b.arg(s),
        CudaData::BF16(s) => b.arg(s),
        _ => unreachable!("float_data admitted f32 and bf16 only"),
    };
    // SAFETY: the tile holds rows*w elements (row stride w), targets rows, state 3*rows; each
    // row's state is read and written by its block's thread 0 only.
    unsafe { b.arg(targets).arg(state).arg(&n64).arg(&w64).arg(&c64).arg(&first32).launch(row_cfg(rows, w)) }
        .map_err(launch_err(op))?;
    Ok(())
}

/// loss [N] and lse [N] from the online state [N, 3] (zero where t = -100).
pub fn chunk_finish(
    gpu: &Gpu,
    state: &CudaSlice<f32>,
    targets: &CudaSlice<i32>,
    n: usize,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let op = "cuda linear_cross_entropy";
    let mut loss = gpu.alloc::<f32>(n)?;
    let mut lse = gpu.alloc::<f32>(n)?;
    if n == 0 {
        return Ok((loss, lse));
    }
    let f = gpu.func("cross_entropy", "cross_entropy_chunk_finish")?;
    let n64 = n as i64;
    // SAFETY: state holds 3n, targets, loss and lse n; one thread per row.
    unsafe {
        gpu.stream
            .launch_builder(&f)
            .arg(state)
            .arg(targets)
            .arg(&mut loss)
            .arg(&mut lse)
            .arg(&n64)
            .launch(super::grid_1d(n))
    }
    .map_err(launch_err(op))?;
    Ok((loss, lse))
}

//! Launchers of kernels/cu/cross_entropy.cu: per-row cross-entropy and logsumexp over logits
//! [N, V] (f32 or bf16) with i32 targets (-100 ignored), the online variant over vocabulary
//! blocks of a row chunk (the fused lm_head loss, linear_cross_entropy.rs), and the backward
//!   dx = alpha * g[r / g_div] * (softmax(x_r) - onehot(t_r))
//! into a new buffer or in place over the logits. Losses and logsumexps are f32. The engine
//! validates targets on the host first (the kernels turn a stray target into NaN, never an
//! out-of-bounds read).

use super::launch::{Elem as E, Param as P};
use super::reduce::cfg;
use super::{
    grid_1d, Arg, CudaData, CudaStorage, DeviceBuffer, DeviceSlice, DeviceSliceMut, Gpu, Kernel, LaunchConfig,
};
use crate::error::{Error, Result};

const fn k(name: &'static str, params: &'static [P]) -> Kernel {
    Kernel { module: "cross_entropy", name, params }
}
/// x [n, v], targets [n], loss [n], lse [n], n, v.
pub const CE_FWD_BF16: Kernel = k(
    "cross_entropy_fwd_bf16",
    &[P::ConstPtr(E::BF16), P::ConstPtr(E::I32), P::MutPtr(E::F32), P::MutPtr(E::F32), P::I64, P::I64],
);
pub const CE_FWD_F32: Kernel = k(
    "cross_entropy_fwd_f32",
    &[P::ConstPtr(E::F32), P::ConstPtr(E::I32), P::MutPtr(E::F32), P::MutPtr(E::F32), P::I64, P::I64],
);
/// x [n, w], targets [n], state [n, 3], n, w, col0, first.
pub const CE_CHUNK_FWD_BF16: Kernel = k(
    "cross_entropy_chunk_fwd_bf16",
    &[P::ConstPtr(E::BF16), P::ConstPtr(E::I32), P::MutPtr(E::F32), P::I64, P::I64, P::I64, P::I32],
);
pub const CE_CHUNK_FWD_F32: Kernel = k(
    "cross_entropy_chunk_fwd_f32",
    &[P::ConstPtr(E::F32), P::ConstPtr(E::I32), P::MutPtr(E::F32), P::I64, P::I64, P::I64, P::I32],
);
/// state [n, 3], targets [n], loss [n], lse [n], n.
pub const CE_CHUNK_FINISH: Kernel = k(
    "cross_entropy_chunk_finish",
    &[P::ConstPtr(E::F32), P::ConstPtr(E::I32), P::MutPtr(E::F32), P::MutPtr(E::F32), P::I64],
);
/// x [n, w], dx [n, w] (may be x), targets [n], lse [n], g (or null), g_div, alpha, n, w, col0.
pub const CE_BWD_BF16: Kernel = k(
    "cross_entropy_bwd_bf16",
    &[
        P::ConstPtr(E::BF16),
        P::MutPtr(E::BF16),
        P::ConstPtr(E::I32),
        P::ConstPtr(E::F32),
        P::ConstPtr(E::F32),
        P::I64,
        P::F32,
        P::I64,
        P::I64,
        P::I64,
    ],
);
pub const CE_BWD_F32: Kernel = k(
    "cross_entropy_bwd_f32",
    &[
        P::ConstPtr(E::F32),
        P::MutPtr(E::F32),
        P::ConstPtr(E::I32),
        P::ConstPtr(E::F32),
        P::ConstPtr(E::F32),
        P::I64,
        P::F32,
        P::I64,
        P::I64,
        P::I64,
    ],
);
pub const KERNELS: &[&Kernel] = &[
    &CE_FWD_BF16,
    &CE_FWD_F32,
    &CE_CHUNK_FWD_BF16,
    &CE_CHUNK_FWD_F32,
    &CE_CHUNK_FINISH,
    &CE_BWD_BF16,
    &CE_BWD_F32,
];

/// Threads per block for rows of `v` logits (one block per row).
fn block_for(v: usize) -> u32 {
    match v {
        v if v >= 16384 => 512,
        v if v >= 2048 => 256,
        _ => 128,
    }
}

/// One block per row; rows beyond the grid are strided.
fn row_cfg(n: usize, v: usize) -> LaunchConfig {
    cfg(n.min(i32::MAX as usize), block_for(v))
}

/// The f32 or bf16 kernel of a pair for logits `d`, and their length.
fn float_data(
    op: &'static str,
    d: &CudaData,
    f32k: &'static Kernel,
    bf16k: &'static Kernel,
) -> Result<(&'static Kernel, usize)> {
    match d {
        CudaData::F32(s) => Ok((f32k, s.len())),
        CudaData::BF16(s) => Ok((bf16k, s.len())),
        CudaData::I32(_) => Err(Error::DType { op, got: crate::DType::I32, expected: "f32 or bf16 logits" }),
        CudaData::U32(_) => Err(Error::DType { op, got: crate::DType::U32, expected: "f32 or bf16 logits" }),
    }
}

/// The logits as a read-only launch argument (float_data admitted f32 and bf16 only).
fn logits_arg(d: &CudaData) -> Arg<'_> {
    match d {
        CudaData::F32(s) => Arg::ptr(s),
        CudaData::BF16(s) => Arg::ptr(s),
        _ => unreachable!("float_data admitted f32 and bf16 only"),
    }
}

/// (loss [N], lse [N]) of logits [N, V]: loss_r = lse_r - x_r[t_r], zero where t_r = -100.
pub fn cross_entropy_rows(
    logits: &CudaStorage,
    targets: &DeviceBuffer<i32>,
    n: usize,
    v: usize,
) -> Result<(DeviceBuffer<f32>, DeviceBuffer<f32>)> {
    let op = "cuda cross_entropy";
    let gpu = &logits.gpu;
    let (kernel, len) = float_data(op, &logits.data, &CE_FWD_F32, &CE_FWD_BF16)?;
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
    let args = [
        logits_arg(&logits.data),
        Arg::ptr(targets),
        Arg::ptr_mut(&mut loss),
        Arg::ptr_mut(&mut lse),
        Arg::i64(n as i64),
        Arg::i64(v as i64),
    ];
    // SAFETY: logits hold n*v elements, targets n, loss and lse n; block-strided rows, each
    // row's loss and lse written once by its block's thread 0.
    unsafe { gpu.launch(op, kernel, row_cfg(n, v), &args) }?;
    Ok((loss, lse))
}

/// Where the backward's per-row scale comes from: alpha times a host value, or alpha times
/// g[r / g_div] from a device vector (g_div 0: g[0] for every row).
pub enum RowScale<'a> {
    Host(f32),
    Device { g: &'a DeviceBuffer<f32>, g_div: usize, alpha: f32 },
}

impl<'a> RowScale<'a> {
    /// Refuses a device scale vector shorter than the rows read from it (g[r / g_div], r < n).
    fn check(&self, op: &'static str, n: usize) -> Result<()> {
        if let RowScale::Device { g, g_div, .. } = self {
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

    /// The kernels' (g, g_div, alpha) arguments.
    fn args(&self) -> [Arg<'a>; 3] {
        match self {
            RowScale::Host(a) => [Arg::null(), Arg::i64(0), Arg::f32(*a)],
            RowScale::Device { g, g_div, alpha } => [Arg::ptr(*g), Arg::i64(*g_div as i64), Arg::f32(*alpha)],
        }
    }
}

/// dlogits [N, V] (logits' dtype, a new buffer) = scale_r * (softmax(x_r) - onehot(t_r)),
/// zero rows where t_r = -100.
pub fn cross_entropy_backward(
    logits: &CudaStorage,
    targets: &DeviceBuffer<i32>,
    lse: &DeviceBuffer<f32>,
    scale: &RowScale,
    n: usize,
    v: usize,
) -> Result<CudaStorage> {
    let op = "cuda cross_entropy backward";
    let gpu = &logits.gpu;
    let (kernel, len) = float_data(op, &logits.data, &CE_BWD_F32, &CE_BWD_BF16)?;
    if len != n * v || targets.len() < n || lse.len() < n {
        return Err(Error::invalid(
            op,
            format!("{len} logits, {} targets, {} lse for {n} rows of {v}", targets.len(), lse.len()),
        ));
    }
    scale.check(op, n)?;
    let [g, g_div, alpha] = scale.args();
    let tail = [Arg::i64(n as i64), Arg::i64(v as i64), Arg::i64(0)];
    let launch = |x: Arg, dx: Arg| {
        let args = [x, dx, Arg::ptr(targets), Arg::ptr(lse), g, g_div, alpha, tail[0], tail[1], tail[2]];
        // SAFETY: x and dx hold n*v elements, targets and lse n (checked above); each element of
        // dx is written once, by the thread that reads the same element of x.
        unsafe { gpu.launch(op, kernel, row_cfg(n, v), &args) }
    };
    let data = match &logits.data {
        CudaData::F32(s) => {
            let mut dx = gpu.alloc::<f32>(len)?;
            if n > 0 {
                launch(Arg::ptr(s), Arg::ptr_mut(&mut dx))?;
            }
            CudaData::F32(dx)
        }
        CudaData::BF16(s) => {
            let mut dx = gpu.alloc::<half::bf16>(len)?;
            if n > 0 {
                launch(Arg::ptr(s), Arg::ptr_mut(&mut dx))?;
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
    targets: &impl DeviceSlice<i32>,
    lse: &impl DeviceSlice<f32>,
    scale: &RowScale,
    rows: usize,
    w: usize,
    col0: usize,
) -> Result<()> {
    let op = "cuda cross_entropy backward";
    let (kernel, len) = float_data(op, tile, &CE_BWD_F32, &CE_BWD_BF16)?;
    if len < rows * w || targets.len() < rows || lse.len() < rows {
        return Err(Error::invalid(op, format!("a tile of {len} for {rows} rows of {w}")));
    }
    if rows == 0 {
        return Ok(());
    }
    scale.check(op, rows)?;
    let [g, g_div, alpha] = scale.args();
    // x and dx are the same buffer: its address twice (the kernel reads each element before
    // the same thread overwrites it).
    let (x, dx) = match tile {
        CudaData::F32(s) => Arg::in_place(s),
        CudaData::BF16(s) => Arg::in_place(s),
        _ => unreachable!("float_data admitted f32 and bf16 only"),
    };
    let args = [
        x,
        dx,
        Arg::ptr(targets),
        Arg::ptr(lse),
        g,
        g_div,
        alpha,
        Arg::i64(rows as i64),
        Arg::i64(w as i64),
        Arg::i64(col0 as i64),
    ];
    // SAFETY: the tile holds at least rows*w elements, targets and lse rows; every element is
    // read then written by one thread.
    unsafe { gpu.launch(op, kernel, row_cfg(rows, w), &args) }
}

/// Online (max, sum-exp, target logit) of a tile of logits [rows, w] holding vocabulary
/// columns col0 .. col0 + w, merged into `state` [rows, 3] (fresh when `first`). Blocks of the
/// vocabulary in order; then `chunk_finish`.
#[allow(clippy::too_many_arguments)]
pub fn chunk_forward(
    gpu: &Gpu,
    tile: &CudaData,
    targets: &impl DeviceSlice<i32>,
    state: &mut impl DeviceSliceMut<f32>,
    rows: usize,
    w: usize,
    col0: usize,
    first: bool,
) -> Result<()> {
    let op = "cuda linear_cross_entropy";
    let (kernel, len) = float_data(op, tile, &CE_CHUNK_FWD_F32, &CE_CHUNK_FWD_BF16)?;
    if len < rows * w || targets.len() < rows || state.len() < 3 * rows {
        return Err(Error::invalid(op, format!("a tile of {len} for {rows} rows of {w}")));
    }
    if rows == 0 {
        return Ok(());
    }
    let args = [
        logits_arg(tile),
        Arg::ptr(targets),
        Arg::ptr_mut(state),
        Arg::i64(rows as i64),
        Arg::i64(w as i64),
        Arg::i64(col0 as i64),
        Arg::i32(first as i32),
    ];
    // SAFETY: the tile holds rows*w elements (row stride w), targets rows, state 3*rows; each
    // row's state is read and written by its block's thread 0 only.
    unsafe { gpu.launch(op, kernel, row_cfg(rows, w), &args) }
}

/// loss [N] and lse [N] from the online state [N, 3] (zero where t = -100).
pub fn chunk_finish(
    gpu: &Gpu,
    state: &DeviceBuffer<f32>,
    targets: &DeviceBuffer<i32>,
    n: usize,
) -> Result<(DeviceBuffer<f32>, DeviceBuffer<f32>)> {
    let op = "cuda linear_cross_entropy";
    let mut loss = gpu.alloc::<f32>(n)?;
    let mut lse = gpu.alloc::<f32>(n)?;
    if n == 0 {
        return Ok((loss, lse));
    }
    if state.len() < 3 * n || targets.len() < n {
        return Err(Error::invalid(
            op,
            format!("{} state and {} targets for {n} rows", state.len(), targets.len()),
        ));
    }
    let args = [
        Arg::ptr(state),
        Arg::ptr(targets),
        Arg::ptr_mut(&mut loss),
        Arg::ptr_mut(&mut lse),
        Arg::i64(n as i64),
    ];
    // SAFETY: state holds 3n, targets, loss and lse n; one thread per row.
    unsafe { gpu.launch(op, &CE_CHUNK_FINISH, grid_1d(n), &args) }?;
    Ok((loss, lse))
}

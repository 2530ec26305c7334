//! Launchers of kernels/cu/rmsnorm.cu: RMSNorm of rows [rows, C], bf16 in and out, with f32
//! statistics (the forward's rstd [rows] stays on the device for the backward). The backward
//! sums dw without atomics: each block's rows into an f32 partial row, then the partials in
//! block order. Launch shapes depend on the sizes and the device only, so two runs are bitwise
//! equal.

use super::launch::{Elem as E, Param as P};
use super::{Arg, CudaData, CudaStorage, DeviceBuffer, Kernel, LaunchConfig};
use crate::error::{Error, Result};
use half::bf16;

/// x, w, y, rstd, N, C, eps, threads per row.
pub const RMSNORM_FWD: Kernel = Kernel {
    module: "rmsnorm",
    name: "rmsnorm_fwd_bf16",
    params: &[
        P::ConstPtr(E::BF16),
        P::ConstPtr(E::BF16),
        P::MutPtr(E::BF16),
        P::MutPtr(E::F32),
        P::I64,
        P::I32,
        P::F32,
        P::I32,
    ],
};
/// x, w, rstd, dy, dx, partial [nblocks, C], N, C, rows per block, threads per row.
pub const RMSNORM_BWD: Kernel = Kernel {
    module: "rmsnorm",
    name: "rmsnorm_bwd_bf16",
    params: &[
        P::ConstPtr(E::BF16),
        P::ConstPtr(E::BF16),
        P::ConstPtr(E::F32),
        P::ConstPtr(E::BF16),
        P::MutPtr(E::BF16),
        P::MutPtr(E::F32),
        P::I64,
        P::I32,
        P::I64,
        P::I32,
    ],
};
/// partial [nblocks, C], dw [C], nblocks, C.
pub const RMSNORM_BWD_DW: Kernel = Kernel {
    module: "rmsnorm",
    name: "rmsnorm_bwd_dw_bf16",
    params: &[P::ConstPtr(E::F32), P::MutPtr(E::BF16), P::I32, P::I32],
};
/// The same with an f32 dw (not launched by the engine today).
pub const RMSNORM_BWD_DW_F32: Kernel = Kernel {
    module: "rmsnorm",
    name: "rmsnorm_bwd_dw_f32",
    params: &[P::ConstPtr(E::F32), P::MutPtr(E::F32), P::I32, P::I32],
};
pub const KERNELS: &[&Kernel] = &[&RMSNORM_FWD, &RMSNORM_BWD, &RMSNORM_BWD_DW, &RMSNORM_BWD_DW_F32];

/// Threads a row group of an RMSNorm kernel gets for rows of `c`: enough that each thread holds
/// at most 32 elements (four 16-byte chunks) in registers, a multiple of 32, at most `cap`; and
/// how many such groups share a block of about 256 threads.
pub fn row_groups(c: usize, cap: usize) -> (usize, usize) {
    let tpr = (c.div_ceil(32).div_ceil(32) * 32).clamp(32, cap);
    (tpr, (256 / tpr).max(1))
}

pub(crate) fn c_i32(op: &'static str, c: usize) -> Result<i32> {
    i32::try_from(c)
        .map_err(|_| Error::invalid(op, format!("rows of {c} elements exceed the kernels' i32 width")))
}

/// A 1-D launch of `grid` blocks of `block` threads with `smem` bytes of dynamic shared memory.
pub(crate) fn cfg(grid: usize, block: usize, smem: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.clamp(1, i32::MAX as usize) as u32, 1, 1),
        block_dim: (block as u32, 1, 1),
        shared_mem_bytes: smem as u32,
    }
}

/// RMSNorm forward of `x` [rows, c] with `w` [c] (both bf16): y [rows, c] bf16 and rstd [rows] f32.
pub fn rmsnorm_fwd(
    x: &CudaStorage,
    w: &CudaStorage,
    rows: usize,
    c: usize,
    eps: f64,
) -> Result<(CudaStorage, DeviceBuffer<f32>)> {
    let op = "rmsnorm";
    let (xs, ws) = (x.bf16(op)?, w.bf16(op)?);
    if xs.len() != rows * c || ws.len() != c {
        return Err(Error::invalid(
            op,
            format!("x has {} elements, w {}, for [{rows}, {c}]", xs.len(), ws.len()),
        ));
    }
    let gpu = &x.gpu;
    let mut y = gpu.alloc::<bf16>(rows * c)?;
    let mut rstd = gpu.alloc::<f32>(rows)?;
    if rows > 0 && c > 0 {
        let (tpr, groups) = row_groups(c, 1024);
        let config = cfg(rows.div_ceil(groups), groups * tpr, 0);
        let args = [
            Arg::ptr(xs),
            Arg::ptr(ws),
            Arg::ptr_mut(&mut y),
            Arg::ptr_mut(&mut rstd),
            Arg::i64(rows as i64),
            Arg::i32(c_i32(op, c)?),
            Arg::f32(eps as f32),
            Arg::i32(tpr as i32),
        ];
        // SAFETY: x and y hold rows*c elements, w c, rstd rows; the kernel reads x, w and writes
        // every element of y and rstd (one row per group, grid-stride over rows).
        unsafe { gpu.launch(op, &RMSNORM_FWD, config, &args) }?;
    }
    Ok((CudaStorage::new(gpu.clone(), CudaData::BF16(y)), rstd))
}

/// RMSNorm backward: (dx [rows, c], dw [c]), both bf16, from x, w, the forward's rstd and dy.
pub fn rmsnorm_bwd(
    x: &CudaStorage,
    w: &CudaStorage,
    rstd: &DeviceBuffer<f32>,
    dy: &CudaStorage,
    rows: usize,
    c: usize,
) -> Result<(CudaStorage, CudaStorage)> {
    let op = "rmsnorm backward";
    let (xs, ws, gs) = (x.bf16(op)?, w.bf16(op)?, dy.bf16(op)?);
    if xs.len() != rows * c || gs.len() != rows * c || ws.len() != c || rstd.len() != rows {
        return Err(Error::invalid(op, format!("buffers do not match [{rows}, {c}]")));
    }
    let gpu = &x.gpu;
    let mut dx = gpu.alloc::<bf16>(rows * c)?;
    if rows == 0 || c == 0 {
        let dw = gpu.zeros::<bf16>(c)?;
        return Ok((
            CudaStorage::new(gpu.clone(), CudaData::BF16(dx)),
            CudaStorage::new(gpu.clone(), CudaData::BF16(dw)),
        ));
    }
    let (tpr, groups) = row_groups(c, 256);
    let block = groups * tpr;
    let smem = groups * c * 4;
    // One wave of resident blocks (at least one group-row each), each owning a contiguous range.
    let per_sm = gpu.occupancy(op, &RMSNORM_BWD, block as u32, smem)?;
    let target = (per_sm * gpu.sm_count).clamp(1, rows.div_ceil(groups));
    let rpb = rows.div_ceil(target);
    let nblocks = rows.div_ceil(rpb);
    let mut partial = gpu.alloc::<f32>(nblocks * c)?; // [nblocks, C]
    let c32 = c_i32(op, c)?;
    let args = [
        Arg::ptr(xs),
        Arg::ptr(ws),
        Arg::ptr(rstd),
        Arg::ptr(gs),
        Arg::ptr_mut(&mut dx),
        Arg::ptr_mut(&mut partial),
        Arg::i64(rows as i64),
        Arg::i32(c32),
        Arg::i64(rpb as i64),
        Arg::i32(tpr as i32),
    ];
    // SAFETY: x, dy, dx hold rows*c elements, w c, rstd rows, partial nblocks*c; block b writes
    // dx for rows [b*rpb, (b+1)*rpb) and partial row b; smem is groups*c f32 as the kernel needs.
    unsafe { gpu.launch(op, &RMSNORM_BWD, cfg(nblocks, block, smem), &args) }?;
    let mut dw = gpu.alloc::<bf16>(c)?;
    let args = [Arg::ptr(&partial), Arg::ptr_mut(&mut dw), Arg::i32(nblocks as i32), Arg::i32(c32)];
    // SAFETY: partial holds nblocks*c f32, dw c; the kernel writes each dw[c] once (block 256).
    unsafe { gpu.launch(op, &RMSNORM_BWD_DW, cfg(c.div_ceil(32), 256, 0), &args) }?;
    Ok((CudaStorage::new(gpu.clone(), CudaData::BF16(dx)), CudaStorage::new(gpu.clone(), CudaData::BF16(dw))))
}

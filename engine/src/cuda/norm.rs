//! Launchers of kernels/cu/rmsnorm.cu, rope.cu and swiglu.cu: the row-wise ops of a Llama block,
//! bf16 in and out, f32 statistics (RMSNorm's rstd [N] stays on the device for the backward).
//! Launch shapes depend on the sizes and the device only, so two runs are bitwise equal.

use super::{grid_1d, launch_err, CudaData, CudaSlice, CudaStorage, LaunchConfig, PushKernelArg};
use crate::error::{Error, Result};
use half::bf16;

/// Threads a row group of an RMSNorm kernel gets for rows of `c`: enough that each thread holds
/// at most 32 elements (four 16-byte chunks) in registers, a multiple of 32, at most `cap`; and
/// how many such groups share a block of about 256 threads.
pub fn row_groups(c: usize, cap: usize) -> (usize, usize) {
    let tpr = (c.div_ceil(32).div_ceil(32) * 32).clamp(32, cap);
    (tpr, (256 / tpr).max(1))
}

fn bf16_of<'a>(op: &'static str, s: &'a CudaStorage) -> Result<&'a CudaSlice<bf16>> {
    s.bf16(op)
}

fn c_i32(op: &'static str, c: usize) -> Result<i32> {
    i32::try_from(c)
        .map_err(|_| Error::invalid(op, format!("rows of {c} elements exceed the kernels' i32 width")))
}

fn cfg(grid: usize, block: usize, smem: usize) -> LaunchConfig {
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
) -> Result<(CudaStorage, CudaSlice<f32>)> {
    let op = "rmsnorm";
    let (xs, ws) = (bf16_of(op, x)?, bf16_of(op, w)?);
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
        let f = gpu.func("rmsnorm", "rmsnorm_fwd_bf16")?;
        let (tpr, groups) = row_groups(c, 1024);
        let (n64, c32, eps32, tpr32) = (rows as i64, c_i32(op, c)?, eps as f32, tpr as i32);
        let config = cfg(rows.div_ceil(groups), groups * tpr, 0);
        // SAFETY: x and y hold rows*c elements, w c, rstd rows; the kernel reads x, w and writes
        // every element of y and rstd (one row per group, grid-stride over rows).
        unsafe {
            gpu.stream
                .launch_builder(&f)
                .arg(xs)
                .arg(ws)
                .arg(&mut y)
                .arg(&mut rstd)
                .arg(&n64)
                .arg(&c32)
                .arg(&eps32)
                .arg(&tpr32)
                .launch(config)
        }
        .map_err(launch_err(op))?;
    }
    Ok((CudaStorage::new(gpu.clone(), CudaData::BF16(y)), rstd))
}

/// RMSNorm backward: (dx [rows, c], dw [c]), both bf16, from x, w, the forward's rstd and dy.
/// dw is summed without atomics: each block's rows into an f32 partial row, then the partials
/// in block order.
pub fn rmsnorm_bwd(
    x: &CudaStorage,
    w: &CudaStorage,
    rstd: &CudaSlice<f32>,
    dy: &CudaStorage,
    rows: usize,
    c: usize,
) -> Result<(CudaStorage, CudaStorage)> {
    let op = "rmsnorm backward";
    let (xs, ws, gs) = (bf16_of(op, x)?, bf16_of(op, w)?, bf16_of(op, dy)?);
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
    let f = gpu.func_smem(op, "rmsnorm", "rmsnorm_bwd_bf16", smem)?;
    // One wave of resident blocks (at least one group-row each), each owning a contiguous range.
    let per_sm =
        f.occupancy_max_active_blocks_per_multiprocessor(block as u32, smem, None).unwrap_or(1).max(1)
            as usize;
    let target = (per_sm * gpu.sm_count).clamp(1, rows.div_ceil(groups));
    let rpb = rows.div_ceil(target);
    let nblocks = rows.div_ceil(rpb);
    let mut partial = gpu.alloc::<f32>(nblocks * c)?;
    let (n64, c32, rpb64, tpr32, nb32) = (rows as i64, c_i32(op, c)?, rpb as i64, tpr as i32, nblocks as i32);
    // SAFETY: x, dy, dx hold rows*c elements, w c, rstd rows, partial nblocks*c; block b writes
    // dx for rows [b*rpb, (b+1)*rpb) and partial row b; smem is groups*c f32 as the kernel needs.
    unsafe {
        gpu.stream
            .launch_builder(&f)
            .arg(xs)
            .arg(ws)
            .arg(rstd)
            .arg(gs)
            .arg(&mut dx)
            .arg(&mut partial)
            .arg(&n64)
            .arg(&c32)
            .arg(&rpb64)
            .arg(&tpr32)
            .launch(cfg(nblocks, block, smem))
    }
    .map_err(launch_err(op))?;
    let fd = gpu.func("rmsnorm", "rmsnorm_bwd_dw_bf16")?;
    let mut dw = gpu.alloc::<bf16>(c)?;
    // SAFETY: partial holds nblocks*c f32, dw c; the kernel writes each dw[c] once (block 256).
    unsafe {
        gpu.stream.launch_builder(&fd).arg(&partial).arg(&mut dw).arg(&nb32).arg(&c32).launch(cfg(
            c.div_ceil(32),
            256,
            0,
        ))
    }
    .map_err(launch_err(op))?;
    Ok((CudaStorage::new(gpu.clone(), CudaData::BF16(dx)), CudaStorage::new(gpu.clone(), CudaData::BF16(dw))))
}

/// RoPE of `x` [tokens, heads, d] bf16 at `pos` [tokens] (i32, or u32 below 2^31, read as i32);
/// `inverse` rotates by the negated angle (the backward, applied to dy).
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
    let xs = bf16_of(op, x)?;
    if xs.len() != tokens * heads * d || pos.len() != tokens || d & 1 != 0 {
        return Err(Error::invalid(op, format!("buffers do not match [{tokens}, {heads}, {d}] with D even")));
    }
    let gpu = &x.gpu;
    let mut y = gpu.alloc::<bf16>(xs.len())?;
    if xs.is_empty() {
        return Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(y)));
    }
    let smem = d / 2 * 4;
    let f = gpu.func_smem(op, "rope", if inverse { "rope_bwd_bf16" } else { "rope_fwd_bf16" }, smem)?;
    let w = if d & 15 == 0 { 8 } else { 1 };
    let items = tokens * (d / 2 / w);
    let config = cfg(items.div_ceil(256).min(gpu.sm_count * 16), 256, smem);
    let (n64, h32, d32, theta32) = (tokens as i64, c_i32(op, heads)?, c_i32(op, d)?, theta as f32);
    let mut b = gpu.stream.launch_builder(&f);
    b.arg(xs);
    match &pos.data {
        CudaData::I32(p) => b.arg(p),
        CudaData::U32(p) => b.arg(p),
        _ => return Err(Error::DType { op, got: pos.dtype(), expected: "i32 or u32 positions" }),
    };
    // SAFETY: x and y hold tokens*heads*d bf16, pos tokens 32-bit ints; smem is the d/2 floats of
    // the inv_freq table; the kernel writes every element of y.
    unsafe { b.arg(&mut y).arg(&n64).arg(&h32).arg(&d32).arg(&theta32).launch(config) }
        .map_err(launch_err(op))?;
    Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(y)))
}

/// silu(gate) * up, element-wise (bf16).
pub fn swiglu_fwd(gate: &CudaStorage, up: &CudaStorage) -> Result<CudaStorage> {
    let op = "swiglu";
    let (g, u) = (bf16_of(op, gate)?, bf16_of(op, up)?);
    if g.len() != u.len() {
        return Err(Error::invalid(op, format!("gate has {} elements, up {}", g.len(), u.len())));
    }
    let gpu = &gate.gpu;
    let n = g.len();
    let mut y = gpu.alloc::<bf16>(n)?;
    if n > 0 {
        let f = gpu.func("swiglu", "swiglu_fwd_bf16")?;
        let n64 = n as i64;
        // SAFETY: gate, up and y hold n elements; the kernel writes each y[i] once.
        unsafe {
            gpu.stream.launch_builder(&f).arg(g).arg(u).arg(&mut y).arg(&n64).launch(grid_1d(n.div_ceil(8)))
        }
        .map_err(launch_err(op))?;
    }
    Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(y)))
}

/// (dgate, dup) of swiglu for the incoming gradient `dy` (all bf16).
pub fn swiglu_bwd(
    gate: &CudaStorage,
    up: &CudaStorage,
    dy: &CudaStorage,
) -> Result<(CudaStorage, CudaStorage)> {
    let op = "swiglu backward";
    let (g, u, d) = (bf16_of(op, gate)?, bf16_of(op, up)?, bf16_of(op, dy)?);
    if g.len() != u.len() || g.len() != d.len() {
        return Err(Error::invalid(op, "gate, up and dy must have the same number of elements"));
    }
    let gpu = &gate.gpu;
    let n = g.len();
    let mut dg = gpu.alloc::<bf16>(n)?;
    let mut du = gpu.alloc::<bf16>(n)?;
    if n > 0 {
        let f = gpu.func("swiglu", "swiglu_bwd_bf16")?;
        let n64 = n as i64;
        // SAFETY: all five buffers hold n elements; the kernel writes each dg[i], du[i] once.
        unsafe {
            gpu.stream
                .launch_builder(&f)
                .arg(g)
                .arg(u)
                .arg(d)
                .arg(&mut dg)
                .arg(&mut du)
                .arg(&n64)
                .launch(grid_1d(n.div_ceil(8)))
        }
        .map_err(launch_err(op))?;
    }
    Ok((CudaStorage::new(gpu.clone(), CudaData::BF16(dg)), CudaStorage::new(gpu.clone(), CudaData::BF16(du))))
}

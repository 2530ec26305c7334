//! Launchers of kernels/cu/matmul.cu: C = op(A) op(B) on tensor cores, bf16 in, f32 accumulation,
//! bf16 or f32 out, optionally added into C. Row-major; a transpose is a flag, never a copy.
//! Tile choice depends on the sizes and the device only, so two runs are bitwise equal. On an
//! sm_90 device the experimental wgmma kernel (matmul_sm90.rs) takes the product instead when
//! the thread's GEMM kernel choice asks for it.

use super::launch::{Elem as E, Param as P};
use super::{Arg, CudaData, CudaStorage, DeviceBuffer, DeviceElem, Gpu, Kernel, LaunchConfig};
use crate::error::{Error, Result};
use crate::kernel_args::MatmulDims;
use half::bf16;

/// The C element types the kernels write.
pub trait GemmOut: DeviceElem {
    /// Whether C is f32 (the `_f32out` kernels) rather than bf16.
    const F32OUT: bool;
}
impl GemmOut for bf16 {
    const F32OUT: bool = false;
}
impl GemmOut for f32 {
    const F32OUT: bool = true;
}

/// A, B, C, M, N, K, strides of A, B, C between batches, accumulate (C += instead of C =).
pub(crate) const GEMM_BF16: &[P] = &[
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::BF16),
    P::MutPtr(E::BF16),
    P::I32,
    P::I32,
    P::I32,
    P::I64,
    P::I64,
    P::I64,
    P::I32,
];
pub(crate) const GEMM_F32OUT: &[P] = &[
    P::ConstPtr(E::BF16),
    P::ConstPtr(E::BF16),
    P::MutPtr(E::F32),
    P::I32,
    P::I32,
    P::I32,
    P::I64,
    P::I64,
    P::I64,
    P::I32,
];
const fn k(name: &'static str, params: &'static [P]) -> Kernel {
    Kernel { module: "matmul", name, params }
}
/// Indexed by `gemm_index(ta, tb, f32out, small)`: transposes (nn, nt, tn, tt), then C's type,
/// then the tile (big 128x256, small 128x128 `_s`).
pub const MATMUL: [Kernel; 16] = [
    k("matmul_nn_bf16", GEMM_BF16),
    k("matmul_nt_bf16", GEMM_BF16),
    k("matmul_tn_bf16", GEMM_BF16),
    k("matmul_tt_bf16", GEMM_BF16),
    k("matmul_nn_bf16_f32out", GEMM_F32OUT),
    k("matmul_nt_bf16_f32out", GEMM_F32OUT),
    k("matmul_tn_bf16_f32out", GEMM_F32OUT),
    k("matmul_tt_bf16_f32out", GEMM_F32OUT),
    k("matmul_nn_bf16_s", GEMM_BF16),
    k("matmul_nt_bf16_s", GEMM_BF16),
    k("matmul_tn_bf16_s", GEMM_BF16),
    k("matmul_tt_bf16_s", GEMM_BF16),
    k("matmul_nn_bf16_f32out_s", GEMM_F32OUT),
    k("matmul_nt_bf16_f32out_s", GEMM_F32OUT),
    k("matmul_tn_bf16_f32out_s", GEMM_F32OUT),
    k("matmul_tt_bf16_f32out_s", GEMM_F32OUT),
];
pub const KERNELS: &[&Kernel] = &[
    &MATMUL[0],
    &MATMUL[1],
    &MATMUL[2],
    &MATMUL[3],
    &MATMUL[4],
    &MATMUL[5],
    &MATMUL[6],
    &MATMUL[7],
    &MATMUL[8],
    &MATMUL[9],
    &MATMUL[10],
    &MATMUL[11],
    &MATMUL[12],
    &MATMUL[13],
    &MATMUL[14],
    &MATMUL[15],
];

/// The place of a GEMM variant in `MATMUL` (and, without `small`, in matmul_sm90's table).
pub(crate) fn gemm_index(ta: bool, tb: bool, f32out: bool, small: bool) -> usize {
    (ta as usize) * 2 + (tb as usize) + 4 * (f32out as usize) + 8 * (small as usize)
}

/// Threads per block (8 warps) of every matmul kernel (mm::THREADS).
const THREADS: u32 = 256;

/// A block tile of the kernels: (BM, BN, the small-tile kernels?, dynamic shared memory bytes).
#[derive(Clone, Copy, Debug)]
struct Tile {
    bm: usize,
    bn: usize,
    small: bool,
    smem: usize,
}
/// 128x256, 4 stages of (128 + 256) x 32 bf16.
const BIG: Tile = Tile { bm: 128, bn: 256, small: false, smem: 4 * (128 + 256) * 32 * 2 };
/// 128x128, 4 stages of (128 + 128) x 32 bf16.
const SMALL: Tile = Tile { bm: 128, bn: 128, small: true, smem: 4 * (128 + 128) * 32 * 2 };

/// The big tile once it gives at least one block per SM, else the small one (more blocks).
fn pick_tile(gpu: &Gpu, batch: usize, m: usize, n: usize) -> Tile {
    let big_blocks = batch * m.div_ceil(BIG.bm) * n.div_ceil(BIG.bn);
    if big_blocks >= gpu.sm_count {
        BIG
    } else {
        SMALL
    }
}

pub(crate) fn dim_i32(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::invalid(op, format!("{what} = {v} exceeds the matmul kernels' i32 range")))
}

/// C = op(A) op(B) (+ C when `accumulate`) for every batch, with the sizes of `d` (see
/// ops::matmul): A is [batch, M, K] ([batch, K, M] when `ta`), B [batch, K, N] ([batch, N, K]
/// when `tb`) or one 2-D B shared by the batch (`d.b_shared`), C [batch, M, N].
#[allow(clippy::too_many_arguments)]
pub fn gemm<O: GemmOut>(
    gpu: &Gpu,
    a: &DeviceBuffer<bf16>,
    b: &DeviceBuffer<bf16>,
    c: &mut DeviceBuffer<O>,
    d: MatmulDims,
    ta: bool,
    tb: bool,
    accumulate: bool,
) -> Result<()> {
    let op = "matmul";
    let MatmulDims { batch, m, n, k, b_shared } = d;
    let b_len = if b_shared { k * n } else { batch * k * n };
    if a.len() != batch * m * k || b.len() != b_len || c.len() != batch * m * n {
        return Err(Error::invalid(
            op,
            format!(
                "buffers of {}, {} and {} elements for batch {batch}, [{m}, {k}] x [{k}, {n}]{}",
                a.len(),
                b.len(),
                c.len(),
                if b_shared { " (B shared)" } else { "" }
            ),
        ));
    }
    if batch == 0 || m == 0 || n == 0 {
        return Ok(());
    }
    // A B shared by an untransposed A: one matmul over batch*M rows. (matmul_dims refuses a
    // batched transposed A with a shared B, so otherwise batch is 1 or B is per batch.)
    let (batch, m) = if b_shared && !ta { (1, batch * m) } else { (batch, m) };
    let (s_a, s_b, s_c) = ((m * k) as i64, if b_shared { 0 } else { (k * n) as i64 }, (m * n) as i64);
    if super::matmul_sm90::try_gemm(gpu, a, b, c, (batch, m, n, k), (s_a, s_b, s_c), (ta, tb), accumulate)? {
        return Ok(());
    }

    let tile = pick_tile(gpu, batch, m, n);
    let (tiles_m, tiles_n) = (m.div_ceil(tile.bm), n.div_ceil(tile.bn));
    if tiles_m > 65535 || batch > 65535 || tiles_m * tiles_n > i32::MAX as usize {
        return Err(Error::invalid(
            op,
            format!("a grid of {tiles_n} x {tiles_m} x {batch} tiles exceeds CUDA's limits (y and z at most 65535)"),
        ));
    }
    let (m32, n32, k32) = (dim_i32(op, "M", m)?, dim_i32(op, "N", n)?, dim_i32(op, "K", k)?);
    let kernel = &MATMUL[gemm_index(ta, tb, O::F32OUT, tile.small)];
    let config = LaunchConfig {
        grid_dim: (tiles_n as u32, tiles_m as u32, batch as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: tile.smem as u32,
    };
    let args = [
        Arg::ptr(a),
        Arg::ptr(b),
        Arg::ptr_mut(c),
        Arg::i32(m32),
        Arg::i32(n32),
        Arg::i32(k32),
        Arg::i64(s_a),
        Arg::i64(s_b),
        Arg::i64(s_c),
        Arg::i32(accumulate as i32),
    ];
    // SAFETY: the lengths were checked above against batch*M*K, (batch*)K*N and batch*M*N; the
    // kernel reads A and B within those bounds (bounds-checked or zero-filled at every edge) and
    // writes (and with `acc` reads) exactly the batch*M*N elements of C.
    unsafe { gpu.launch(op, kernel, config, &args) }?;
    Ok(())
}

/// op(A) op(B) of two bf16 tensors on one GPU: a fresh bf16 C [batch, M, N].
pub fn matmul(a: &CudaStorage, b: &CudaStorage, d: MatmulDims, ta: bool, tb: bool) -> Result<CudaStorage> {
    let op = "matmul";
    if a.gpu.ordinal != b.gpu.ordinal {
        return Err(Error::invalid(
            op,
            format!("inputs on cuda:{} and cuda:{}", a.gpu.ordinal, b.gpu.ordinal),
        ));
    }
    let (x, y) = (a.bf16(op)?, b.bf16(op)?);
    let gpu = &a.gpu;
    let mut c = gpu.alloc::<bf16>(d.batch * d.m * d.n)?;
    gemm(gpu, x, y, &mut c, d, ta, tb, false)?;
    Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher's tiles (block extent, dynamic shared memory) are the kernels' (checked by
    /// NVRTC's front end, no GPU).
    #[test]
    fn compile_tile_constants_match_matmul_cu() {
        let mut asserts = format!("static_assert(mm::THREADS == {THREADS}, \"block\");\n");
        for (name, t) in [("Big", BIG), ("Small", SMALL)] {
            asserts += &format!(
                "static_assert(mm::{name}::BM == {} && mm::{name}::BN == {}, \"{name} tile\");\n\
                 static_assert(mm::{name}::SMEM == {}, \"{name} smem\");\n",
                t.bm, t.bn, t.smem
            );
        }
        solar_kernels::check_launch_constants("matmul", &asserts, "sm_90").unwrap();
    }
}

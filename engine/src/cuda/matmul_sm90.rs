//! The experimental Hopper GEMM, kernels/cu/matmul_sm90.cu (wgmma, sm_90a): which GEMM kernel
//! the engine launches, and the launcher of the wgmma one.
//!
//! matmul.cu (mma.sync, any sm_80+) stays the default until a device run has held the wgmma
//! kernel to the CPU and timed the two side by side (DESIGN.md section 3: the loser goes).
//! `SOLAR_MATMUL=wgmma` makes wgmma the default where it applies; tests and the bench ask for a
//! kernel per thread with `with_gemm_kernel`, so parallel tests do not see each other's choice.
//! The choice changes only which kernel sums a product, never its order between runs: each
//! kernel alone is bitwise reproducible.

use super::matmul::{dim_i32, gemm_index, GemmOut, GEMM_BF16, GEMM_F32OUT};
use super::{Arg, DeviceBuffer, Gpu, Kernel, LaunchConfig};
use crate::error::{Error, Result};
use half::bf16;
use std::cell::Cell;
use std::sync::OnceLock;

/// Which kernel a bf16 GEMM on CUDA runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// matmul.cu: mma.sync m16n8k16 (sm_80 and later), every shape and alignment.
    MmaSync,
    /// matmul_sm90.cu where it applies (an sm_90 device, the contiguous dimensions multiples
    /// of 8), matmul.cu elsewhere.
    PreferWgmma,
    /// matmul_sm90.cu or an error saying why it does not apply (tests and bench rows).
    Wgmma,
}

/// Block tile of matmul_sm90.cu (wg::BM x wg::BN), its block (2 warpgroups) and its dynamic
/// shared memory: 4 stages of (128 + 256) x 64 bf16 plus 1 KiB to align the ring to 1024 bytes.
pub(crate) const BM: usize = 128;
pub(crate) const BN: usize = 256;
pub(crate) const THREADS: u32 = 256;
pub(crate) const SMEM: usize = 4 * (BM + BN) * 64 * 2 + 1024;

const fn k(name: &'static str, params: &'static [super::Param]) -> Kernel {
    Kernel { module: "matmul_sm90", name, params }
}
/// Indexed by matmul's `gemm_index(ta, tb, f32out, false)`; parameters as matmul.cu's.
pub const MATMUL_SM90: [Kernel; 8] = [
    k("matmul_sm90_nn_bf16", GEMM_BF16),
    k("matmul_sm90_nt_bf16", GEMM_BF16),
    k("matmul_sm90_tn_bf16", GEMM_BF16),
    k("matmul_sm90_tt_bf16", GEMM_BF16),
    k("matmul_sm90_nn_bf16_f32out", GEMM_F32OUT),
    k("matmul_sm90_nt_bf16_f32out", GEMM_F32OUT),
    k("matmul_sm90_tn_bf16_f32out", GEMM_F32OUT),
    k("matmul_sm90_tt_bf16_f32out", GEMM_F32OUT),
];
pub const KERNELS: &[&Kernel] = &[
    &MATMUL_SM90[0],
    &MATMUL_SM90[1],
    &MATMUL_SM90[2],
    &MATMUL_SM90[3],
    &MATMUL_SM90[4],
    &MATMUL_SM90[5],
    &MATMUL_SM90[6],
    &MATMUL_SM90[7],
];

thread_local! {
    static CHOICE: Cell<Option<GemmKernel>> = const { Cell::new(None) };
}

/// The kernel this thread's GEMMs run: `with_gemm_kernel`'s, else `SOLAR_MATMUL`'s (wgmma:
/// PreferWgmma; unset or mma: MmaSync).
pub fn gemm_kernel() -> GemmKernel {
    static DEFAULT: OnceLock<GemmKernel> = OnceLock::new();
    CHOICE.with(Cell::get).unwrap_or_else(|| {
        *DEFAULT.get_or_init(|| match std::env::var("SOLAR_MATMUL").as_deref() {
            Ok("wgmma") => GemmKernel::PreferWgmma,
            _ => GemmKernel::MmaSync,
        })
    })
}

/// Runs `f` with this thread's GEMMs on `kernel`, restoring the previous choice after (also
/// when `f` panics, so a failing test does not leak its choice into the next on this thread).
pub fn with_gemm_kernel<R>(kernel: GemmKernel, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<GemmKernel>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CHOICE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CHOICE.with(|c| c.replace(Some(kernel))));
    f()
}

/// Why matmul_sm90.cu cannot compute this product on `gpu`, or None when it can.
fn unsupported(gpu: &Gpu, lda: usize, ldb: usize, tiles_m: usize, batch: usize) -> Option<String> {
    if gpu.arch != "sm_90" {
        return Some(format!("the wgmma GEMM needs an sm_90 device; cuda:{} is {}", gpu.ordinal, gpu.arch));
    }
    if !gpu.has_kernel(&MATMUL_SM90[0]) {
        return Some(format!("cuda:{} ({}) does not run matmul_sm90.cu", gpu.ordinal, gpu.name));
    }
    if !lda.is_multiple_of(8) || !ldb.is_multiple_of(8) {
        return Some(format!(
            "the wgmma GEMM needs the contiguous dimensions of A and B to be multiples of 8 (they are {lda} and {ldb})"
        ));
    }
    if tiles_m > 65535 || batch > 65535 {
        return Some(format!("{tiles_m} tile rows and batch {batch} exceed the grid (65535 each)"));
    }
    None
}

/// Launches matmul_sm90.cu for C = op(A) op(B) (+ C) when the thread's choice asks for it and
/// it applies; Ok(false) when matmul.cu should run instead. Sizes are the launcher's after
/// folding a shared B into rows (matmul::gemm checked the buffer lengths); strides in elements.
#[allow(clippy::too_many_arguments)]
pub(crate) fn try_gemm<O: GemmOut>(
    gpu: &Gpu,
    a: &DeviceBuffer<bf16>,
    b: &DeviceBuffer<bf16>,
    c: &mut DeviceBuffer<O>,
    (batch, m, n, k): (usize, usize, usize, usize),
    (s_a, s_b, s_c): (i64, i64, i64),
    (ta, tb): (bool, bool),
    accumulate: bool,
) -> Result<bool> {
    let op = "matmul (wgmma)";
    let choice = gemm_kernel();
    if choice == GemmKernel::MmaSync {
        return Ok(false);
    }
    let (lda, ldb) = (if ta { m } else { k }, if tb { k } else { n });
    let (tiles_m, tiles_n) = (m.div_ceil(BM), n.div_ceil(BN));
    if let Some(why) = unsupported(gpu, lda, ldb, tiles_m, batch) {
        return match choice {
            GemmKernel::Wgmma => Err(Error::invalid(op, why)),
            _ => Ok(false),
        };
    }
    let (m32, n32, k32) = (dim_i32(op, "M", m)?, dim_i32(op, "N", n)?, dim_i32(op, "K", k)?);
    let kernel = &MATMUL_SM90[gemm_index(ta, tb, O::F32OUT, false)];
    let config = LaunchConfig {
        grid_dim: (tiles_n as u32, tiles_m as u32, batch as u32),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: SMEM as u32,
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
    // SAFETY: matmul::gemm checked the lengths against batch*M*K, (batch*)K*N and batch*M*N;
    // the kernel reads A and B within them (zero-filling whole 16-byte chunks past every edge,
    // which the multiple-of-8 contiguous dimensions make exact) and writes (and with `acc`
    // reads) exactly the batch*M*N elements of C.
    unsafe { gpu.launch(op, kernel, config, &args) }?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher's tile, block and shared memory are matmul_sm90.cu's (NVRTC front end).
    #[test]
    fn compile_wgmma_constants_match_matmul_sm90_cu() {
        let asserts = format!(
            "static_assert(wg::BM == {BM} && wg::BN == {BN}, \"tile\");\n\
             static_assert(wg::THREADS == {THREADS}, \"block\");\n\
             static_assert(wg::SMEM == {SMEM}, \"smem\");\n"
        );
        solar_kernels::check_launch_constants("matmul_sm90", &asserts, "sm_90").unwrap();
    }

    /// Where the kernel's cp.async stores put each element of a stage tile (off_k / off_mn) is
    /// where wgmma reads it through the kernel's descriptors (slice_start, slice_lbo,
    /// slice_sbo), for both operands in both majors: the reading side is the canonical 128-byte
    /// swizzle layouts of the PTX ISA ("Shared Memory Matrix Layout"; in CuTe terms, for bf16
    /// with T = 8 elements a 16-byte chunk, K-major ((8,m),(T,2k)):((8T,SBO),(1,T)) and MN-major
    /// ((T,8,m),(8,k)):((1,T,LBO),(8T,SBO))), then the swizzle XOR of address bits 4-6 with 7-9.
    /// Checked by the NVRTC front end, no GPU needed; swapped LBO and SBO must disagree, so the
    /// check can tell the likeliest mistake apart.
    #[test]
    fn compile_wgmma_smem_layout_is_the_canonical_one() {
        let asserts = r#"
namespace wg_check {
__host__ __device__ constexpr unsigned swizzle128(unsigned a) { return a ^ (((a >> 7) & 7) << 4); }
// Byte where wgmma reads element (mn, k) of a tile of EXT rows, through slices W rows wide.
template <bool MN, int EXT, int W, bool SWAP>
__host__ __device__ constexpr unsigned read_at(int mn, int k) {
    const int i = mn % W, j = k % 16;
    const unsigned start = wg::slice_start<MN, EXT>(mn / W * W, k / 16);
    unsigned lbo = wg::slice_lbo<MN, EXT>(), sbo = wg::slice_sbo<MN, EXT>();
    if (SWAP) { const unsigned t = lbo; lbo = sbo; sbo = t; }
    return swizzle128(MN ? start + 2 * (i % 64) + (i / 64) * lbo + (j % 8) * 128 + (j / 8) * sbo
                         : start + (i / 8) * sbo + (i % 8) * 128 + 2 * j);
}
// Byte where the kernel's cp.async puts element (mn, k): its 16-byte chunk, then the element.
template <bool MN, int EXT>
__host__ __device__ constexpr unsigned stored_at(int mn, int k) {
    return MN ? wg::off_mn<EXT>(k, mn / 8) + 2 * (mn % 8) : wg::off_k(mn, k / 8) + 2 * (k % 8);
}
template <bool MN, int EXT, int W, bool SWAP = false>
__host__ __device__ constexpr bool agrees() {
    for (int mn = 0; mn < EXT; ++mn)
        for (int k = 0; k < wg::BK; ++k)
            if (stored_at<MN, EXT>(mn, k) != read_at<MN, EXT, W, SWAP>(mn, k)) return false;
    return true;
}
// A: slices of 64 rows (one warpgroup's); B: slices of 128 columns (one n half).
static_assert(agrees<false, wg::BM, 64>(), "A K-major (stored [M][K])");
static_assert(agrees<true, wg::BM, 64>(), "A MN-major (stored [K][M])");
static_assert(agrees<false, wg::BN, 128>(), "B K-major (stored [N][K])");
static_assert(agrees<true, wg::BN, 128>(), "B MN-major (stored [K][N])");
static_assert(!agrees<true, wg::BN, 128, true>(), "swapped LBO and SBO must not pass");
}
"#;
        solar_kernels::check_launch_constants("matmul_sm90", asserts, "sm_90").unwrap();
    }

    #[test]
    fn the_kernel_choice_is_per_thread_and_restored() {
        let outer = gemm_kernel();
        with_gemm_kernel(GemmKernel::Wgmma, || {
            assert_eq!(gemm_kernel(), GemmKernel::Wgmma);
            let other = std::thread::spawn(gemm_kernel).join().unwrap();
            assert_eq!(other, outer, "another thread keeps its own choice");
        });
        assert_eq!(gemm_kernel(), outer);
        let _ = std::panic::catch_unwind(|| with_gemm_kernel(GemmKernel::Wgmma, || panic!("test")));
        assert_eq!(gemm_kernel(), outer, "restored after a panic");
    }
}

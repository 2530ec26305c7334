// matmul_sm90.cu: bf16 GEMM on Hopper's warpgroup tensor cores (wgmma.mma_async, sm_90a only),
// the same contract as matmul.cu for the aligned case. EXPERIMENTAL: compiled and checked here
// without a GPU; the engine uses it only when SOLAR_MATMUL=wgmma (or a test asks), until a
// device run has held it to the CPU and timed it against matmul.cu (DESIGN.md section 3: the
// loser goes).
//
//   C[b] (M x N) = op(A[b]) op(B[b])  (+ C[b] when accumulate != 0),  b = blockIdx.z
// Kernels: matmul_sm90_{nn,nt,tn,tt}_bf16[_f32out], parameters as matmul.cu's:
//   (const bf16* A, const bf16* B, OUT* C, int M, int N, int K, long sA, long sB, long sC, int acc)
// Launch: grid (ceil(N/256), ceil(M/128), batch), block 256 (2 warpgroups), dynamic smem
//   wg::SMEM = 197632 B (4 stages of 48 KiB + 1 KiB to align the ring to 1024 B).
// Preconditions (the launcher checks; else it takes matmul.cu): the contiguous dimension of each
//   stored operand (K of an untransposed A or a transposed B, M of a transposed A, N of an
//   untransposed B) and the batch strides multiples of 8, A and B 16-byte aligned; ceil(M/128)
//   and batch at most 65535; C does not overlap A or B. Any M, N, K >= 0.
//
// Algorithm: a block owns a 128 x 256 tile of C; warpgroup w (threads 128w..128w+127) owns rows
// 64w..64w+63 and holds them as two m64n128 f32 accumulators (128 registers a thread). K goes
// in steps of 64 through a 4-stage ring that every thread fills with cp.async (the copy of step
// k+3 is in flight while step k is multiplied). Shared tiles use the 128-byte swizzle wgmma
// reads natively (16-byte chunk c of 128-byte row r at chunk c ^ (r % 8), 1024-byte atoms):
//   K-major operand (K contiguous in memory): tile [EXT][64], row = m or n; descriptor
//     LBO 16 (unused), SBO 1024 (8 rows); the k16 slice kk starts 32 kk bytes in.
//   MN-major operand (M or N contiguous): tile of atoms [64 / 8 k-groups][EXT / 64][8 k][64],
//     descriptor LBO 1024 (the next 64 of M or N), SBO EXT / 64 * 1024 (the next 8 k); the
//     k16 slice kk starts 2 kk SBO bytes in; the instruction's transpose bit says MN-major.
// Per step: wait for the stage, fence.proxy.async (the cp.async writes become visible to the
// tensor cores' async proxy), barrier, issue the next copy, then wgmma.fence, 4 k16 slices x 2
// n halves of wgmma m64n128k16, commit, wait for all. Each C element is summed by one thread in
// a fixed order: deterministic, no split-K, no atomics. Blocks are rastered in groups of 8 tile
// rows as in matmul.cu.
#include "gemm_store.cuh"
#include "tensor_core.cuh"

namespace wg {
using namespace tc;

constexpr int THREADS = 256;
constexpr int BM = 128, BN = 256, BK = 64, STAGES = 4;
constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
constexpr int SMEM = STAGES * STAGE_BYTES + 1024;
static_assert(SMEM <= 227 * 1024, "Hopper's opt-in shared memory per block");
constexpr int GROUP_M = 8;

// A shared-memory matrix descriptor: start address, leading and stride byte offsets (all in
// 16-byte units), 128-byte swizzle (mode 1 in bits 62-63), base offset 0 (atoms 1024-aligned).
__device__ __forceinline__ unsigned long long desc(unsigned addr, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
           ((unsigned long long)(sbo >> 4) << 32) | (1ull << 62);
}

// Byte offset of 16-byte chunk c of row r of a K-major tile [EXT][64].
__host__ __device__ constexpr int off_k(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }
// Byte offset of 16-byte chunk c (elements 8c..8c+7 of M or N) of k row `k` of an MN-major tile.
template <int EXT>
__host__ __device__ constexpr int off_mn(int k, int c) {
    return (k >> 3) * (EXT / 64 * 1024) + (c >> 3) * 1024 + (k & 7) * 128 + (((c & 7) ^ (k & 7)) << 4);
}

// Where one wgmma operand slice starts in a stage tile of EXT rows of M or N, and its leading
// and stride byte offsets: the slice holds M or N rows mn0.. (mn0 a multiple of 64) and k
// 16 kk..16 kk + 15. The engine's layout check (engine/src/cuda/matmul_sm90.rs) holds these,
// with off_k / off_mn, to the canonical layouts wgmma reads.
template <bool MNMAJOR, int EXT>
__host__ __device__ constexpr unsigned slice_start(int mn0, int kk) {
    return MNMAJOR ? (mn0 / 64) * 1024 + kk * 2 * (EXT / 64 * 1024) : mn0 * 128 + kk * 32;
}
template <bool MNMAJOR, int EXT>
__host__ __device__ constexpr unsigned slice_lbo() { return MNMAJOR ? 1024 : 16; }
template <bool MNMAJOR, int EXT>
__host__ __device__ constexpr unsigned slice_sbo() { return MNMAJOR ? EXT / 64 * 1024 : 1024; }
template <bool MNMAJOR, int EXT>
__device__ __forceinline__ unsigned long long slice_desc(unsigned tile, int mn0, int kk) {
    return desc(tile + slice_start<MNMAJOR, EXT>(mn0, kk), slice_lbo<MNMAJOR, EXT>(), slice_sbo<MNMAJOR, EXT>());
}

// Issues the cp.async copies of one operand's stage tile: EXT rows of M or N by BK of k,
// starting at (mn0, k0) of a stored matrix with leading dimension ld (elements). Chunks past
// MN or K are zero-filled (whole chunks: the contiguous bound is a multiple of 8).
template <bool KMAJOR, int EXT>
__device__ __forceinline__ void load_tile(unsigned tile, const bf16* g, long ld, int mn0, int MN, int k0, int K) {
    constexpr int CHUNKS = EXT * BK / 8;
    static_assert(CHUNKS % THREADS == 0, "whole chunks per thread");
#pragma unroll
    for (int it = 0; it < CHUNKS / THREADS; ++it) {
        const int i = it * THREADS + threadIdx.x;
        int mn, k, off;
        if (KMAJOR) {
            const int r = i >> 3, c = i & 7;  // 8 chunks of k per row
            mn = mn0 + r;
            k = k0 + c * 8;
            off = off_k(r, c);
        } else {
            const int r = i / (EXT / 8), c = i % (EXT / 8);  // EXT / 8 chunks of M or N per k row
            mn = mn0 + c * 8;
            k = k0 + r;
            off = off_mn<EXT>(r, c);
        }
        const bool ok = mn < MN && k < K;
        const bf16* src = KMAJOR ? g + (long)mn * ld + k : g + (long)k * ld + mn;
        cp_async16(tile + off, ok ? src : g, ok ? 16 : 0);
    }
}

#ifdef SOLAR_EMU
// The emulator (kernels/emu) runs each wgmma synchronously as a warpgroup collective that
// decodes the descriptors (128-byte swizzle) and writes the accumulators in the instruction's
// layout, so the fences and the commit/wait bookkeeping have nothing left to order.
__device__ __forceinline__ void fence_proxy_async() {}
__device__ __forceinline__ void wgmma_fence() {}
__device__ __forceinline__ void wgmma_commit() {}
template <int N>
__device__ __forceinline__ void wgmma_wait() {}
__device__ __forceinline__ void fence_operands(float (&)[64]) {}
template <int MN_A, int MN_B>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], unsigned long long da, unsigned long long db) {
    emu_wgmma_m64n128k16(d, da, db, MN_A, MN_B);
}
#else
__device__ __forceinline__ void fence_proxy_async() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from reading or writing accumulators across an in-flight wgmma.
__device__ __forceinline__ void fence_operands(float (&d)[64]) {
#pragma unroll
    for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// d (64 x 128 f32, this warpgroup's) += A (64 x 16, descriptor da) B (16 x 128, descriptor db).
// MN_A / MN_B: that operand's tile is MN-major (the instruction's transpose bits; wgmma's
// untransposed B is K-major, i.e. stored [N][K]).
template <int MN_A, int MN_B>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], unsigned long long da, unsigned long long db) {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "setp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
        "%64, %65, p, 1, 1, %67, %68;\n"
        "}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(1), "n"(MN_A), "n"(MN_B));
}
#endif

template <bool TA, bool TB, typename OutT>
__device__ __forceinline__ void gemm(const bf16* __restrict__ A, const bf16* __restrict__ B, OutT* __restrict__ C,
                                     int M, int N, int K, long sA, long sB, long sC, int accumulate) {
    extern __shared__ __align__(1024) unsigned char smem[];
    const unsigned base = (smem_u32(smem) + 1023u) & ~1023u;

    const int tiles_n = gridDim.x, tiles_m = gridDim.y;
    const int lin = blockIdx.y * tiles_n + blockIdx.x;
    const int per_group = GROUP_M * tiles_n;
    const int first_m = (lin / per_group) * GROUP_M;
    const int gsize = min(tiles_m - first_m, GROUP_M);
    const int m0 = (first_m + (lin % per_group) % gsize) * BM, n0 = ((lin % per_group) / gsize) * BN;

    const long z = blockIdx.z;
    A += z * sA;
    B += z * sB;
    C += z * sC;
    const long lda = TA ? M : K, ldb = TB ? K : N;
    const int ktiles = (K + BK - 1) / BK;
    auto load_stage = [&](int kt) {
        const unsigned sa = base + (kt % STAGES) * STAGE_BYTES, sb = sa + A_BYTES;
        load_tile<!TA, BM>(sa, A, lda, m0, M, kt * BK, K);
        load_tile<TB, BN>(sb, B, ldb, n0, N, kt * BK, K);
    };
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ktiles) load_stage(s);
        cp_commit();
    }

    const int w = threadIdx.x >> 7;  // warpgroup: rows 64w..64w+63 of the tile
    float acc[2][64];
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int i = 0; i < 64; ++i) acc[h][i] = 0.f;

    for (int kt = 0; kt < ktiles; ++kt) {
        cp_wait<STAGES - 2>();
        fence_proxy_async();
        __syncthreads();  // stage kt is in for every thread; every warpgroup is done with kt - 1
        if (kt + STAGES - 1 < ktiles) load_stage(kt + STAGES - 1);
        cp_commit();
        const unsigned sa = base + (kt % STAGES) * STAGE_BYTES, sb = sa + A_BYTES;
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            // A is MN-major when stored transposed ([K][M]); B when stored untransposed ([K][N]).
            const unsigned long long da = slice_desc<TA, BM>(sa, w * 64, kk);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const unsigned long long db = slice_desc<!TB, BN>(sb, h * 128, kk);
                wgmma_m64n128k16<TA, !TB>(acc[h], da, db);
            }
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_operands(acc[0]);
        fence_operands(acc[1]);
    }
    cp_wait<0>();

    // Accumulator layout of m64nNk16: warp q of the warpgroup holds rows 16q..16q+15; lane
    // (g, t4) holds rows g and g + 8, columns 2 t4 and 2 t4 + 1 of every 8-column block j, as
    // d[4j], d[4j + 1] (row g) and d[4j + 2], d[4j + 3] (row g + 8).
    const int lane = threadIdx.x & 31, q = (threadIdx.x >> 5) & 3, g = lane >> 2, t4 = lane & 3;
    const bool vec = (N & 1) == 0 && (sC & 1) == 0 &&
                     (reinterpret_cast<unsigned long long>(C) & (2 * sizeof(OutT) - 1)) == 0;
    const bool accum = accumulate != 0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = m0 + w * 64 + q * 16 + g + 8 * r;
        if (row >= M) continue;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
#pragma unroll
            for (int j = 0; j < 16; ++j) {
                const int col = n0 + h * 128 + j * 8 + t4 * 2;
                if (col >= N) continue;
                store2(C, (long)row * N + col, acc[h][4 * j + 2 * r], acc[h][4 * j + 2 * r + 1], col + 1 < N, vec,
                       accum);
            }
        }
    }
}

}  // namespace wg

// The entry points: layout x output type, each the one template above.
// clang-format off
extern "C" __global__ void __launch_bounds__(256, 1) matmul_sm90_nn_bf16(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { wg::gemm<false, false>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_sm90_nn_bf16_f32out(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { wg::gemm<false, false>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_sm90_nt_bf16(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { wg::gemm<false, true>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_sm90_nt_bf16_f32out(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { wg::gemm<false, true>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_sm90_tn_bf16(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { wg::gemm<true, false>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_sm90_tn_bf16_f32out(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { wg::gemm<true, false>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_sm90_tt_bf16(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { wg::gemm<true, true>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_sm90_tt_bf16_f32out(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { wg::gemm<true, true>(A, B, C, M, N, K, sA, sB, sC, acc); }
// clang-format on

// matmul.cu: bf16 GEMM on tensor cores (sm_80 / sm_90), row-major everywhere.
//
//   C[b] (M x N) = op(A[b]) op(B[b])  (+ C[b] when accumulate != 0),  b = blockIdx.z
//   A is [M, K], or [K, M] when transposed; B is [K, N], or [N, K] when transposed.
//   Batch strides are in elements; strideB = 0 shares one B across the batch. (A shared B with
//   an untransposed A is better launched as one matmul over batch*M rows.)
//
// Kernels: matmul_{nn,nt,tn,tt}_bf16[_f32out][_s]
//   first letter: A transposed (t) or not (n); second: B. Inputs are bf16, accumulation f32.
//   _f32out: C is f32 (else bf16, rounded to nearest even once, after the accumulate add).
//   no suffix: 128x256 tile (8 warps, 2x4, each 64x64), 98304 B dynamic smem, 1 block/SM.
//   _s:        128x128 tile (8 warps, 2x4, each 64x32), 65536 B dynamic smem, for grids that
//              would not fill the GPU with the big tile.
// Parameters (every kernel): (const bf16* A, const bf16* B, OUT* C, int M, int N, int K,
//   long strideA, long strideB, long strideC, int accumulate)
// Launch: grid (ceil(N/BN), ceil(M/BM), batch), block 256, dynamic smem as above (over 48 KB:
//   the caller sets CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES once per function). M, N >= 1;
//   K >= 0 (K = 0 writes zeros, or leaves C unchanged when accumulating); ceil(M/BM) and batch
//   at most 65535 (grid y and z); C does not overlap A or B. Any M, N, K, alignment and stride.
//
// Algorithm: each block owns a BM x BN tile of C and walks K in steps of 32 through a 4-stage
// cp.async ring in shared memory (the copy of step k+3 is in flight while step k is multiplied).
// A warp owns a 64 x (BN/4) sub-tile: per 16-wide k slice it loads its A fragments and B
// fragments with ldmatrix (.trans where the stored layout is MN-contiguous) and issues
// mma.sync m16n8k16 bf16 -> f32. Shared tiles are XOR-swizzled in 16-byte chunks so both the
// cp.async writes and the ldmatrix reads of 8 rows hit 8 different bank groups (no padding).
// Loads: when every row of A and B starts 16-byte aligned (the contiguous dim of each stored
// matrix a multiple of 8, aligned base pointers and batch strides) tiles arrive by cp.async with
// zero fill past the edges; otherwise (odd K, say) the same tiles are filled by bounds-checked
// 2-byte loads, so no shape reads past a row. Out-of-range k is zero in both A and B, so padded
// products add exact zeros. Each C element is summed by one thread in a fixed order:
// deterministic, no split-K, no atomics. Blocks are visited in groups of 8 tile rows so
// neighbouring blocks share A and B tiles in L2.
#include "gemm_store.cuh"
#include "tensor_core.cuh"

namespace mm {
using namespace tc;

constexpr int THREADS = 256;
constexpr int BK = 32;      // k per stage: a K-contiguous tile row is 64 bytes = 4 chunks
constexpr int STAGES = 4;
constexpr int GROUP_M = 8;  // tile rows per L2 raster group

// Byte offsets inside one stage tile of EXT (M or N) x BK elements, by 16-byte chunk.
// K-contiguous tile [EXT][32]: a row is 4 chunks, two rows share a 128-byte bank line, so the
// chunk is XORed with (row / 2) % 4: 8 consecutive rows at one chunk land in 8 bank groups.
__host__ __device__ constexpr int off_kc(int row, int chunk) {
    return row * (BK * 2) + ((chunk ^ ((row >> 1) & 3)) << 4);
}
// MN-contiguous tile [32][EXT] (EXT >= 64): every row starts a bank line, so the chunk is
// XORed with row % 8.
template <int EXT>
__host__ __device__ constexpr int off_mn(int row, int chunk) {
    return row * (EXT * 2) + ((chunk ^ (row & 7)) << 4);
}

// Fills the stage tiles of one operand, one k-tile after the other. KC: the stored matrix is
// [MN][K] (K contiguous), else [K][MN]. A thread copies PER chunks of 16 bytes, RSTEP stored
// rows apart, so its chunks share one column and one swizzle key: their shared offsets differ
// by constants and their global addresses by RSTEP rows. With ALIGNED the contiguous bound is a
// multiple of 8, so a chunk is all in or all out and cp.async zero-fills the outs; otherwise
// 2-byte loads check each element.
template <bool KC, int EXT>
struct TileLoader {
    static constexpr int CPR = KC ? BK / 8 : EXT / 8;  // chunks per stored tile row
    static constexpr int PER = EXT * BK / 8 / THREADS;
    static constexpr int RSTEP = THREADS / CPR;
    static constexpr int COPY_STRIDE = RSTEP * (KC ? BK * 2 : EXT * 2);  // shared bytes between copies
    static_assert(PER * THREADS * 8 == EXT * BK && RSTEP % 8 == 0, "chunks divide over the block");

    // Copy i of thread tid: stored tile row, 16-byte chunk of that row, and shared offset. The
    // offset is the first copy's plus i strides: RSTEP rows keep the swizzle key (the NVRTC test
    // in kernels/tests/matmul_layout.cuh holds this, and the whole data path, to the PTX layouts).
    __host__ __device__ static constexpr int copy_row(int tid, int i) { return tid / CPR + i * RSTEP; }
    __host__ __device__ static constexpr int copy_chunk(int tid) { return tid % CPR; }
    __host__ __device__ static constexpr int copy_off(int tid, int i) {
        return (KC ? off_kc(tid / CPR, tid % CPR) : off_mn<EXT>(tid / CPR, tid % CPR)) + i * COPY_STRIDE;
    }

    const bf16* base;  // the matrix: a safe address for the copies that read nothing
    const bf16* p;     // this thread's first chunk of the next k-tile (may point past the matrix)
    long step;         // elements between this thread's chunks
    long advance;      // elements from one k-tile to the next
    int row, col;      // stored-matrix coordinates of the first chunk of the next k-tile
    int rows, cols;    // stored-matrix bounds
    int smem_off;      // of the first chunk inside a stage tile

    __device__ __forceinline__ TileLoader(const bf16* m, long ld, int mn0, int MN, int K, int tid) {
        const int r = copy_row(tid, 0), c = copy_chunk(tid);
        base = m;
        step = RSTEP * ld;
        advance = KC ? BK : BK * ld;
        row = KC ? mn0 + r : r;
        col = KC ? c * 8 : mn0 + c * 8;
        rows = KC ? MN : K;
        cols = KC ? K : MN;
        p = m + (long)row * ld + col;
        smem_off = copy_off(tid, 0);
    }

    template <bool ALIGNED>
    __device__ __forceinline__ void next(unsigned char* tile) {
        const unsigned dst = smem_u32(tile) + smem_off;
#pragma unroll
        for (int i = 0; i < PER; i++) {
            const bool row_ok = row + i * RSTEP < rows;
            const int off = i * COPY_STRIDE;
            if (ALIGNED) {
                const bool ok = row_ok && col < cols;
                cp_async16(dst + off, ok ? p + i * step : base, ok ? 16 : 0);
            } else {
                const unsigned short* q = reinterpret_cast<const unsigned short*>(p + i * step);
                unsigned w[4];
#pragma unroll
                for (int e = 0; e < 8; e += 2) {
                    const unsigned lo = (row_ok && col + e < cols) ? q[e] : 0u;
                    const unsigned hi = (row_ok && col + e + 1 < cols) ? q[e + 1] : 0u;
                    w[e / 2] = lo | (hi << 16);
                }
                *reinterpret_cast<uint4*>(tile + smem_off + off) = make_uint4(w[0], w[1], w[2], w[3]);
            }
        }
        p += advance;
        if (KC) col += BK;
        else row += BK;
    }
};

// A block tile shape: BM x BN of C, WM x WN warps, each owning WTM x WTN = MI x NI mma tiles.
template <int BM_, int BN_, int WM_, int WN_>
struct Tile {
    static constexpr int BM = BM_, BN = BN_, WM = WM_, WN = WN_;
    static constexpr int WTM = BM / WM, WTN = BN / WN, MI = WTM / 16, NI = WTN / 8;
    static constexpr int A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2, STAGE_BYTES = A_BYTES + B_BYTES;
    static constexpr int SMEM = STAGES * STAGE_BYTES;
    static_assert(WM * WN * 32 == THREADS && NI % 2 == 0 && MI >= 1, "8 warps, n tiles in pairs");
};
typedef Tile<128, 256, 2, 4> Big;    // 98304 B smem
typedef Tile<128, 128, 2, 4> Small;  // 65536 B smem

// ldmatrix row addresses: an x4 load reads four 8x8 matrices, lane l handing it row l % 8 of
// matrix l / 8. These give the lane's byte offset inside a stage tile for the warp's A fragment
// i (rows i*16.. of its WTM) and B fragment pair p (columns p*16.. of its WTN) of k slice kk.
// The kernel computes one index's offsets once and adds FRAG_STEP per step of the other (kk
// where the tile is MN-contiguous, i or p where it is K-contiguous): the swizzle key does not
// change along it.
template <bool TA, class T>
__host__ __device__ constexpr int a_frag_off(int lane, int wm, int i, int kk) {
    const int q8 = lane >> 3, r8 = lane & 7;
    // [BM][BK]: matrices (rows 0-7 | 8-15) x (k 0-7 | 8-15) = a0 a1 a2 a3.
    if (!TA) return off_kc(wm * T::WTM + i * 16 + (lane & 15), kk * 2 + (lane >> 4));
    // [BK][BM]: stored rows are k, and .trans gives the row-major fragment.
    return off_mn<T::BM>(kk * 16 + r8 + ((q8 >> 1) << 3), (wm * T::WTM + i * 16 + ((q8 & 1) << 3)) >> 3);
}
template <bool TA, class T>
constexpr int A_FRAG_STEP = TA ? 16 * T::BM * 2 : 16 * BK * 2;
// B: matrices (k 0-7, n 0-7) (k 8-15, n 0-7) (k 0-7, n 8-15) (k 8-15, n 8-15) = b0 b1 of n tile
// 2p, then of 2p+1.
template <bool TB, class T>
__host__ __device__ constexpr int b_frag_off(int lane, int wn, int p, int kk) {
    const int q8 = lane >> 3, r8 = lane & 7;
    // [BK][BN], read with .trans.
    if (!TB) return off_mn<T::BN>(kk * 16 + r8 + ((q8 & 1) << 3), (wn * T::WTN + p * 16 + ((q8 >> 1) << 3)) >> 3);
    // [BN][BK], no transpose.
    return off_kc(wn * T::WTN + p * 16 + r8 + ((q8 >> 1) << 3), kk * 2 + (q8 & 1));
}
template <bool TB, class T>
constexpr int B_FRAG_STEP = TB ? 16 * BK * 2 : 16 * T::BN * 2;
// Where accumulator q of the lane's mma tile (i, j) lies in the block's C tile: lane (g, t4)
// holds rows g and g+8, columns 2 t4 and 2 t4 + 1 of each 16x8 tile.
template <class T>
__host__ __device__ constexpr int c_frag_row(int lane, int wm, int i, int q) {
    return wm * T::WTM + i * 16 + (lane >> 2) + (q >> 1) * 8;
}
template <class T>
__host__ __device__ constexpr int c_frag_col(int lane, int wn, int j, int q) {
    return wn * T::WTN + j * 8 + (lane & 3) * 2 + (q & 1);
}

// The K loop of one block: acc += op(A)[m0.., :] op(B)[:, n0..]. ALIGNED picks cp.async over
// checked 2-byte loads for the whole loop, so the fast path has no per-copy branch.
template <bool TA, bool TB, class T, bool ALIGNED>
__device__ __forceinline__ void mainloop(float (&acc)[T::MI][T::NI][4], unsigned char* smem,
                                         const bf16* __restrict__ A, const bf16* __restrict__ B, int M,
                                         int N, int K, int m0, int n0) {
    constexpr int BM = T::BM, BN = T::BN, MI = T::MI, NI = T::NI;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = warp / T::WN, wn = warp % T::WN;
    const long lda = TA ? M : K, ldb = TB ? K : N;

    const int ktiles = (K + BK - 1) / BK;
    TileLoader<!TA, BM> la(A, lda, m0, M, K, tid);
    TileLoader<TB, BN> lb(B, ldb, n0, N, K, tid);
    // Loads k-tiles in order 0, 1, 2, ... (the loaders keep the position).
    auto load_stage = [&](int stage) {
        unsigned char* s = smem + stage * T::STAGE_BYTES;
        la.template next<ALIGNED>(s);
        lb.template next<ALIGNED>(s + T::A_BYTES);
    };
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < ktiles) load_stage(s);
        cp_commit();
    }

    // Per-lane ldmatrix offsets inside a stage tile: a_off[kk] + i * a_step (A untransposed) or
    // a_off[i] + kk * a_step (transposed); b_off[p] + kk * b_step (B untransposed) or
    // b_off[kk] + p * b_step. Kept in registers so the per-slice parts are constants.
    int a_off[TA ? MI : 2];
    if (!TA) {
#pragma unroll
        for (int kk = 0; kk < 2; kk++) a_off[kk] = a_frag_off<TA, T>(lane, wm, 0, kk);
    } else {
#pragma unroll
        for (int i = 0; i < MI; i++) a_off[i] = a_frag_off<TA, T>(lane, wm, i, 0);
    }
    constexpr int a_step = A_FRAG_STEP<TA, T>;
    int b_off[TB ? 2 : NI / 2];
    if (!TB) {
#pragma unroll
        for (int p = 0; p < NI / 2; p++) b_off[p] = b_frag_off<TB, T>(lane, wn, p, 0);
    } else {
#pragma unroll
        for (int kk = 0; kk < 2; kk++) b_off[kk] = b_frag_off<TB, T>(lane, wn, 0, kk);
    }
    constexpr int b_step = B_FRAG_STEP<TB, T>;
    const unsigned smem_base = smem_u32(smem);

    for (int kt = 0; kt < ktiles; kt++) {
        // Stage kt has landed (this thread's copies), and the barrier publishes everyone's and
        // retires stage kt-1, which the prefetch below overwrites.
        cp_wait<STAGES - 2>();
        __syncthreads();

        // The first k slice's fragments go ahead of the prefetch, so the ldmatrix latency hides
        // behind its address arithmetic (the checked loads hold too many registers for that:
        // they go first); the second slice's load overlaps the first slice's mma.
        if (!ALIGNED && kt + STAGES - 1 < ktiles) load_stage((kt + STAGES - 1) % STAGES);
        const unsigned sa = smem_base + (kt % STAGES) * T::STAGE_BYTES, sb = sa + T::A_BYTES;
        unsigned af[BK / 16][MI][4], bfr[BK / 16][NI][2];
        auto load_frags = [&](int kk) {
#pragma unroll
            for (int i = 0; i < MI; i++) {
                if (!TA) ldsm_x4(af[kk][i], sa + a_off[kk] + i * a_step);
                else ldsm_x4_t(af[kk][i], sa + a_off[i] + kk * a_step);
            }
#pragma unroll
            for (int p = 0; p < NI / 2; p++) {
                unsigned t[4];
                if (!TB) ldsm_x4_t(t, sb + b_off[p] + kk * b_step);
                else ldsm_x4(t, sb + b_off[kk] + p * b_step);
                bfr[kk][2 * p][0] = t[0];
                bfr[kk][2 * p][1] = t[1];
                bfr[kk][2 * p + 1][0] = t[2];
                bfr[kk][2 * p + 1][1] = t[3];
            }
        };
        load_frags(0);
        if (ALIGNED && kt + STAGES - 1 < ktiles) load_stage((kt + STAGES - 1) % STAGES);
        cp_commit();
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
            if (kk + 1 < BK / 16) load_frags(kk + 1);
#pragma unroll
            for (int i = 0; i < MI; i++)
#pragma unroll
                for (int j = 0; j < NI; j++) mma16816(acc[i][j], af[kk][i], bfr[kk][j][0], bfr[kk][j][1]);
        }
    }
    cp_wait<0>();
}

// One block: find its tile, run the K loop, write C.
template <bool TA, bool TB, class T, typename OutT>
__device__ __forceinline__ void gemm(const bf16* __restrict__ A, const bf16* __restrict__ B, OutT* __restrict__ C,
                                     int M, int N, int K, long sA, long sB, long sC, int accumulate) {
    extern __shared__ __align__(128) unsigned char smem[];
    constexpr int MI = T::MI, NI = T::NI;

    // Raster: consecutive blocks walk down GROUP_M tile rows, then across, for L2 reuse.
    const int tiles_n = gridDim.x, tiles_m = gridDim.y;
    const int lin = blockIdx.y * tiles_n + blockIdx.x;
    const int per_group = GROUP_M * tiles_n;
    const int first_m = (lin / per_group) * GROUP_M;
    const int gsize = min(tiles_m - first_m, GROUP_M);
    const int tm = first_m + (lin % per_group) % gsize;
    const int tn = (lin % per_group) / gsize;
    const int m0 = tm * T::BM, n0 = tn * T::BN;

    const long z = blockIdx.z;
    A += z * sA;
    B += z * sB;
    C += z * sC;
    const long lda = TA ? M : K, ldb = TB ? K : N;
    const bool aligned = ((lda | ldb | sA | sB) & 7) == 0 &&
                         ((reinterpret_cast<unsigned long long>(A) | reinterpret_cast<unsigned long long>(B)) & 15) == 0;

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NI; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) acc[i][j][q] = 0.0f;
    if (aligned) mainloop<TA, TB, T, true>(acc, smem, A, B, M, N, K, m0, n0);
    else mainloop<TA, TB, T, false>(acc, smem, A, B, M, N, K, m0, n0);

    // Epilogue straight from the accumulators: a lane's two columns of a row go out as one store
    // when aligned.
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int wm = warp / T::WN, wn = warp % T::WN;
    const bool vec = (N & 1) == 0 && (sC & 1) == 0 &&
                     (reinterpret_cast<unsigned long long>(C) & (2 * sizeof(OutT) - 1)) == 0;
    const bool accum = accumulate != 0;
#pragma unroll
    for (int i = 0; i < MI; i++) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int row = m0 + c_frag_row<T>(lane, wm, i, 2 * h);
            if (row >= M) continue;
#pragma unroll
            for (int j = 0; j < NI; j++) {
                const int col = n0 + c_frag_col<T>(lane, wn, j, 0);
                if (col >= N) continue;
                store2(C, (long)row * N + col, acc[i][j][2 * h], acc[i][j][2 * h + 1], col + 1 < N, vec, accum);
            }
        }
    }
}

}  // namespace mm

// The entry points: layout x output type x tile, each the one template above.
// clang-format off
extern "C" __global__ void __launch_bounds__(256, 1) matmul_nn_bf16(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<false, false, mm::Big>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_nt_bf16(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<false, true, mm::Big>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_tn_bf16(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<true, false, mm::Big>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_tt_bf16(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<true, true, mm::Big>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_nn_bf16_f32out(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<false, false, mm::Big>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_nt_bf16_f32out(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<false, true, mm::Big>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_tn_bf16_f32out(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<true, false, mm::Big>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 1) matmul_tt_bf16_f32out(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<true, true, mm::Big>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 2) matmul_nn_bf16_s(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<false, false, mm::Small>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 2) matmul_nt_bf16_s(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<false, true, mm::Small>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 2) matmul_tn_bf16_s(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<true, false, mm::Small>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 2) matmul_tt_bf16_s(const bf16* A, const bf16* B, bf16* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<true, true, mm::Small>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 2) matmul_nn_bf16_f32out_s(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<false, false, mm::Small>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 2) matmul_nt_bf16_f32out_s(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<false, true, mm::Small>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 2) matmul_tn_bf16_f32out_s(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<true, false, mm::Small>(A, B, C, M, N, K, sA, sB, sC, acc); }
extern "C" __global__ void __launch_bounds__(256, 2) matmul_tt_bf16_f32out_s(const bf16* A, const bf16* B, float* C, int M, int N, int K, long sA, long sB, long sC, int acc) { mm::gemm<true, true, mm::Small>(A, B, C, M, N, K, sA, sB, sC, acc); }
// clang-format on

// attention_tiles.cuh: what attention_fwd.cuh and attention_bwd.cuh share: the block shape, the
// fragment addressing of padded (D + 8) shared tiles, the row copies in and out of them, and the
// document-mask tests that let a block skip tiles no pair of which shares a document.
// attention.cu has the semantics and launch shapes of the kernels built from these.
#pragma once
#include "tensor_core.cuh"

namespace attn {
using namespace tc;

constexpr int NT = 128;  // threads per block (4 warps, 16 rows of a tile each)
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;
// "No window" as a window no distance reaches, small enough that j + win cannot overflow int.
constexpr int NO_WINDOW = 1 << 30;
__device__ __forceinline__ bool no_window(int window, int T) { return window <= 0 || window >= T; }
#define POS_INF __int_as_float(0x7f800000)


// Row stride, in elements, of every shared tile of D-element rows: the 16-byte pad shifts each
// row by one bank group (see attention.cu).
__host__ __device__ constexpr int tile_ld(int D) { return D + 8; }

// Fragment addressing inside a 16x16 block of a row-major smem tile with row stride LD: the row
// and column (inside the block) of the row a lane hands ldmatrix x4 (lane l: row l % 8 of
// matrix l / 8). kernels/tests/attention_layout.cuh holds these and the row copies below to the
// PTX layouts.
// A operand (rows = M, cols = K) and B operand stored [K][N] (.trans): matrices 0..3 are
// (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15).
__host__ __device__ constexpr int frag_a_row(int lane) { return lane & 15; }
__host__ __device__ constexpr int frag_a_col(int lane) { return (lane >> 4) * 8; }
template <int LD>
__device__ __forceinline__ const bf16* frag_a(const bf16* tile, int row0, int col0) {
    const int lane = threadIdx.x & 31;
    return tile + (row0 + frag_a_row(lane)) * LD + col0 + frag_a_col(lane);
}
// B operand stored [N][K] (non-trans): matrices are (n 0-7, k 0-7), (n 0-7, k 8-15),
// (n 8-15, k 0-7), (n 8-15, k 8-15), i.e. {b0, b1} of n-tile n0 then of n-tile n0 + 8.
__host__ __device__ constexpr int frag_bt_row(int lane) { return (lane & 7) + ((lane >> 4) << 3); }
__host__ __device__ constexpr int frag_bt_col(int lane) { return ((lane >> 3) & 1) * 8; }
template <int LD>
__device__ __forceinline__ const bf16* frag_bt(const bf16* tile, int n0, int k0) {
    const int lane = threadIdx.x & 31;
    return tile + (n0 + frag_bt_row(lane)) * LD + k0 + frag_bt_col(lane);
}

// Row copies between global rows of D elements and a tile with row stride D + 8: thread tid
// moves the 16-byte column row_copy_col of tile rows row_copy_row(tid, it), it = 0, 1, ...
// (tid unsigned, as threadIdx.x is: the divisions stay shifts).
template <int D>
__host__ __device__ constexpr int row_copy_row(unsigned tid, int it) {
    return tid / (D / 8) + it * (NT / (D / 8));
}
template <int D>
__host__ __device__ constexpr int row_copy_col(unsigned tid) {
    return tid % (D / 8) * 8;
}

// Issues the cp.async copies of ROWS rows (starting at token row0) of D bf16 each, row stride
// `stride` elements in global memory, into a tile with row stride D + 8. A thread copies the same
// 16-byte column of every NT / (D / 8)-th row; the source pointer advances by chained adds so the
// compiler has no per-chunk 64-bit offsets to hoist out of the caller's loop (register pressure).
template <int D, int ROWS>
__device__ __forceinline__ void load_rows(bf16* s, const bf16* g, long stride, int row0, int T) {
    constexpr int CH = D / 8, LD = tile_ld(D), RPI = NT / CH;
    static_assert(NT % CH == 0 && ROWS % RPI == 0, "tile copy must divide among the threads");
    const int r0 = row_copy_row<D>(threadIdx.x, 0), col = row_copy_col<D>(threadIdx.x);
    const bf16* src = g + (long)(row0 + r0) * stride + col;
    const long step = (long)RPI * stride;
#pragma unroll
    for (int it = 0; it < ROWS / RPI; ++it) {
        const bool ok = row0 + r0 + it * RPI < T;
        cp_async16(smem_u32(s + (r0 + it * RPI) * LD + col), ok ? src : g, ok ? 16 : 0);
        src += step;
    }
}

// Writes a warp's 16 x D f32 accumulator rows (times `mul`) into a bf16 smem tile.
template <int D>
__device__ __forceinline__ void stage_rows(bf16* s, const float (&acc)[D / 8][4], float mul) {
    constexpr int LD = tile_ld(D);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = warp * 16 + g + 8 * r, col = dt * 8 + 2 * tq;
            *reinterpret_cast<bf16x2*>(s + row * LD + col) =
                __floats2bfloat162_rn(acc[dt][2 * r] * mul, acc[dt][2 * r + 1] * mul);
        }
    }
}

// Stores ROWS staged rows (token row0 + r < T only) with 16-byte stores.
template <int D, int ROWS>
__device__ __forceinline__ void store_rows(bf16* g, long stride, const bf16* s, int row0, int T) {
    constexpr int CH = D / 8, LD = tile_ld(D), RPI = NT / CH;
    const int r0 = row_copy_row<D>(threadIdx.x, 0), col = row_copy_col<D>(threadIdx.x);
    bf16* dst = g + (long)(row0 + r0) * stride + col;
    const long step = (long)RPI * stride;
#pragma unroll
    for (int it = 0; it < ROWS / RPI; ++it) {
        if (row0 + r0 + it * RPI < T)
            *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(s + (r0 + it * RPI) * LD + col);
        dst += step;
    }
}

// Whether any query of [q0, q0 + BM) sees any key of [k0, k0 + BN) with document ids: each
// thread tests one key against BM * BN / NT queries whose ids are in sdq. Block-uniform result.
template <int BM, int BN>
__device__ __forceinline__ bool keys_visible(const int* dg, const int* sdq, int q0, int k0, int T, int win) {
    constexpr int R = BM * BN / NT;
    static_assert(NT % BN == 0 && R * (NT / BN) == BM, "pair split");
    const int j = k0 + threadIdx.x % BN, r0 = threadIdx.x / BN * R;
    bool hit = false;
    if (j < T) {
        const int dj = dg[j];
#pragma unroll 8
        for (int r = r0; r < r0 + R; ++r) {
            const int i = q0 + r;
            hit |= (i < T) & (j <= i) & (i - j < win) & (sdq[r] == dj);
        }
    }
    return __syncthreads_or(hit) != 0;
}

// The same with the roles swapped: each thread tests one query against BN * BQ / NT keys (sdk).
template <int BN, int BQ>
__device__ __forceinline__ bool queries_visible(const int* dg, const int* sdk, int k0, int q0, int T, int win) {
    constexpr int R = BN * BQ / NT;
    static_assert(NT % BQ == 0 && R * (NT / BQ) == BN, "pair split");
    const int i = q0 + threadIdx.x % BQ, c0 = threadIdx.x / BQ * R;
    bool hit = false;
    if (i < T) {
        const int di = dg[i];
#pragma unroll 8
        for (int c = c0; c < c0 + R; ++c) {
            const int j = k0 + c;
            hit |= (j < T) & (j <= i) & (i - j < win) & (sdk[c] == di);
        }
    }
    return __syncthreads_or(hit) != 0;
}

}  // namespace attn

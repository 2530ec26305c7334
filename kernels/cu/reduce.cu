// reduce.cu: deterministic reductions. No float atomics: every sum is a fixed tree for a given
// launch shape, and the engine derives launch shapes from the sizes only, so two runs (and two
// devices) give the same bits.
//
// Sums over all elements (sum, mean, the loss sum, the global grad norm) take two stages:
//   stage 1  sum_partials_T / sumsq_partials_T(x, partials, n, chunk)
//            grid = ceil(n / chunk) blocks, block = 256 threads. Block b sums (or sums the
//            squares of) x[b*chunk .. min((b+1)*chunk, n)) into partials[b]: each thread adds
//            its 16-byte vectors (i, i + 256, .. of the range), then block_sum's fixed tree.
//            chunk: the engine uses 8192 elements (a multiple of 8, so chunk starts keep the
//            buffer's 16-byte alignment). Any chunk >= 1 is correct.
//   stage 2  sum_finish(partials, out, p, scale)
//            grid = 1 block of 1024 threads (any multiple of 32 works); out[0] = scale * sum of
//            partials[0 .. p): thread i adds partials i, i + 1024, .. in order, then block_sum.
// The global grad norm runs stage 1 once per gradient tensor, each writing its partials at its
// own offset of one buffer (tensors in the order given), then stage 2 once over all partials:
// out[0] = sum of squares of every gradient, f32; the engine takes the square root.
//
// Over the last dim, [R, C] -> [R] (the engine keeps the size-1 dim in the shape):
//   sum_last_warp_T(x, y, rows, cols, scale)   one warp per row (for C <= 1024), grid-stride
//            over rows; block = 256 (8 rows a block), grid = ceil(rows / 8) capped at 65535.
//   sum_last_block_T(x, y, rows, cols, scale)  one block per row (C > 1024), block = 256,
//            grid = min(rows, 65535), grid-stride over rows.
//   y[r] = scale * sum_c x[r, c], accumulated in f32, stored as T. Log-probs per sequence are
//   sum_last_f32 of the cross-entropy's per-row losses [B, T] with scale -1.
// argmax_last_T(x, idx u32, rows, cols): first index of the row's largest element, as the CPU
//   does it (a NaN at index 0 wins, other NaNs are skipped); one block per row, block = 256,
//   grid = min(rows, 65535), grid-stride. cols < 2^31.
// reduce_bwd_T(g, dx, n, c, scale): dx[i] = scale * g[i / c], the gradient of a sum over all
//   elements (c = n) or over the last dim (c = C). grid_1d(n), grid-stride.
#include "common.cuh"


// Elements of x[0 .. n) before its first 16-byte boundary (all of them when it has none).
template <typename T> __device__ __forceinline__ long head_len(const T* p, long n) {
    const long h = (long)(((16u - ((unsigned)(unsigned long long)p & 15u)) & 15u) / sizeof(T));
    return h < n ? h : n;
}

// This thread's share (thread `tid` of `nt`) of sum x or sum x^2 over x[0 .. n).
template <bool SQUARE, typename T> __device__ __forceinline__ float range_sum(const T* p, long n, int tid, int nt) {
    constexpr int VN = Vec16<T>::N;
    const long head = head_len(p, n), nv = (n - head) / VN, tail = head + nv * VN;
    float acc = 0.0f;
    for (long i = tid; i < head; i += nt) {
        const float v = ld(p, i);
        acc += SQUARE ? v * v : v;
    }
    const T* q = p + head;
#pragma unroll 2
    for (long i = tid; i < nv; i += nt) {
        float f[VN];
        load16(q + i * VN, f);
        // The vector's own sum first, then into acc.
        float a = 0.0f;
#pragma unroll
        for (int k = 0; k < VN; k++) a += SQUARE ? f[k] * f[k] : f[k];
        acc += a;
    }
    for (long i = tail + tid; i < n; i += nt) {
        const float v = ld(p, i);
        acc += SQUARE ? v * v : v;
    }
    return acc;
}

template <bool SQUARE, typename T> __device__ __forceinline__ void block_partials(const T* x, float* out, long n, long chunk) {
    __shared__ float scratch[32];
    const long lo = blockIdx.x * chunk;
    const long hi = lo + chunk < n ? lo + chunk : n;
    const float a = lo < hi ? range_sum<SQUARE>(x + lo, hi - lo, threadIdx.x, blockDim.x) : 0.0f;
    const float s = block_sum(a, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

extern "C" __global__ void sum_partials_f32(const float* x, float* partials, long n, long chunk) {
    block_partials<false>(x, partials, n, chunk);
}
extern "C" __global__ void sum_partials_bf16(const bf16* x, float* partials, long n, long chunk) {
    block_partials<false>(x, partials, n, chunk);
}
extern "C" __global__ void sumsq_partials_f32(const float* x, float* partials, long n, long chunk) {
    block_partials<true>(x, partials, n, chunk);
}
extern "C" __global__ void sumsq_partials_bf16(const bf16* x, float* partials, long n, long chunk) {
    block_partials<true>(x, partials, n, chunk);
}

extern "C" __global__ void sum_finish(const float* partials, float* out, long p, float scale) {
    __shared__ float scratch[32];
    float a = 0.0f;
    for (long i = threadIdx.x; i < p; i += blockDim.x) a += partials[i];
    const float s = block_sum(a, scratch);
    if (threadIdx.x == 0) out[0] = s * scale;
}

template <typename T>
__device__ __forceinline__ void sum_last_warp(const T* x, T* y, long rows, long cols, float scale) {
    const int lane = threadIdx.x & 31;
    const long warps = (long)gridDim.x * (blockDim.x >> 5);
    for (long r = blockIdx.x * (long)(blockDim.x >> 5) + (threadIdx.x >> 5); r < rows; r += warps) {
        const float s = warp_sum(range_sum<false>(x + r * cols, cols, lane, 32));
        if (lane == 0) st(y, r, s * scale);
    }
}

template <typename T>
__device__ __forceinline__ void sum_last_block(const T* x, T* y, long rows, long cols, float scale) {
    __shared__ float scratch[32];
    for (long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float s = block_sum(range_sum<false>(x + r * cols, cols, threadIdx.x, blockDim.x), scratch);
        if (threadIdx.x == 0) st(y, r, s * scale);
    }
}

extern "C" __global__ void sum_last_warp_f32(const float* x, float* y, long rows, long cols, float scale) {
    sum_last_warp(x, y, rows, cols, scale);
}
extern "C" __global__ void sum_last_warp_bf16(const bf16* x, bf16* y, long rows, long cols, float scale) {
    sum_last_warp(x, y, rows, cols, scale);
}
extern "C" __global__ void sum_last_block_f32(const float* x, float* y, long rows, long cols, float scale) {
    sum_last_block(x, y, rows, cols, scale);
}
extern "C" __global__ void sum_last_block_bf16(const bf16* x, bf16* y, long rows, long cols, float scale) {
    sum_last_block(x, y, rows, cols, scale);
}

// (value, index) of the better of two candidates: the larger value, the smaller index on ties;
// index -1 is "none yet" and loses to any real candidate.
__device__ __forceinline__ void arg_merge(float& v, int& i, float v2, int i2) {
    if (i2 >= 0 && (i < 0 || v2 > v || (v2 == v && i2 < i))) {
        v = v2;
        i = i2;
    }
}

template <typename T> __device__ __forceinline__ void argmax_last(const T* x, unsigned* idx, long rows, long cols) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* p = x + r * cols;
        // Each thread scans its columns in increasing order with a strict >, so it keeps the
        // first of equal maxima; NaN compares false and is skipped. -inf still counts (a row of
        // -inf answers 0, as the CPU does).
        float v = NEG_INF;
        int bi = -1;
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            const float a = ld(p, c);
            if (a > v || (bi < 0 && a == v)) {
                v = a;
                bi = c;
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float v2 = __shfl_down_sync(0xffffffffu, v, o);
            const int i2 = __shfl_down_sync(0xffffffffu, bi, o);
            arg_merge(v, bi, v2, i2);
        }
        __syncthreads(); // the previous row's readers are done with sv/si
        if (lane == 0) {
            sv[warp] = v;
            si[warp] = bi;
        }
        __syncthreads();
        if (warp == 0) {
            v = lane < nwarps ? sv[lane] : NEG_INF;
            bi = lane < nwarps ? si[lane] : -1;
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                const float v2 = __shfl_down_sync(0xffffffffu, v, o);
                const int i2 = __shfl_down_sync(0xffffffffu, bi, o);
                arg_merge(v, bi, v2, i2);
            }
            if (lane == 0) {
                // The CPU starts from index 0 and only moves on a strict >: a NaN there stays.
                const float x0 = ld(p, 0);
                idx[r] = (x0 != x0 || bi < 0) ? 0u : (unsigned)bi;
            }
        }
    }
}

extern "C" __global__ void argmax_last_f32(const float* x, unsigned* idx, long rows, long cols) {
    argmax_last(x, idx, rows, cols);
}
extern "C" __global__ void argmax_last_bf16(const bf16* x, unsigned* idx, long rows, long cols) {
    argmax_last(x, idx, rows, cols);
}

template <typename T> __device__ __forceinline__ void reduce_bwd(const T* g, T* dx, long n, long c, float scale) {
    const long stride = (long)gridDim.x * blockDim.x;
    // 32-bit division where it fits: 64-bit division is a long software sequence.
    const bool small = n <= 0x7fffffffL;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += stride) {
        const long r = small ? (long)((unsigned)i / (unsigned)c) : i / c;
        st(dx, i, ld(g, r) * scale);
    }
}

extern "C" __global__ void reduce_bwd_f32(const float* g, float* dx, long n, long c, float scale) {
    reduce_bwd(g, dx, n, c, scale);
}
extern "C" __global__ void reduce_bwd_bf16(const bf16* g, bf16* dx, long n, long c, float scale) {
    reduce_bwd(g, dx, n, c, scale);
}

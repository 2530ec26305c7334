// cross_entropy.cu: fused cross-entropy over the vocabulary, ignore index -100, and the pieces
// per-sequence log-probs (DPO) are built from. logits x [N, V] (bf16 or f32, rows N = B*T),
// targets i32 [N]. Nothing V-wide is ever written but the gradient itself.
//
//   loss_r = lse_r - x_r[t_r],  lse_r = m_r + ln(sum_j exp(x_rj - m_r)),  m_r = max_j x_rj
//   dx_r   = scale_r * (exp(x_r - lse_r) - onehot(t_r)),  scale_r = alpha * g[r / g_div]
//
// Ignored rows (t = -100) get loss 0, lse 0 and a zero gradient row. A target outside [0, V)
// that is not -100 gives a NaN loss (the engine checks targets on the host before launching;
// the NaN only makes a missed check visible, and no load goes out of the row).
//
// Kernels (T = bf16 or f32, the suffix says which):
//   cross_entropy_fwd_T(x, targets, loss [N] f32, lse [N] f32, n, v)
//       one pass over each row: an online (max, sum-exp) per thread over 16-byte vectors, then a
//       fixed-tree merge over the block. The summed loss is reduce.cu's two-stage sum of loss
//       [N] (fixed tree, no atomics); log-probs per sequence are reduce.cu's sum_last_f32 of
//       loss viewed as [B, T] with scale -1 (logp_r = x_r[t_r] - lse_r = -loss_r exactly).
//   cross_entropy_chunk_fwd_T(x, targets, state [N, 3] f32, n, w, col0, first)
//       the same over one vocabulary block of a row chunk: x is a tile [n, w] holding columns
//       col0 .. col0 + w of rows whose targets are targets[0 .. n]; state holds per row
//       (running max, running sum-exp, target logit), merged with this block's. first != 0
//       starts the state fresh (the previous contents are not read). Blocks in order.
//   cross_entropy_chunk_finish(state, targets, loss, lse, n)
//       turns the state into loss and lse (grid-stride, one thread per row).
//   cross_entropy_bwd_T(x, dx, targets, lse, g, g_div, alpha, n, w, col0)
//       dx = scale_r * (exp(x - lse_r) - onehot(t_r - col0)) over a tile [n, w]; dx may be x
//       (in place: each element is read and then written by the same thread) or a separate
//       buffer. g == nullptr means scale_r = alpha; g_div == 0 means g[0] for every row.
//       Cross-entropy: g = the loss sum's gradient [1], g_div = 0, alpha = 1.
//       Log-probs: g = dlogp [B], g_div = T, alpha = -1 (d logp / dx = onehot - softmax).
//       Full rows: w = V, col0 = 0; a fused lm_head tile: w = block width, col0 = its start.
//
// Launch (all but finish): grid = min(n, 2^31 - 1) blocks (rows are grid-strided), one row per
// block at a time; block = any multiple of 32 up to 1024 (the engine uses 512 for V >= 16384,
// else 256 for V >= 2048, else 128), no dynamic shared memory. Thread i takes the row's 16-byte
// vectors i, i + blockDim, .. (coalesced), and the scalar head before the first 16-byte
// boundary and the tail after the last one, so any V and any row alignment work. The backward
// needs no synchronisation; the forwards merge (max, sum) pairs over shuffles, then over warps
// in warp order: for a fixed launch shape every result is bitwise reproducible.
// finish: grid_1d(n) (any grid, one thread per row, grid-stride).
#include "common.cuh"

#define IGNORE_INDEX (-100)
// The empty (max, sum) pair's max: finite, so merging with it never computes inf - inf.
#define EMPTY_MAX (-3.402823466e38f)
#define QNAN __int_as_float(0x7fffffff)

__device__ __forceinline__ void store16(float* p, const float* f) {
    uint4 u;
    u.x = __float_as_uint(f[0]);
    u.y = __float_as_uint(f[1]);
    u.z = __float_as_uint(f[2]);
    u.w = __float_as_uint(f[3]);
    *reinterpret_cast<uint4*>(p) = u;
}
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    const bf16x2 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&h);
}
__device__ __forceinline__ void store16(bf16* p, const float* f) {
    uint4 u;
    u.x = pack_bf16x2(f[0], f[1]);
    u.y = pack_bf16x2(f[2], f[3]);
    u.z = pack_bf16x2(f[4], f[5]);
    u.w = pack_bf16x2(f[6], f[7]);
    *reinterpret_cast<uint4*>(p) = u;
}

// A row of n elements at p split as [0, head) scalars, nv 16-byte vectors, [tail, n) scalars.
struct Split {
    long head, nv, tail;
};
template <typename T> __device__ __forceinline__ Split split_row(const T* p, long n) {
    constexpr int VN = Vec16<T>::N;
    long head = (long)(((16u - ((unsigned)(unsigned long long)p & 15u)) & 15u) / sizeof(T));
    head = head < n ? head : n;
    const long nv = (n - head) / VN;
    return Split{head, nv, head + nv * VN};
}

// Adds one element to a thread's online (max, sum-exp).
__device__ __forceinline__ void ms_add(float& m, float& s, float x) {
    if (x > m) {
        s *= __expf(m - x);
        m = x;
    }
    s += __expf(x - m);
}

// Adds a vector: one rescale per vector at most (new maxima are rare after the first few), so
// the exps stay near one per element, well under the SFU's rate at full memory bandwidth.
template <int VN> __device__ __forceinline__ void ms_add_vec(float& m, float& s, const float* f) {
    float lm = f[0];
#pragma unroll
    for (int k = 1; k < VN; k++) lm = fmaxf(lm, f[k]);
    if (lm > m) {
        s *= __expf(m - lm);
        m = lm;
    }
#pragma unroll
    for (int k = 0; k < VN; k++) s += __expf(f[k] - m);
}

__device__ __forceinline__ void ms_merge(float& m, float& s, float m2, float s2) {
    const float mx = fmaxf(m, m2);
    s = s * __expf(m - mx) + s2 * __expf(m2 - mx);
    m = mx;
}

// (max, sum-exp) of this thread's share of a row.
template <typename T> __device__ __forceinline__ void row_stats(const T* p, long n, float& m, float& s) {
    constexpr int VN = Vec16<T>::N;
    const int tid = threadIdx.x, nt = blockDim.x;
    const Split sp = split_row(p, n);
    m = EMPTY_MAX;
    s = 0.0f;
    if (tid < sp.head) ms_add(m, s, ld(p, tid));
    const T* q = p + sp.head;
#pragma unroll 2
    for (long i = tid; i < sp.nv; i += nt) {
        float f[VN];
        load16(q + i * VN, f);
        ms_add_vec<VN>(m, s, f);
    }
    if (tid < n - sp.tail) ms_add(m, s, ld(p, sp.tail + tid));
}

// Merges (m, s) over the block: shuffles down 16..1, then warp partials in warp order. Every
// thread gets the result. `scratch` is 64 floats of shared memory (synced before reuse).
__device__ __forceinline__ void block_ms(float& m, float& s, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_down_sync(0xffffffffu, m, o);
        const float s2 = __shfl_down_sync(0xffffffffu, s, o);
        ms_merge(m, s, m2, s2);
    }
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = m;
        scratch[32 + warp] = s;
    }
    __syncthreads();
    m = lane < nwarps ? scratch[lane] : EMPTY_MAX;
    s = lane < nwarps ? scratch[32 + lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float m2 = __shfl_down_sync(0xffffffffu, m, o);
        const float s2 = __shfl_down_sync(0xffffffffu, s, o);
        ms_merge(m, s, m2, s2);
    }
    m = __shfl_sync(0xffffffffu, m, 0);
    s = __shfl_sync(0xffffffffu, s, 0);
}

template <typename T>
__device__ __forceinline__ void ce_fwd(const T* x, const int* targets, float* loss, float* lse, long n, long v) {
    __shared__ float scratch[64];
    for (long r = blockIdx.x; r < n; r += gridDim.x) {
        const int t = targets[r];
        if (t == IGNORE_INDEX) { // the whole block takes this branch
            if (threadIdx.x == 0) loss[r] = lse[r] = 0.0f;
            continue;
        }
        const T* p = x + r * v;
        float m, s;
        row_stats(p, v, m, s);
        block_ms(m, s, scratch);
        if (threadIdx.x == 0) {
            const float l = m + __logf(s);
            const float xt = (t >= 0 && t < v) ? ld(p, t) : QNAN;
            lse[r] = l;
            loss[r] = l - xt;
        }
    }
}

template <typename T>
__device__ __forceinline__ void ce_chunk_fwd(const T* x, const int* targets, float* state, long n, long w,
                                             long col0, int first) {
    __shared__ float scratch[64];
    for (long r = blockIdx.x; r < n; r += gridDim.x) {
        const long t = targets[r];
        if (t == IGNORE_INDEX) continue;
        const T* p = x + r * w;
        float m, s;
        row_stats(p, w, m, s);
        block_ms(m, s, scratch);
        if (threadIdx.x == 0) {
            float* st = state + 3 * r;
            float xt = first ? 0.0f : st[2];
            if (!first) ms_merge(m, s, st[0], st[1]);
            if (t >= col0 && t < col0 + w) xt = ld(p, t - col0);
            st[0] = m;
            st[1] = s;
            st[2] = xt;
        }
    }
}

template <typename T>
__device__ __forceinline__ void ce_bwd(const T* x, T* dx, const int* targets, const float* lse, const float* g,
                                       long g_div, float alpha, long n, long w, long col0) {
    constexpr int VN = Vec16<T>::N;
    const int tid = threadIdx.x, nt = blockDim.x;
    for (long r = blockIdx.x; r < n; r += gridDim.x) {
        const long t = targets[r];
        const T* p = x + r * w;
        T* q = dx + r * w;
        const Split sp = split_row(p, w);
        const bool ignored = t == IGNORE_INDEX;
        const float sc = ignored ? 0.0f : alpha * (g ? g[g_div > 0 ? r / g_div : 0] : 1.0f);
        const float l = ignored ? 0.0f : lse[r];
        const long tt = ignored ? -1 : t - col0; // the target's column in this tile, if any
        // exp(x - l) * sc with sc = 0 would turn an inf logit into NaN: ignored rows store 0.
        if ((((unsigned long long)p ^ (unsigned long long)q) & 15u) != 0) {
            // x and dx disagree mod 16 bytes: the whole row goes the scalar way. (A separate
            // loop, not a degenerate Split: folding this test into the split makes NVVM give
            // up on the 16-byte stores below.)
            for (long i = tid; i < w; i += nt) {
                float d = ignored ? 0.0f : __expf(ld(p, i) - l) * sc;
                if (i == tt) d -= sc;
                st(q, i, d);
            }
            continue;
        }
        for (long i = tid; i < sp.head; i += nt) {
            float d = ignored ? 0.0f : __expf(ld(p, i) - l) * sc;
            if (i == tt) d -= sc;
            st(q, i, d);
        }
        const T* pv = p + sp.head;
        T* qv = q + sp.head;
#pragma unroll 2
        for (long i = tid; i < sp.nv; i += nt) {
            float f[VN];
            load16(pv + i * VN, f);
            const long c0 = sp.head + i * VN;
#pragma unroll
            for (int k = 0; k < VN; k++) {
                f[k] = ignored ? 0.0f : __expf(f[k] - l) * sc;
                if (c0 + k == tt) f[k] -= sc;
            }
            store16(qv + i * VN, f);
        }
        for (long i = sp.tail + tid; i < w; i += nt) {
            float d = ignored ? 0.0f : __expf(ld(p, i) - l) * sc;
            if (i == tt) d -= sc;
            st(q, i, d);
        }
    }
}

extern "C" __global__ void cross_entropy_fwd_bf16(const bf16* x, const int* targets, float* loss, float* lse,
                                                  long n, long v) {
    ce_fwd(x, targets, loss, lse, n, v);
}
extern "C" __global__ void cross_entropy_fwd_f32(const float* x, const int* targets, float* loss, float* lse,
                                                 long n, long v) {
    ce_fwd(x, targets, loss, lse, n, v);
}

extern "C" __global__ void cross_entropy_chunk_fwd_bf16(const bf16* x, const int* targets, float* state, long n,
                                                        long w, long col0, int first) {
    ce_chunk_fwd(x, targets, state, n, w, col0, first);
}
extern "C" __global__ void cross_entropy_chunk_fwd_f32(const float* x, const int* targets, float* state, long n,
                                                       long w, long col0, int first) {
    ce_chunk_fwd(x, targets, state, n, w, col0, first);
}

extern "C" __global__ void cross_entropy_chunk_finish(const float* state, const int* targets, float* loss,
                                                      float* lse, long n) {
    for (long r = blockIdx.x * (long)blockDim.x + threadIdx.x; r < n; r += (long)gridDim.x * blockDim.x) {
        if (targets[r] == IGNORE_INDEX) {
            loss[r] = lse[r] = 0.0f;
            continue;
        }
        const float l = state[3 * r] + __logf(state[3 * r + 1]);
        lse[r] = l;
        loss[r] = l - state[3 * r + 2];
    }
}

extern "C" __global__ void cross_entropy_bwd_bf16(const bf16* x, bf16* dx, const int* targets, const float* lse,
                                                  const float* g, long g_div, float alpha, long n, long w,
                                                  long col0) {
    ce_bwd(x, dx, targets, lse, g, g_div, alpha, n, w, col0);
}
extern "C" __global__ void cross_entropy_bwd_f32(const float* x, float* dx, const int* targets, const float* lse,
                                                 const float* g, long g_div, float alpha, long n, long w,
                                                 long col0) {
    ce_bwd(x, dx, targets, lse, g, g_div, alpha, n, w, col0);
}

// rmsnorm.cu: RMSNorm (Llama) forward and backward; bf16 storage, f32 statistics and sums.
//   forward:  rstd = 1 / sqrt(mean(x^2) + eps),  y = x * rstd * w
//             x, y [N, C] bf16, w [C] bf16, rstd [N] f32 (saved for the backward)
//   backward: xhat = x * rstd,  dx = rstd * (dy*w - xhat * mean(dy*w*xhat)),  dw = sum_rows dy*xhat
// The arithmetic order is that of engine/src/ops/rmsnorm.rs (CPU), in f32.
//
// Row groups. A row is handled by a group of tpr threads (a multiple of 32); a block holds
// G = blockDim.x / tpr groups that walk rows in lockstep (so block-wide barriers are safe), and
// each group reduces over its own warps only. Thread t of a group owns the chunks j = t + k*tpr
// of its row. A chunk is 8 bf16 (one 16-byte load) when C % 8 == 0 and every pointer is 16-byte
// aligned, else 1 element (the scalar path; same arithmetic). The first RES chunks of a thread
// (RES = 4 on the 16-byte path: 32 elements) stay in registers between the row's reduction and
// its output pass; chunks beyond them (C > 32 * tpr) are read again (L1/L2 hits).
// Launchers: tpr = clamp(roundup32(ceil(C / 32)), 32, cap), G = max(1, 256 / tpr),
// blockDim = G * tpr, so rows up to C = 32 * cap stay in registers.
//
// rmsnorm_fwd_bf16(x, w, y, rstd, long N, int C, float eps, int tpr)
//   grid: any >= 1 (grid-stride over row groups; ceil(N / G) blocks take every row in one sweep),
//   block: G * tpr <= 1024 threads (cap 1024), dynamic smem 0.
// rmsnorm_bwd_bf16(x, w, rstd, dy, dx, partial, long N, int C, long rows_per_block, int tpr)
//   grid: nblocks = ceil(N / rows_per_block); block b owns rows [b*rpb, min(N, (b+1)*rpb)),
//   block: G * tpr <= 256 threads (cap 256), dynamic smem: G * C * 4 bytes (each group's dw
//   accumulators; above 48 KiB the function's max dynamic shared memory must be raised).
//   Writes dx [N, C] bf16 and partial [nblocks, C] f32: partial[b, c] = the block's rows' sum of
//   dy*xhat, each group in row order, then the groups added in group order. No atomics.
// rmsnorm_bwd_dw_{bf16,f32}(partial, dw, int nblocks, int C)   (suffix: dw's dtype)
//   grid: ceil(C / 32), block: 256 (exactly), dynamic smem 0. dw[c] = sum_b partial[b, c] in a
//   fixed tree (8 interleaved runs over b, then those 8 in order). For a fixed (N, C, tpr,
//   rows_per_block) every output is bitwise reproducible.
#include "common.cuh"


// Hides a register-resident pack's value from the optimizer at the row's second pass, so the
// compiler keeps the packed bf16 (W/2 registers) live across the reduction instead of the f32
// values and products it could otherwise carry over (up to 4x the registers).
template <int W>
__device__ __forceinline__ void opaque(Pack<W>& p) {
#ifdef SOLAR_EMU
    (void)p;  // a register-allocation hint only; the emulator has no registers to save
#else
    if constexpr (W % 2 == 0) {
        unsigned* u = reinterpret_cast<unsigned*>(&p);
#pragma unroll
        for (int i = 0; i < W / 2; ++i) asm volatile("" : "+r"(u[i]));
    } else {
        unsigned short* u = reinterpret_cast<unsigned short*>(&p);
#pragma unroll
        for (int i = 0; i < W; ++i) asm volatile("" : "+h"(u[i]));
    }
#endif
}

// Sum over the calling thread's group of tpr threads (whole warps); every thread of the group
// gets its group's total. All threads of the block must call it (it holds block barriers).
// Fixed tree: shuffles within each warp, then the group's warps in warp order.
__device__ __forceinline__ float group_sum(float v, float* scratch, int tpr) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wpg = tpr >> 5;
    const int first = (warp / wpg) * wpg;
    v = warp_sum(v);
    __syncthreads();  // the previous call's readers of scratch are done
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    return warp_sum(lane < wpg ? scratch[first + lane] : 0.0f);
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

template <int W, int RES>
__device__ __forceinline__ void rmsnorm_fwd_rows(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                 bf16* __restrict__ y, float* __restrict__ rstd, long N,
                                                 int C, float eps, int tpr, float* scratch) {
    const int G = blockDim.x / tpr, g = threadIdx.x / tpr, t = threadIdx.x % tpr;
    const int nch = C / W;
    const float inv_c = 1.0f / (float)C;
    for (long base = (long)blockIdx.x * G; base < N; base += (long)gridDim.x * G) {
        const long r = base + g;
        const bool active = r < N;
        const bf16* xr = x + (active ? r : 0) * (long)C;
        bf16* yr = y + (active ? r : 0) * (long)C;
        Pack<W> xv[RES];
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < RES; ++k) {
            const int j = t + k * tpr;
            if (active && j < nch) {
                xv[k] = ldp<W>(xr + (long)j * W);
#pragma unroll
                for (int e = 0; e < W; ++e) {
                    const float v = bf2f(xv[k].v[e]);
                    ss += v * v;
                }
            }
        }
        if (active)
#pragma unroll 1
            for (int j = t + RES * tpr; j < nch; j += tpr) {
                const Pack<W> p = ldp<W>(xr + (long)j * W);
#pragma unroll
                for (int e = 0; e < W; ++e) {
                    const float v = bf2f(p.v[e]);
                    ss += v * v;
                }
            }
        ss = group_sum(ss, scratch, tpr);
        // CPU: rstd = 1 / sqrt(sum / C + eps)
        const float rs = 1.0f / sqrtf(ss * inv_c + eps);
        if (!active) continue;  // after the last barrier of this iteration
        if (t == 0) rstd[r] = rs;
#pragma unroll
        for (int k = 0; k < RES; ++k) {
            const int j = t + k * tpr;
            if (j < nch) {
                opaque<W>(xv[k]);
                const Pack<W> wv = ldp<W>(w + (long)j * W);
                Pack<W> o;
#pragma unroll
                for (int e = 0; e < W; ++e) o.v[e] = f2bf(bf2f(xv[k].v[e]) * rs * bf2f(wv.v[e]));
                stp<W>(yr + (long)j * W, o);
            }
        }
#pragma unroll 1
        for (int j = t + RES * tpr; j < nch; j += tpr) {
            const Pack<W> xp = ldp<W>(xr + (long)j * W), wv = ldp<W>(w + (long)j * W);
            Pack<W> o;
#pragma unroll
            for (int e = 0; e < W; ++e) o.v[e] = f2bf(bf2f(xp.v[e]) * rs * bf2f(wv.v[e]));
            stp<W>(yr + (long)j * W, o);
        }
    }
}

extern "C" __global__ void __launch_bounds__(1024)
    rmsnorm_fwd_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y,
                     float* __restrict__ rstd, long N, int C, float eps, int tpr) {
    __shared__ float scratch[32];
    // The branch is uniform over the grid; both paths are the same arithmetic.
    if (C % 8 == 0 && aligned16(x) && aligned16(w) && aligned16(y))
        rmsnorm_fwd_rows<8, 4>(x, w, y, rstd, N, C, eps, tpr, scratch);
    else
        rmsnorm_fwd_rows<1, 8>(x, w, y, rstd, N, C, eps, tpr, scratch);
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// Where element e of chunk j lives in a group's accumulator row (nch chunks of W). For W = 8 the
// chunk is split into two float4 halves stored nch*4 floats apart, so a warp's float4 accesses
// hit consecutive 16-byte words (no bank conflicts); for W = 1 it is the column itself.
template <int W>
__device__ __forceinline__ int acc_at(int j, int h, int nch) {
    static_assert(W == 1 || W == 8, "chunks are 1 or 8 elements");
    return W == 8 ? (h * nch + j) * 4 : j;
}

template <int W>
__device__ __forceinline__ void acc_add(float* a, int j, int nch, const float (&v)[W]) {
    if constexpr (W == 8) {
        float4* p0 = reinterpret_cast<float4*>(a + acc_at<8>(j, 0, nch));
        float4* p1 = reinterpret_cast<float4*>(a + acc_at<8>(j, 1, nch));
        float4 s0 = *p0, s1 = *p1;
        s0.x += v[0], s0.y += v[1], s0.z += v[2], s0.w += v[3];
        s1.x += v[4], s1.y += v[5], s1.z += v[6], s1.w += v[7];
        *p0 = s0, *p1 = s1;
    } else {
#pragma unroll
        for (int e = 0; e < W; ++e) a[j + e] += v[e];
    }
}

// dx for one chunk and its dw contribution (CPU order: o = dy*w; dx = rs*(o - x*rs*mean);
// dw += dy*x*rs).
template <int W>
__device__ __forceinline__ void bwd_chunk(const Pack<W>& xp, const Pack<W>& gp, const Pack<W>& wp, float rs,
                                          float mean, Pack<W>& dxp, float (&dw)[W]) {
#pragma unroll
    for (int e = 0; e < W; ++e) {
        const float xv = bf2f(xp.v[e]), gv = bf2f(gp.v[e]), o = gv * bf2f(wp.v[e]);
        dxp.v[e] = f2bf(rs * (o - xv * rs * mean));
        dw[e] = gv * xv * rs;
    }
}

template <int W>
__device__ __forceinline__ float dot_chunk(const Pack<W>& xp, const Pack<W>& gp, const Pack<W>& wp) {
    float d = 0.0f;
#pragma unroll
    for (int e = 0; e < W; ++e) d += bf2f(gp.v[e]) * bf2f(wp.v[e]) * bf2f(xp.v[e]);
    return d;
}

template <int W, int RES>
__device__ __forceinline__ void rmsnorm_bwd_rows(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                 const float* __restrict__ rstd, const bf16* __restrict__ dy,
                                                 bf16* __restrict__ dx, float* __restrict__ partial, long N,
                                                 int C, long rpb, int tpr, float* scratch, float* acc) {
    const int G = blockDim.x / tpr, g = threadIdx.x / tpr, t = threadIdx.x % tpr;
    const int nch = C / W;
    const float inv_c = 1.0f / (float)C;
    float* a = acc + (long)g * C;  // this group's dw accumulators [C]

    // Each thread touches only its own chunks of its group's row: no barrier needed here.
#pragma unroll 1
    for (int j = t; j < nch; j += tpr) {
        if constexpr (W == 8) {
            *reinterpret_cast<float4*>(a + acc_at<8>(j, 0, nch)) = make_float4(0.f, 0.f, 0.f, 0.f);
            *reinterpret_cast<float4*>(a + acc_at<8>(j, 1, nch)) = make_float4(0.f, 0.f, 0.f, 0.f);
        } else {
            a[j] = 0.0f;
        }
    }
    // w is the same for every row: keep its resident chunks.
    Pack<W> wv[RES];
#pragma unroll
    for (int k = 0; k < RES; ++k) {
        const int j = t + k * tpr;
        if (j < nch) wv[k] = ldp<W>(w + (long)j * W);
    }

    const long r0 = (long)blockIdx.x * rpb;
    const long r1 = min(N, r0 + rpb);
    for (long base = r0; base < r1; base += G) {
        const long r = base + g;
        const bool active = r < r1;
        const long off = (active ? r : 0) * (long)C;
        Pack<W> xv[RES], gv[RES];
        float dot = 0.0f;
#pragma unroll
        for (int k = 0; k < RES; ++k) {
            const int j = t + k * tpr;
            if (active && j < nch) {
                xv[k] = ldp<W>(x + off + (long)j * W);
                gv[k] = ldp<W>(dy + off + (long)j * W);
                dot += dot_chunk<W>(xv[k], gv[k], wv[k]);
            }
        }
        if (active)
#pragma unroll 1
            for (int j = t + RES * tpr; j < nch; j += tpr)
                dot += dot_chunk<W>(ldp<W>(x + off + (long)j * W), ldp<W>(dy + off + (long)j * W),
                                    ldp<W>(w + (long)j * W));
        dot = group_sum(dot, scratch, tpr);
        if (!active) continue;  // after the last barrier of this iteration
        const float rs = rstd[r];
        const float mean = dot * rs * inv_c;
#pragma unroll
        for (int k = 0; k < RES; ++k) {
            const int j = t + k * tpr;
            if (j < nch) {
                opaque<W>(xv[k]), opaque<W>(gv[k]), opaque<W>(wv[k]);
                Pack<W> o;
                float d[W];
                bwd_chunk<W>(xv[k], gv[k], wv[k], rs, mean, o, d);
                stp<W>(dx + off + (long)j * W, o);
                acc_add<W>(a, j, nch, d);
            }
        }
#pragma unroll 1
        for (int j = t + RES * tpr; j < nch; j += tpr) {
            Pack<W> o;
            float d[W];
            bwd_chunk<W>(ldp<W>(x + off + (long)j * W), ldp<W>(dy + off + (long)j * W), ldp<W>(w + (long)j * W),
                         rs, mean, o, d);
            stp<W>(dx + off + (long)j * W, o);
            acc_add<W>(a, j, nch, d);
        }
    }

    // The groups' accumulators, added in group order, are the block's partial row.
    __syncthreads();
    float* pr = partial + (long)blockIdx.x * C;
#pragma unroll 1
    for (int j = threadIdx.x; j < nch; j += blockDim.x) {
        if constexpr (W == 8) {
            float4 s0 = make_float4(0.f, 0.f, 0.f, 0.f), s1 = s0;
#pragma unroll 1
            for (int q = 0; q < G; ++q) {
                const float4 a0 = *reinterpret_cast<const float4*>(acc + (long)q * C + acc_at<8>(j, 0, nch));
                const float4 a1 = *reinterpret_cast<const float4*>(acc + (long)q * C + acc_at<8>(j, 1, nch));
                s0.x += a0.x, s0.y += a0.y, s0.z += a0.z, s0.w += a0.w;
                s1.x += a1.x, s1.y += a1.y, s1.z += a1.z, s1.w += a1.w;
            }
            reinterpret_cast<float4*>(pr + (long)j * 8)[0] = s0;
            reinterpret_cast<float4*>(pr + (long)j * 8)[1] = s1;
        } else {
            float s = 0.0f;
#pragma unroll 1
            for (int q = 0; q < G; ++q) s += acc[(long)q * C + j];
            pr[j] = s;
        }
    }
}

extern "C" __global__ void __launch_bounds__(256, 2)
    rmsnorm_bwd_bf16(const bf16* __restrict__ x, const bf16* __restrict__ w, const float* __restrict__ rstd,
                     const bf16* __restrict__ dy, bf16* __restrict__ dx, float* __restrict__ partial, long N,
                     int C, long rows_per_block, int tpr) {
    __shared__ float scratch[32];
    extern __shared__ float4 acc_raw[];  // [G, C] f32, float4 so the base is 16-byte aligned
    float* acc = reinterpret_cast<float*>(acc_raw);
    if (C % 8 == 0 && aligned16(x) && aligned16(w) && aligned16(dy) && aligned16(dx) && aligned16(partial))
        rmsnorm_bwd_rows<8, 4>(x, w, rstd, dy, dx, partial, N, C, rows_per_block, tpr, scratch, acc);
    else
        rmsnorm_bwd_rows<1, 8>(x, w, rstd, dy, dx, partial, N, C, rows_per_block, tpr, scratch, acc);
}

template <typename T>
__device__ __forceinline__ void rmsnorm_dw(const float* __restrict__ partial, T* __restrict__ dw, int nblocks,
                                           int C) {
    __shared__ float red[8][32];
    const int lane = threadIdx.x & 31, q = threadIdx.x >> 5;  // column in the tile, lane of b
    const long c = (long)blockIdx.x * 32 + lane;
    float s = 0.0f;
    if (c < C)
#pragma unroll 4
        for (int b = q; b < nblocks; b += 8) s += partial[(long)b * C + c];
    red[q][lane] = s;
    __syncthreads();
    if (q == 0 && c < C) {
        float total = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) total += red[i][lane];
        st(dw, c, total);
    }
}

extern "C" __global__ void __launch_bounds__(256)
    rmsnorm_bwd_dw_bf16(const float* __restrict__ partial, bf16* __restrict__ dw, int nblocks, int C) {
    rmsnorm_dw<bf16>(partial, dw, nblocks, C);
}

extern "C" __global__ void __launch_bounds__(256)
    rmsnorm_bwd_dw_f32(const float* __restrict__ partial, float* __restrict__ dw, int nblocks, int C) {
    rmsnorm_dw<float>(partial, dw, nblocks, C);
}

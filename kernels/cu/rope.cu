// rope.cu: rotary position embedding, HF rotate_half layout, forward and backward; bf16 storage,
// f32 math. In each head of D, element i < D/2 pairs with i + D/2, rotated by a = pos * inv_freq[i]:
//   y[i]       = x[i] cos a - x[i+D/2] sin a
//   y[i+D/2]   = x[i+D/2] cos a + x[i] sin a
// x, y [N, H, D] bf16 (N = B*T tokens), pos [N] i32 (one position per token, so packed sequences
// restart at 0). The backward is the same rotation by -a (rope_bwd_bf16 applied to dy gives dx).
//
// Angles follow engine/src/ops/rope.rs in f32: inv_freq[i] = 1 / theta^((2i)/D), theta rounded to
// f32 by the caller, the exponent an f32 division, the power in double rounded once to f32 (what
// an f32 powf returns up to its last bit), then a = f32(pos) * inv_freq[i] in f32. sin/cos: the
// f32 angle is reduced to [-pi, pi] in double (fast-math __sinf/__cosf lose accuracy as |a| grows,
// and positions reach thousands of radians), then __sincosf (abs error < 2^-21.4 there).
//
// rope_fwd_bf16 / rope_bwd_bf16(x, pos, y, long N, int H, int D, float theta)
//   grid: any >= 1 (grid-stride over items), block: any multiple of 32 up to 256 (256 is the
//   plan), dynamic smem: (D / 2) * 4 bytes (the block's inv_freq table, computed once per block).
//   An item is (token n, chunk c of the first half): W = 8 consecutive i (16-byte loads) when
//   D % 16 == 0 and x, y are 16-byte aligned, else W = 1. The thread computes the W angles once
//   and rotates that chunk in every one of the H heads. Items = N * (D / 2 / W).
//   Precondition: D even, D >= 2; y may not alias x.
#include "common.cuh"


__device__ __forceinline__ void sincos_reduced(float a, float* s, float* c) {
    const double ad = (double)a;
    const double k = rint(ad * 0.15915494309189535);  // 1 / (2 pi)
    const float r = (float)fma(-k, 6.283185307179586, ad);
    __sincosf(r, s, c);
}

template <int W, bool INVERSE>
__device__ __forceinline__ void rope_items(const bf16* __restrict__ x, const int* __restrict__ pos,
                                           bf16* __restrict__ y, long N, int H, int D, const float* inv_freq) {
    const int half = D / 2, nch = half / W;
    const long items = N * nch, HD = (long)H * D;
    for (long q = (long)blockIdx.x * blockDim.x + threadIdx.x; q < items; q += (long)gridDim.x * blockDim.x) {
        const long n = q / nch;
        const int c = (int)(q - n * nch);
        const float p = (float)pos[n];
        float cs[W], sn[W];
#pragma unroll
        for (int e = 0; e < W; ++e) {
            sincos_reduced(__fmul_rn(p, inv_freq[c * W + e]), &sn[e], &cs[e]);
            if (INVERSE) sn[e] = -sn[e];
        }
        const bf16* xr = x + n * HD + c * W;
        bf16* yr = y + n * HD + c * W;
#pragma unroll 4
        for (int h = 0; h < H; ++h) {
            const long o = (long)h * D;
            const Pack<W> a = ldp<W>(xr + o), b = ldp<W>(xr + o + half);
            Pack<W> ya, yb;
#pragma unroll
            for (int e = 0; e < W; ++e) {
                const float x1 = bf2f(a.v[e]), x2 = bf2f(b.v[e]);
                ya.v[e] = f2bf(x1 * cs[e] - x2 * sn[e]);
                yb.v[e] = f2bf(x2 * cs[e] + x1 * sn[e]);
            }
            stp<W>(yr + o, ya);
            stp<W>(yr + o + half, yb);
        }
    }
}

template <bool INVERSE>
__device__ __forceinline__ void rope(const bf16* __restrict__ x, const int* __restrict__ pos, bf16* __restrict__ y,
                                     long N, int H, int D, float theta) {
    extern __shared__ float inv_freq[];  // [D / 2]
    const int half = D / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        // CPU (f32): 1 / theta.powf((2i) / D)
        const float ex = __fdiv_rn((float)(2 * i), (float)D);
        const float pw = (float)pow((double)theta, (double)ex);
        inv_freq[i] = __fdiv_rn(1.0f, pw);
    }
    __syncthreads();
    if (D % 16 == 0 && aligned16(x) && aligned16(y))
        rope_items<8, INVERSE>(x, pos, y, N, H, D, inv_freq);
    else
        rope_items<1, INVERSE>(x, pos, y, N, H, D, inv_freq);
}

extern "C" __global__ void __launch_bounds__(256)
    rope_fwd_bf16(const bf16* __restrict__ x, const int* __restrict__ pos, bf16* __restrict__ y, long N, int H,
                  int D, float theta) {
    rope<false>(x, pos, y, N, H, D, theta);
}

extern "C" __global__ void __launch_bounds__(256)
    rope_bwd_bf16(const bf16* __restrict__ dy, const int* __restrict__ pos, bf16* __restrict__ dx, long N, int H,
                  int D, float theta) {
    rope<true>(dy, pos, dx, N, H, D, theta);
}

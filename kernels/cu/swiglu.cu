// swiglu.cu: the Llama MLP gate, element-wise over two tensors of the same shape [.., F];
// bf16 storage, f32 math, the formulas and their order as in engine/src/ops/swiglu.rs:
//   forward:  y = g * s * u,  s = sigmoid(g) = 1 / (1 + e^-g)
//   backward: dg = dy * u * s * (1 + g * (1 - s)),  du = dy * g * s
// Flat over n elements (gate, up, dy, y, dgate, dup all [n] bf16). When every pointer is 16-byte
// aligned the first 8 * floor(n / 8) elements go in 16-byte chunks (8 bf16) and the tail one by
// one; otherwise all go one by one. No reductions, so nothing to make deterministic.
//
// swiglu_fwd_bf16(gate, up, y, long n)
// swiglu_bwd_bf16(gate, up, dy, dgate, dup, long n)
//   grid: any >= 1 (grid-stride; cuda::grid_1d(n / 8) fills the device), block: 256, smem 0.
//   Outputs may not alias inputs.
#include "common.cuh"

// 8 bf16 moved as one 16-byte access (LDG.E.128 / STG.E.128).
struct alignas(16) Pack8 {
    bf16 v[8];
};

// e^-g overflows to +inf for g < -88, and 1 / inf is 0: s = 0, as on the CPU.
__device__ __forceinline__ float sigmoid(float g) { return __frcp_rn(1.0f + __expf(-g)); }

__device__ __forceinline__ float swiglu_f(float g, float u) { return g * sigmoid(g) * u; }

__device__ __forceinline__ void swiglu_b(float g, float u, float dy, float& dg, float& du) {
    const float s = sigmoid(g);
    dg = dy * u * s * (1.0f + g * (1.0f - s));
    du = dy * g * s;
}

extern "C" __global__ void __launch_bounds__(256)
    swiglu_fwd_bf16(const bf16* __restrict__ gate, const bf16* __restrict__ up, bf16* __restrict__ y, long n) {
    const long start = (long)blockIdx.x * blockDim.x + threadIdx.x, stride = (long)gridDim.x * blockDim.x;
    const long n8 = (aligned16(gate) && aligned16(up) && aligned16(y)) ? n / 8 : 0;
    const Pack8* g8 = reinterpret_cast<const Pack8*>(gate);
    const Pack8* u8 = reinterpret_cast<const Pack8*>(up);
    Pack8* y8 = reinterpret_cast<Pack8*>(y);
    for (long i = start; i < n8; i += stride) {
        const Pack8 g = g8[i], u = u8[i];
        Pack8 o;
#pragma unroll
        for (int e = 0; e < 8; ++e) o.v[e] = f2bf(swiglu_f(bf2f(g.v[e]), bf2f(u.v[e])));
        y8[i] = o;
    }
    for (long i = n8 * 8 + start; i < n; i += stride) y[i] = f2bf(swiglu_f(bf2f(gate[i]), bf2f(up[i])));
}

extern "C" __global__ void __launch_bounds__(256)
    swiglu_bwd_bf16(const bf16* __restrict__ gate, const bf16* __restrict__ up, const bf16* __restrict__ dy,
                    bf16* __restrict__ dgate, bf16* __restrict__ dup, long n) {
    const long start = (long)blockIdx.x * blockDim.x + threadIdx.x, stride = (long)gridDim.x * blockDim.x;
    const bool vec = aligned16(gate) && aligned16(up) && aligned16(dy) && aligned16(dgate) && aligned16(dup);
    const long n8 = vec ? n / 8 : 0;
    const Pack8* g8 = reinterpret_cast<const Pack8*>(gate);
    const Pack8* u8 = reinterpret_cast<const Pack8*>(up);
    const Pack8* d8 = reinterpret_cast<const Pack8*>(dy);
    Pack8* dg8 = reinterpret_cast<Pack8*>(dgate);
    Pack8* du8 = reinterpret_cast<Pack8*>(dup);
    for (long i = start; i < n8; i += stride) {
        const Pack8 g = g8[i], u = u8[i], d = d8[i];
        Pack8 og, ou;
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            float a, b;
            swiglu_b(bf2f(g.v[e]), bf2f(u.v[e]), bf2f(d.v[e]), a, b);
            og.v[e] = f2bf(a), ou.v[e] = f2bf(b);
        }
        dg8[i] = og;
        du8[i] = ou;
    }
    for (long i = n8 * 8 + start; i < n; i += stride) {
        float a, b;
        swiglu_b(bf2f(gate[i]), bf2f(up[i]), bf2f(dy[i]), a, b);
        dgate[i] = f2bf(a), dup[i] = f2bf(b);
    }
}

// common.cuh: what every Solar kernel shares. bf16 <-> f32 helpers, vector loads, and warp and
// block reductions. Reductions are fixed trees (shuffle down by 16, 8, 4, 2, 1, then warp
// partials in warp order), so for a fixed launch shape every sum is bitwise reproducible:
// no float atomics anywhere in Solar's kernels.
#pragma once
#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;
typedef __nv_bfloat162 bf16x2;

// NVRTC has no <math.h>; -inf as a bit pattern.
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float bf2f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 f2bf(float x) { return __float2bfloat16_rn(x); }

// Loads/stores of the element type as f32, so one kernel body serves f32 and bf16.
__device__ __forceinline__ float ld(const float* p, long i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16* p, long i) { return bf2f(p[i]); }
__device__ __forceinline__ void st(float* p, long i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16* p, long i, float v) { p[i] = f2bf(v); }

// 8 bf16 in one 16-byte load (memory-bound kernels use these on aligned rows).
struct __align__(16) bf16x8 { bf16x2 h[4]; };

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return __shfl_sync(0xffffffffu, v, 0);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    return __shfl_sync(0xffffffffu, v, 0);
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the total.
// `scratch` is 32 floats of shared memory; the function syncs before reusing it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(t);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? scratch[lane] : NEG_INF;
    return warp_max(t);
}

// 16-byte access helpers for the memory-bound kernels. A row is split into a scalar head (up to
// the first 16-byte boundary), a vector body and a scalar tail, so any width and alignment work.
__device__ __forceinline__ bool aligned16(const void* p) {
    return (reinterpret_cast<unsigned long long>(p) & 15ull) == 0;
}

// W contiguous elements of T moved as one access: 8 bf16 = one LDG.E.128 / STG.E.128.
template <int W, typename T = bf16>
struct alignas(sizeof(T) * W >= 16 ? 16 : sizeof(T) * W) Pack {
    T v[W];
};
template <int W, typename T>
__device__ __forceinline__ Pack<W, T> ldp(const T* p) {
#ifdef SOLAR_EMU
    emu_check_align(p, alignof(Pack<W, T>));  // the emulator's check of the device's rule
#endif
    return *reinterpret_cast<const Pack<W, T>*>(p);
}
template <int W, typename T>
__device__ __forceinline__ void stp(T* p, const Pack<W, T>& v) {
#ifdef SOLAR_EMU
    emu_check_align(p, alignof(Pack<W, T>));
#endif
    *reinterpret_cast<Pack<W, T>*>(p) = v;
}

// 16 bytes of T as floats, through plain uint4/float4 words (NVVM splits member-wise copies of
// a bf16 struct into 4-byte accesses; these stay one LDG.E.128).
template <typename T> struct Vec16;
template <> struct Vec16<float> { static constexpr int N = 4; };
template <> struct Vec16<bf16> { static constexpr int N = 8; };

__device__ __forceinline__ void load16(const float* p, float* f) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    f[0] = v.x; f[1] = v.y; f[2] = v.z; f[3] = v.w;
}
__device__ __forceinline__ float2 unpack_bf16x2(unsigned u) {
    // bf16 -> f32 is a 16-bit shift: the low half is element 0.
    return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
}
__device__ __forceinline__ void load16(const bf16* p, float* f) {
    const uint4 v = *reinterpret_cast<const uint4*>(p);
    const unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const float2 t = unpack_bf16x2(w[k]);
        f[2 * k] = t.x;
        f[2 * k + 1] = t.y;
    }
}

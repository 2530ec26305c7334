// emu.h: what a CUDA C++ kernel source needs to compile as host C++ for the emulator executor
// (build.rs force-includes it into every kernels/cu source built with -DSOLAR_EMU). It defines
// the CUDA keywords, the built-in variables, the vector and bf16 types with the device's
// conversions (round to nearest even, bitwise the device's), the math intrinsics the kernels
// use, and declares the runtime's collectives: barriers, warp shuffles, and the tensor-core PTX
// of tensor_core.cuh (cp.async, ldmatrix, mma.sync) as warp-collective operations.
//
// Every thread of a block is a fiber; everything that makes threads meet (a barrier, a shuffle,
// ldmatrix, mma) is an out-of-line call into the runtime (runtime.cpp, warp.cpp), which is built
// without the instrumentation the kernels get. Memory accesses in the kernels themselves are
// instrumented by the compiler (-fsanitize=thread emits a call before every load and store) and
// checked by checks.cpp: bounds, shared-memory races, uninitialised shared reads, alignment.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

// ---- keywords ----
// Kernels stay out-of-line so the uninstrumented call thunks (registry.h) never absorb them.
#define __global__ __attribute__((noinline))
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// build.rs rewrites every `__shared__` declaration into emu_static_shared / emu_dynamic_shared
// calls before compiling; one left over is a build error, not a silent per-thread array.
#define __shared__ __shared___must_be_rewritten_by_build_rs

// ---- built-in variables: the running fiber's coordinates ----
struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};
struct EmuCoords {
    uint3 thread, block;
    dim3 block_dim, grid_dim;
};
// The running fiber's coordinates: the scheduler copies them here at every switch (a global, so
// the bounds check sees program data, not the runtime's heap).
extern "C" EmuCoords emu_coords;
#define threadIdx (emu_coords.thread)
#define blockIdx (emu_coords.block)
#define blockDim (emu_coords.block_dim)
#define gridDim (emu_coords.grid_dim)
constexpr int warpSize = 32;

// ---- vector types (the device's sizes and alignments). The 16-byte ones check, when copied
// from or assigned through a pointer, that the address is 16-byte aligned as the device's
// LDG.128/STS.128 require (the host would silently accept it, or fault without a report). ----
extern "C" void emu_check_align(const void* p, unsigned long align);
struct __align__(8) float2 { float x, y; };
struct __align__(8) uint2 { unsigned x, y; };
struct __align__(8) int2 { int x, y; };
#define EMU_VEC16(V, E)                                                       \
    struct __align__(16) V {                                                  \
        E x, y, z, w;                                                         \
        V() = default;                                                        \
        V(E a, E b, E c, E d) : x(a), y(b), z(c), w(d) {}                     \
        V(const V& o) {                                                       \
            emu_check_align(&o, 16);                                          \
            x = o.x, y = o.y, z = o.z, w = o.w;                               \
        }                                                                     \
        V& operator=(const V& o) {                                            \
            emu_check_align(this, 16);                                        \
            emu_check_align(&o, 16);                                          \
            x = o.x, y = o.y, z = o.z, w = o.w;                               \
            return *this;                                                     \
        }                                                                     \
    };
EMU_VEC16(float4, float)
EMU_VEC16(uint4, unsigned)
EMU_VEC16(int4, int)
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4(x, y, z, w); }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4(x, y, z, w); }

// ---- bit casts ----
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; memcpy(&f, &i, 4); return f; }
inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
inline unsigned __float_as_uint(float f) { unsigned i; memcpy(&i, &f, 4); return i; }

// ---- bf16: storage is the upper 16 bits of an f32 ----
struct __align__(2) __nv_bfloat16 { unsigned short x; };
struct __align__(4) __nv_bfloat162 { __nv_bfloat16 x, y; };
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float(unsigned(h.x) << 16); }
// Round to nearest even; NaN becomes the canonical quiet NaN as cvt.rn.bf16.f32 does.
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return {0x7fff};
    u += 0x7fffu + ((u >> 16) & 1u);
    return {static_cast<unsigned short>(u >> 16)};
}
inline __nv_bfloat162 __floats2bfloat162_rn(float lo, float hi) {
    return {__float2bfloat16_rn(lo), __float2bfloat16_rn(hi)};
}
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return {__bfloat162float(v.x), __bfloat162float(v.y)}; }

// ---- math: the intrinsics the kernels use, as the host's IEEE functions. The fast-math ones
// (__expf, __logf, __sinf, ...) are approximations on the device, so results match within the
// tests' tolerance, not bitwise. ----
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long min(unsigned long a, unsigned long b) { return a < b ? a : b; }
inline unsigned long max(unsigned long a, unsigned long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// ---- barriers and warp collectives (runtime.cpp, warp.cpp) ----
extern "C" void __syncthreads();
extern "C" int emu_syncthreads_or(int pred);
inline int __syncthreads_or(int pred) { return emu_syncthreads_or(pred); }
extern "C" void __syncwarp(unsigned mask = 0xffffffffu);
enum EmuShfl { EMU_SHFL_IDX = 0, EMU_SHFL_DOWN = 1, EMU_SHFL_UP = 2, EMU_SHFL_XOR = 3 };
extern "C" unsigned emu_shfl(int kind, unsigned mask, unsigned bits, int arg, int width);
template <typename T>
inline T emu_shfl_t(int kind, unsigned mask, T v, int arg, int width) {
    static_assert(sizeof(T) == 4, "the emulator shuffles 32-bit values");
    unsigned bits;
    memcpy(&bits, &v, 4);
    bits = emu_shfl(kind, mask, bits, arg, width);
    T r;
    memcpy(&r, &bits, 4);
    return r;
}
template <typename T>
inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) { return emu_shfl_t(EMU_SHFL_IDX, mask, v, src, width); }
template <typename T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return emu_shfl_t(EMU_SHFL_DOWN, mask, v, int(d), width);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int width = 32) {
    return emu_shfl_t(EMU_SHFL_UP, mask, v, int(d), width);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T v, int m, int width = 32) { return emu_shfl_t(EMU_SHFL_XOR, mask, v, m, width); }

// ---- shared memory: one window per block; dynamic shared memory at its start, each static
// `__shared__` declaration placed after it at first use (build.rs rewrites the declarations). ----
extern "C" unsigned char emu_shared_window[];
extern "C" void* emu_static_shared(const void* tag, unsigned long bytes, unsigned long align);
inline unsigned long __cvta_generic_to_shared(const void* p) {
    return static_cast<unsigned long>(static_cast<const unsigned char*>(p) - emu_shared_window);
}

// ---- the tensor-core PTX (tensor_core.cuh calls these under SOLAR_EMU) ----
extern "C" void emu_cp_async16(unsigned dst, const void* src, int bytes);
extern "C" void emu_cp_commit();
extern "C" void emu_cp_wait(int n);
extern "C" void emu_ldsm_x4(unsigned* r, unsigned addr, int trans);
extern "C" void emu_mma16816(float* d, const unsigned* a, unsigned b0, unsigned b1);
// wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 with scale-d 1, over the warpgroup.
extern "C" void emu_wgmma_m64n128k16(float* d, unsigned long long da, unsigned long long db, int mn_a, int mn_b);

// adamw.cu: one fused AdamW step over a parameter tensor of n elements. f32 master weights p,
// f32 moments m and v, gradient g in f32 or bf16 (the suffix names g's dtype); p, m, v are
// updated in place and, when pb is not null, the new weight is also stored as bf16 in pb (the
// model's bf16 parameter tensor). The update is engine/src/optim/adamw.rs's, in its order:
//   g  <- g * gscale                       (gscale 1: no-op; lets a grad-norm clip fold in)
//   p  <- p * keep                         keep = 1 - lr * wd (1 where decay is off)
//   m  <- b1 * m + (1 - b1) * g
//   v  <- b2 * v + ((1 - b2) * g) * g
//   p  <- p - (step_size * m) / (sqrt(v) / bc2_sqrt + eps)
// with keep, step_size = lr / (1 - b1^t) and bc2_sqrt = sqrt(1 - b2^t) computed by the host the
// way adamw_update does (in f64, then rounded to f32), and b1, b2, eps rounded to f32; 1 - b1
// and 1 - b2 are computed here in f32 as the CPU does. Every operation is an IEEE
// round-to-nearest PTX instruction (mul.rn, add.rn, div.rn, sqrt.rn: never contracted into an
// FMA, no flush-to-zero, whatever --use_fast_math says), so for f32 gradients the result is
// bitwise the CPU's (Rust does not contract either). bf16 gradients are exact in f32.
//
// Launch: grid_1d(n) (256 threads, grid-stride; any grid is correct). Thread i takes groups of 4
// elements i, i + stride, ..: 16-byte loads and stores of p, m, v (and of g for f32, 8 bytes
// for bf16; 8-byte stores of pb) when every pointer is aligned for them, else single elements.
// No reductions, so nothing depends on the launch shape.
#include "common.cuh"

#ifdef SOLAR_EMU
// The emulator's host build has no fused multiply-add contraction (-ffp-contract=off), so plain
// IEEE operations round exactly like these PTX ones.
__device__ __forceinline__ float mul_rn(float a, float b) { return a * b; }
__device__ __forceinline__ float add_rn(float a, float b) { return a + b; }
__device__ __forceinline__ float sub_rn(float a, float b) { return a - b; }
__device__ __forceinline__ float div_rn(float a, float b) { return a / b; }
__device__ __forceinline__ float sqrt_rn(float a) { return sqrtf(a); }
#else
__device__ __forceinline__ float mul_rn(float a, float b) {
    float r;
    asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float add_rn(float a, float b) {
    float r;
    asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float sub_rn(float a, float b) {
    float r;
    asm("sub.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float div_rn(float a, float b) {
    float r;
    asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}
__device__ __forceinline__ float sqrt_rn(float a) {
    float r;
    asm("sqrt.rn.f32 %0, %1;" : "=f"(r) : "f"(a));
    return r;
}
#endif

struct Hyper {
    float keep, b1, b2, omb1, omb2, eps, step_size, bc2_sqrt, gscale;
};

// One element: p, m, v in/out; g the raw gradient.
__device__ __forceinline__ void adamw_elem(float& p, float& m, float& v, float g, const Hyper& h) {
    g = mul_rn(g, h.gscale);
    p = mul_rn(p, h.keep);
    m = add_rn(mul_rn(h.b1, m), mul_rn(h.omb1, g));
    v = add_rn(mul_rn(h.b2, v), mul_rn(mul_rn(h.omb2, g), g));
    p = sub_rn(p, div_rn(mul_rn(h.step_size, m), add_rn(div_rn(sqrt_rn(v), h.bc2_sqrt), h.eps)));
}

// Four gradient values from element 4i on.
__device__ __forceinline__ void load_g4(const float* g, long i, float* f) {
    const float4 v = reinterpret_cast<const float4*>(g)[i];
    f[0] = v.x; f[1] = v.y; f[2] = v.z; f[3] = v.w;
}
__device__ __forceinline__ void load_g4(const bf16* g, long i, float* f) {
    const uint2 u = reinterpret_cast<const uint2*>(g)[i];
    f[0] = __uint_as_float(u.x << 16);
    f[1] = __uint_as_float(u.x & 0xffff0000u);
    f[2] = __uint_as_float(u.y << 16);
    f[3] = __uint_as_float(u.y & 0xffff0000u);
}
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    const bf16x2 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&h);
}

__device__ __forceinline__ bool aligned(const void* p, unsigned bytes) {
    return ((unsigned)(unsigned long long)p & (bytes - 1)) == 0;
}

template <typename G>
__device__ __forceinline__ void adamw(float* p, float* m, float* v, const G* g, bf16* pb, long n, const Hyper& h) {
    const long tid = blockIdx.x * (long)blockDim.x + threadIdx.x, stride = (long)gridDim.x * blockDim.x;
    const bool vec = aligned(p, 16) && aligned(m, 16) && aligned(v, 16) && aligned(g, 4 * sizeof(G)) &&
                     (pb == nullptr || aligned(pb, 8));
    long done = 0;
    if (vec) {
        const long n4 = n / 4;
        for (long i = tid; i < n4; i += stride) {
            float4 pv = reinterpret_cast<float4*>(p)[i];
            float4 mv = reinterpret_cast<float4*>(m)[i];
            float4 vv = reinterpret_cast<float4*>(v)[i];
            float gf[4];
            load_g4(g, i, gf);
            adamw_elem(pv.x, mv.x, vv.x, gf[0], h);
            adamw_elem(pv.y, mv.y, vv.y, gf[1], h);
            adamw_elem(pv.z, mv.z, vv.z, gf[2], h);
            adamw_elem(pv.w, mv.w, vv.w, gf[3], h);
            reinterpret_cast<float4*>(p)[i] = pv;
            reinterpret_cast<float4*>(m)[i] = mv;
            reinterpret_cast<float4*>(v)[i] = vv;
            if (pb) reinterpret_cast<uint2*>(pb)[i] = make_uint2(pack_bf16x2(pv.x, pv.y), pack_bf16x2(pv.z, pv.w));
        }
        done = n4 * 4;
    }
    for (long i = done + tid; i < n; i += stride) {
        float pi = p[i], mi = m[i], vi = v[i];
        adamw_elem(pi, mi, vi, ld(g, i), h);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (pb) pb[i] = f2bf(pi);
    }
}

extern "C" __global__ void adamw_step_f32(float* p, float* m, float* v, const float* g, bf16* pb, long n, float keep,
                                          float b1, float b2, float eps, float step_size, float bc2_sqrt,
                                          float gscale) {
    const Hyper h{keep, b1, b2, sub_rn(1.0f, b1), sub_rn(1.0f, b2), eps, step_size, bc2_sqrt, gscale};
    adamw(p, m, v, g, pb, n, h);
}
extern "C" __global__ void adamw_step_bf16(float* p, float* m, float* v, const bf16* g, bf16* pb, long n,
                                           float keep, float b1, float b2, float eps, float step_size,
                                           float bc2_sqrt, float gscale) {
    const Hyper h{keep, b1, b2, sub_rn(1.0f, b1), sub_rn(1.0f, b2), eps, step_size, bc2_sqrt, gscale};
    adamw(p, m, v, g, pb, n, h);
}

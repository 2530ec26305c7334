// gemm_store.cuh: how both GEMMs (matmul.cu on mma.sync, matmul_sm90.cu on wgmma) write C from
// their f32 accumulators: two neighbouring columns of one row per call, f32 or bf16 (rounded
// once, after the optional add of the old C), as one 8- or 4-byte store when the pair is
// aligned, else element by element. Every C element is written by one thread, once.
#pragma once
#include "common.cuh"

namespace tc {

// c[i] = x and c[i + 1] = y (plus the old values when `acc`); `two`: column i + 1 is inside C;
// `vec`: the pair may be stored as one vector (even N and strides, aligned C).
__device__ __forceinline__ void store2(float* c, long i, float x, float y, bool two, bool vec, bool acc) {
    if (vec && two) {
        float2* p = reinterpret_cast<float2*>(c + i);
        float2 v = make_float2(x, y);
        if (acc) {
            const float2 o = *p;
            v.x += o.x;
            v.y += o.y;
        }
        *p = v;
    } else {
        c[i] = acc ? c[i] + x : x;
        if (two) c[i + 1] = acc ? c[i + 1] + y : y;
    }
}
__device__ __forceinline__ void store2(bf16* c, long i, float x, float y, bool two, bool vec, bool acc) {
    if (vec && two) {
        bf16x2* p = reinterpret_cast<bf16x2*>(c + i);
        if (acc) {
            const float2 o = __bfloat1622float2(*p);
            x += o.x;
            y += o.y;
        }
        *p = __floats2bfloat162_rn(x, y);
    } else {
        c[i] = f2bf(acc ? bf2f(c[i]) + x : x);
        if (two) c[i + 1] = f2bf(acc ? bf2f(c[i + 1]) + y : y);
    }
}

}  // namespace tc

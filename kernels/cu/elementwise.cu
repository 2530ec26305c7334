// elementwise.cu: memory-bound maps over flat tensors: add/sub/mul (same shape, or the right
// side broadcast over rows: y[i] = a[i] op b[i % n]), scale, add_scalar, casts between f32 and
// bf16, and fill. Launch: a grid-stride loop, 256 threads a block, each thread handles
// consecutive elements so loads coalesce. Their backwards are themselves (add/sub/scale) or
// mul with the other input; the engine composes them.
#include "common.cuh"

#define BINARY(NAME, T, EXPR)                                                               \
    extern "C" __global__ void NAME(const T* a, const T* b, T* y, long n, long nb) {         \
        for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n;                    \
             i += (long)gridDim.x * blockDim.x) {                                            \
            float x = ld(a, i), z = ld(b, nb == n ? i : i % nb);                            \
            st(y, i, EXPR);                                                                  \
        }                                                                                    \
    }

BINARY(add_f32, float, x + z)
BINARY(sub_f32, float, x - z)
BINARY(mul_f32, float, x * z)
BINARY(add_bf16, bf16, x + z)
BINARY(sub_bf16, bf16, x - z)
BINARY(mul_bf16, bf16, x * z)

#define AFFINE(NAME, T)                                                                      \
    extern "C" __global__ void NAME(const T* x, T* y, float mul, float add, long n) {        \
        for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n;                    \
             i += (long)gridDim.x * blockDim.x)                                              \
            st(y, i, ld(x, i) * mul + add);                                                  \
    }

// y = x * mul + add: scale (add = 0) and add_scalar (mul = 1).
AFFINE(affine_f32, float)
AFFINE(affine_bf16, bf16)

extern "C" __global__ void cast_f32_bf16(const float* x, bf16* y, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = f2bf(x[i]);
}

extern "C" __global__ void cast_bf16_f32(const bf16* x, float* y, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = bf2f(x[i]);
}

extern "C" __global__ void fill_f32(float* y, float v, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = v;
}

extern "C" __global__ void fill_bf16(bf16* y, float v, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = f2bf(v);
}

// Column sums: x [R, N] -> y [N], y[j] = sum over r of x[r, j], in row order (deterministic).
// One thread a column; neighbouring threads read neighbouring columns, so loads coalesce. This
// is the backward of a broadcast add (a bias or weight row), where R*N is one activation.
template <typename T>
__device__ void sum_rows(const T* x, T* y, long rows, long n) {
    for (long j = blockIdx.x * (long)blockDim.x + threadIdx.x; j < n; j += (long)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (long r = 0; r < rows; ++r) acc += ld(x, r * n + j);
        st(y, j, acc);
    }
}
extern "C" __global__ void sum_rows_f32(const float* x, float* y, long rows, long n) { sum_rows(x, y, rows, n); }
extern "C" __global__ void sum_rows_bf16(const bf16* x, bf16* y, long rows, long n) { sum_rows(x, y, rows, n); }

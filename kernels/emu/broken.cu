// broken.cu: small kernels, each wrong in one way, that the emulator's checks must catch
// (kernels/tests/emu_checks.rs), and one correct kernel that must pass clean. Built into the
// emulator only (module "emu_broken"); NVRTC never sees it.
#include "tensor_core.cuh"

// Writes y[0..n] inclusive: one element past the end.
extern "C" __global__ void broken_oob_write(float* y, long n) {
    const long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i <= n) y[i] = 1.0f;
}

// Each thread reads its neighbour's slot without a barrier after the writes.
extern "C" __global__ void broken_shared_race(float* y) {
    __shared__ float s[64];
    s[threadIdx.x] = float(threadIdx.x);
    y[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

// Reads a shared slot nothing wrote (only even slots are written).
extern "C" __global__ void broken_uninit_shared(float* y) {
    __shared__ float s[64];
    if (threadIdx.x % 2 == 0) s[threadIdx.x] = 1.0f;
    __syncthreads();
    y[threadIdx.x] = s[threadIdx.x];
}

// Half the block skips the barrier.
extern "C" __global__ void broken_divergent_barrier(float* y) {
    __shared__ float s[64];
    s[threadIdx.x] = 1.0f;
    if (threadIdx.x < 16) __syncthreads();
    y[threadIdx.x] = s[threadIdx.x];
}

// A 16-byte load from an address 4 bytes past a 16-byte boundary.
extern "C" __global__ void broken_misaligned16(const float* x, float* y) {
    const float4 v = *reinterpret_cast<const float4*>(x + 1 + 4 * threadIdx.x);
    y[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// Reads the tile a cp.async is bringing in before waiting for it: it sees what was there before
// (here: nothing, so the read is of uninitialised shared memory).
extern "C" __global__ void broken_read_before_wait(const float* x, float* y) {
    __shared__ __align__(16) float s[4 * 32];
    tc::cp_async16(tc::smem_u32(s + 4 * threadIdx.x), x + 4 * threadIdx.x, 16);
    tc::cp_commit();
    y[threadIdx.x] = s[4 * threadIdx.x];
    tc::cp_wait<0>();
}

// The same done right, and a block reduction through shared memory and shuffles: no findings.
extern "C" __global__ void correct_block_sum(const float* x, float* y) {
    __shared__ float scratch[32];
    __shared__ __align__(16) float s[4 * 256];
    tc::cp_async16(tc::smem_u32(s + 4 * threadIdx.x), x + 4 * threadIdx.x, 16);
    tc::cp_commit();
    tc::cp_wait<0>();
    __syncthreads();
    const float v = s[4 * ((threadIdx.x + 1) % blockDim.x)];
    const float t = block_sum(v, scratch);
    if (threadIdx.x == 0) y[blockIdx.x] = t;
}

// printf from a kernel, as on the device.
extern "C" __global__ void hello_printf(int tag) {
    if (threadIdx.x == 0) printf("emulator printf: block %u says %d\n", blockIdx.x, tag);
}

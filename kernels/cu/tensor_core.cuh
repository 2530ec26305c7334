// tensor_core.cuh: the PTX the tensor-core kernels (matmul.cu, attention.cu) share, once:
// cp.async copies global -> shared, ldmatrix fragment loads and mma.sync m16n8k16 bf16 -> f32
// (sm_80 and later). Every asm that touches shared memory clobbers "memory", so the compiler
// never moves an ordinary shared load or store across a copy, a wait or a fragment load.
#pragma once
#include "common.cuh"

namespace tc {

// The 32-bit shared-window address PTX's shared-memory instructions take.
__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

#ifdef SOLAR_EMU
// The emulator executor (kernels/emu) runs these as warp-collective operations with the PTX
// ISA's fragment layouts; cp.async copies land at the wait, as on the device.
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int bytes) { emu_cp_async16(dst, src, bytes); }
__device__ __forceinline__ void cp_commit() { emu_cp_commit(); }
template <int N>
__device__ __forceinline__ void cp_wait() {
    emu_cp_wait(N);
}
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], unsigned addr) { emu_ldsm_x4(r, addr, 0); }
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], unsigned addr) { emu_ldsm_x4(r, addr, 1); }
__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    emu_mma16816(d, a, b0, b1);
}
#else
// 16 bytes global -> shared, bypassing L1. `bytes` = 0 reads nothing and writes 16 zero bytes
// (edges of a tile: the source address must still be a valid one, it is just not read).
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Waits until at most N committed groups are still in flight (the caller then syncs the block).
template <int N>
__device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices from shared memory; lane l supplies the row address of matrix l / 8.
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}
// The same, each matrix transposed (operands stored with M or N contiguous).
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

// d += a b for one m16n8k16 tile: a 16x16 row-major (4 registers), b 16x8 "col" (2 registers),
// d 16x8 f32 (4 registers per thread).
__device__ __forceinline__ void mma16816(float (&d)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#endif

__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p) { ldsm_x4(r, smem_u32(p)); }
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], const void* p) { ldsm_x4_t(r, smem_u32(p)); }

// Two f32 -> one register of two bf16 (round to nearest even), `lo` in the low half: the lower
// k index of an A fragment register.
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    bf16x2 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

}  // namespace tc

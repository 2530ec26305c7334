// embedding.cu: token embedding forward (a row gather) and its deterministic backward (a
// scatter-add without atomics); bf16 storage, f32 sums.
//   forward:  out[n, :] = table[ids[n], :]          ids [N] i32, table [V, C] bf16, out [N, C] bf16
//   backward: dtable[v, :] = sum over n with ids[n] == v of dy[n, :], in increasing n (the CPU's
//             order, engine/src/ops/embedding.rs); rows of ids that never occur stay zero.
//
// Backward plan (the host builds the index arrays from the ids it has already validated):
//   order [N] i32        token positions sorted by (id, position): a stable counting sort.
//   segs  [nseg, 4] i32  (id, begin, end, slot): the positions order[begin..end) all hold `id`;
//                        an id's positions are cut into segments of at most S (say 64) so one
//                        frequent token does not serialize the grid. slot = -1 when the id has
//                        one segment: the segment's sum is the gradient row, written to dtable;
//                        else the sum goes to partial[slot, :] (an id's slots consecutive, in
//                        segment order).
//   merges [nmerge, 3] i32  (id, first_slot, nslots) for each id cut into several segments:
//                        dtable[id, :] = sum of its partial rows in slot order.
//   dtable must be zeroed first (rows of absent ids). Work O(N*C + V*C for the zeroing),
//   every sum in a fixed order: bitwise reproducible.
//
// Kernels (suffix: the table's / its gradient's dtype; dy is always bf16):
// embedding_fwd_bf16(ids, table, out, long N, int C, long V)
// embedding_bwd_bf16 / embedding_bwd_bf16_f32(dy, order, segs, long nseg, int C, dtable, partial)
// embedding_bwd_merge_bf16 / embedding_bwd_merge_f32(partial, merges, long nmerge, int C, dtable)
//   grid: any >= 1 (grid-stride over rows / segments / merges), block: (bx, by) with bx * by
//   <= 256: threadIdx.y picks the row (segment, merge), threadIdx.x walks its C in chunks of 8
//   (16-byte loads and stores; when C % 8 == 0 and every pointer is 16-byte aligned) or of 1.
//   Plan bx = min(256, next_pow2(ceil(C / 8))), by = 256 / bx. smem 0.
//   embedding_fwd_bf16 writes a NaN row for an id outside [0, V) instead of reading out of
//   bounds; the engine validates ids on the host before launching, so that never happens.
#include "common.cuh"


__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(bf16* p, float v) { *p = f2bf(v); }

// Stores W f32 sums as W elements of T at p.
template <typename T, int W>
__device__ __forceinline__ void store_sums(T* p, const float (&s)[W]) {
    Pack<W, T> o;
#pragma unroll
    for (int e = 0; e < W; ++e) put(&o.v[e], s[e]);
    stp<W>(p, o);
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

template <int W>
__device__ __forceinline__ void gather_rows(const int* __restrict__ ids, const bf16* __restrict__ table,
                                            bf16* __restrict__ out, long N, int C, long V) {
    const int nch = C / W;
    for (long r = (long)blockIdx.x * blockDim.y + threadIdx.y; r < N; r += (long)gridDim.x * blockDim.y) {
        const long id = ids[r];
        bf16* o = out + r * C;
        if (id < 0 || id >= V) {
            for (int j = threadIdx.x; j < C; j += blockDim.x) o[j] = f2bf(__int_as_float(0x7fc00000));
            continue;
        }
        const bf16* src = table + id * C;
        for (int j = threadIdx.x; j < nch; j += blockDim.x) {
            // A raw copy: as a bf16 struct the store was split into 2-byte stores.
            if constexpr (W == 8)
                *reinterpret_cast<uint4*>(o + j * 8) = *reinterpret_cast<const uint4*>(src + j * 8);
            else
                o[j] = src[j];
        }
    }
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_fwd_bf16(const int* __restrict__ ids, const bf16* __restrict__ table, bf16* __restrict__ out,
                       long N, int C, long V) {
    if (C % 8 == 0 && aligned16(table) && aligned16(out))
        gather_rows<8>(ids, table, out, N, C, V);
    else
        gather_rows<1>(ids, table, out, N, C, V);
}

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

template <typename T, int W>
__device__ __forceinline__ void segment_sums(const bf16* __restrict__ dy, const int* __restrict__ order,
                                             const int* __restrict__ segs, long nseg, int C, T* __restrict__ dtable,
                                             float* __restrict__ partial) {
    const int nch = C / W;
    for (long s = (long)blockIdx.x * blockDim.y + threadIdx.y; s < nseg; s += (long)gridDim.x * blockDim.y) {
        const int id = segs[4 * s], begin = segs[4 * s + 1], end = segs[4 * s + 2], slot = segs[4 * s + 3];
        for (int j = threadIdx.x; j < nch; j += blockDim.x) {
            float acc[W];
#pragma unroll
            for (int e = 0; e < W; ++e) acc[e] = 0.0f;
            // In position order, as the CPU adds them; the loads of a few rows overlap.
#pragma unroll 4
            for (int k = begin; k < end; ++k) {
                const Pack<W, bf16> g = ldp<W>(dy + (long)order[k] * C + j * W);
#pragma unroll
                for (int e = 0; e < W; ++e) acc[e] += bf2f(g.v[e]);
            }
            if (slot < 0)
                store_sums<T, W>(dtable + (long)id * C + j * W, acc);
            else
                store_sums<float, W>(partial + (long)slot * C + j * W, acc);
        }
    }
}

template <typename T>
__device__ __forceinline__ void embedding_bwd(const bf16* dy, const int* order, const int* segs, long nseg, int C,
                                              T* dtable, float* partial) {
    if (C % 8 == 0 && aligned16(dy) && aligned16(dtable) && aligned16(partial))
        segment_sums<T, 8>(dy, order, segs, nseg, C, dtable, partial);
    else
        segment_sums<T, 1>(dy, order, segs, nseg, C, dtable, partial);
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_bwd_bf16(const bf16* __restrict__ dy, const int* __restrict__ order, const int* __restrict__ segs,
                       long nseg, int C, bf16* __restrict__ dtable, float* __restrict__ partial) {
    embedding_bwd<bf16>(dy, order, segs, nseg, C, dtable, partial);
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_bwd_bf16_f32(const bf16* __restrict__ dy, const int* __restrict__ order, const int* __restrict__ segs,
                           long nseg, int C, float* __restrict__ dtable, float* __restrict__ partial) {
    embedding_bwd<float>(dy, order, segs, nseg, C, dtable, partial);
}

template <typename T, int W>
__device__ __forceinline__ void merge_rows(const float* __restrict__ partial, const int* __restrict__ merges,
                                           long nmerge, int C, T* __restrict__ dtable) {
    const int nch = C / W;
    for (long m = (long)blockIdx.x * blockDim.y + threadIdx.y; m < nmerge; m += (long)gridDim.x * blockDim.y) {
        const int id = merges[3 * m], first = merges[3 * m + 1], count = merges[3 * m + 2];
        for (int j = threadIdx.x; j < nch; j += blockDim.x) {
            float acc[W];
#pragma unroll
            for (int e = 0; e < W; ++e) acc[e] = 0.0f;
#pragma unroll 4
            for (int k = first; k < first + count; ++k) {
                const Pack<W, float> p = ldp<W>(partial + (long)k * C + j * W);
#pragma unroll
                for (int e = 0; e < W; ++e) acc[e] += p.v[e];
            }
            store_sums<T, W>(dtable + (long)id * C + j * W, acc);
        }
    }
}

template <typename T>
__device__ __forceinline__ void embedding_merge(const float* partial, const int* merges, long nmerge, int C,
                                                T* dtable) {
    if (C % 8 == 0 && aligned16(partial) && aligned16(dtable))
        merge_rows<T, 8>(partial, merges, nmerge, C, dtable);
    else
        merge_rows<T, 1>(partial, merges, nmerge, C, dtable);
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_bwd_merge_bf16(const float* __restrict__ partial, const int* __restrict__ merges, long nmerge, int C,
                             bf16* __restrict__ dtable) {
    embedding_merge<bf16>(partial, merges, nmerge, C, dtable);
}

extern "C" __global__ void __launch_bounds__(256)
    embedding_bwd_merge_f32(const float* __restrict__ partial, const int* __restrict__ merges, long nmerge, int C,
                            float* __restrict__ dtable) {
    embedding_merge<float>(partial, merges, nmerge, C, dtable);
}

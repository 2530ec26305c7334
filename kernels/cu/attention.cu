// attention.cu: causal flash attention, forward and backward, bf16 storage, f32 accumulation and
// statistics, on tensor cores (mma.sync m16n8k16 bf16 -> f32, operands through ldmatrix).
// Semantics are engine/src/ops/attention.rs's:
//   q, dO, O, dq [B, T, H, D]; k, v, dk, dv [B, T, Hkv, D]; query head h reads kv head
//   h / (H / Hkv); doc (optional, may be null) [B, T] i32 (u32 ids pass bit-identical);
//   query i sees key j iff j <= i, i - j < window (window <= 0: none), doc[i] == doc[j].
//   Scores are scale * q.k with scale = 1/sqrt(D) passed by the launcher.
//   lse and delta are [B, H, T] f32 (row statistics contiguous along T for the backward tiles).
// Every query sees itself, so no valid row is empty; rows with nothing visible would still give
// O = 0 and lse = -inf rather than NaN (the softmax shift of an empty row is taken as 0).
//
// All kernels use 128 threads (4 warps), D in {16, 32, 64, 128} (templates instantiated below;
// the model presets use 16 and 32, Llama/Mistral 128).
// Shared tiles have rows of D + 8 bf16: the 16-byte pad puts the 8 row addresses of every
// ldmatrix phase in 8 different 16-byte bank groups (conflict-free), and keeps rows 16-aligned for
// cp.async. Rows past T are zero-filled by cp.async (src-size 0) and masked, never stored.
//
// Forward, attention_fwd_d{D}_bf16: grid (ceil(T/64), H, B), block 128, static smem
// (34.8 KB for D=128). A block owns 64 queries of one head (blockIdx.x reversed so the long causal
// rows start first); warp w owns rows 16w..16w+15 and keeps their Q fragments in registers. Per
// key block of 64 (only blocks the causal/window bounds allow, and with doc ids only blocks where
// some pair shares a document): S = Q K^T (mma), mask, online softmax in the log2 domain with a
// running row max and per-thread partial row sums, P rounded to bf16 fragments, O += P V (mma).
// K for the next block is fetched (cp.async) while softmax and PV run, V while the next QK^T runs.
// Epilogue: O / rowsum staged through smem for 16-byte stores; lse = ln(rowsum) + max.
//
// Backward (recompute, flash attention 2), no atomics, every output written once by one block:
//   attention_bwd_delta_bf16: delta = rowsum(dO * O) [B, H, T]; grid (ceil(B*T*H/8)), block 256,
//     one warp per (token, head) row, fixed shuffle tree.
//   attention_bwd_dq_d{D}_bf16: grid (ceil(T/64), H, B), block 128, static smem. A block owns
//     64 queries of one head (Q and dO fragments in registers) and walks key blocks (64 keys,
//     32 for D=128 to stay clear of spills): dP = dO V^T, S = Q K^T, P = exp(S - lse),
//     dS = P (dP - delta), dQ += dS K; dq = scale dQ.
//   attention_bwd_dkdv_d{D}_bf16: grid (ceil(T/64), Hkv, B), block 128, DYNAMIC smem
//     attn::dkdv_smem<D, BQ>() bytes (37.9 KB for D=64, 52.9 KB for D=128: the launcher must set
//     CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES for D=128). A block owns 64 keys of one kv
//     head (K, V tiles resident in smem; warp w owns keys 16w..16w+15) and loops over the
//     H/Hkv query heads of the group, then over the query blocks (BQ = 64 queries, 32 for
//     D=128) that can see its keys, in a fixed order: S^T = K Q^T, dP^T = V dO^T,
//     P^T = exp(S^T - lse), dS^T = P^T (dP^T - delta), dV += P^T dO, dK += dS^T Q;
//     dk = scale dK, dv = dV.
// Preconditions: q, k, v, dout, out, dq, dk, dv 16-byte aligned (row offsets are multiples of
// D >= 16 elements, so every row then is); H % Hkv == 0; T < 2^30; B, H <= 65535 (grid).
//
// Files: attention_tiles.cuh (tile copies, fragment addressing, mask tests), attention_fwd.cuh
// and attention_bwd.cuh (the kernel bodies, as templates over D and the tile sizes), and here the
// extern "C" entry points the engine loads. One NVRTC module, so forward and backward are built
// and cached together.
#include "attention_fwd.cuh"
#include "attention_bwd.cuh"

// ---------------------------------------------------------------------------------------------
// Entry points (extern "C" names for the loader; the bodies are the templates in the headers).
// Forward: grid (ceil(T/64), H, B), block 128, no dynamic smem.
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_fwd_d16_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, bf16* out,
                           float* lse, int T, int H, int Hkv, int window, float scale) {
    attn::fwd<16, 64, 64>(q, k, v, doc, out, lse, T, H, Hkv, window, scale);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_fwd_d32_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, bf16* out,
                           float* lse, int T, int H, int Hkv, int window, float scale) {
    attn::fwd<32, 64, 64>(q, k, v, doc, out, lse, T, H, Hkv, window, scale);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_fwd_d64_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, bf16* out,
                           float* lse, int T, int H, int Hkv, int window, float scale) {
    attn::fwd<64, 64, 64>(q, k, v, doc, out, lse, T, H, Hkv, window, scale);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_fwd_d128_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, bf16* out,
                           float* lse, int T, int H, int Hkv, int window, float scale) {
    attn::fwd<128, 64, 64>(q, k, v, doc, out, lse, T, H, Hkv, window, scale);
}

// delta[b, h, t] = sum_d dout[b, t, h, d] * out[b, t, h, d]; rows = B * T * H, D even.
// grid (ceil(rows / 8)), block 256: one warp per row.
extern "C" __global__ void __launch_bounds__(256)
    attention_bwd_delta_bf16(const bf16* out, const bf16* dout, float* delta, int T, int H, int D, long rows) {
    const int lane = threadIdx.x & 31;
    const long r = (long)blockIdx.x * 8 + (threadIdx.x >> 5);
    if (r >= rows) return;  // whole warps only
    const bf16x2* o2 = reinterpret_cast<const bf16x2*>(out + r * D);
    const bf16x2* g2 = reinterpret_cast<const bf16x2*>(dout + r * D);
    float s = 0.f;
    for (int c = lane; c < D / 2; c += 32) {
        const float2 a = __bfloat1622float2(o2[c]), b = __bfloat1622float2(g2[c]);
        s += a.x * b.x + a.y * b.y;
    }
    s = warp_sum(s);
    if (lane == 0) {
        const long h = r % H, bt = r / H;
        delta[(bt / T * H + h) * T + bt % T] = s;
    }
}

// dq: grid (ceil(T/64), H, B), block 128, no dynamic smem. Key blocks of 64 (32 for D=128).
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dq_d16_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                              const float* lse, const float* delta, bf16* dq, int T, int H, int Hkv,
                              int window, float scale) {
    attn::bwd_dq<16, 64, 64>(q, k, v, doc, dout, lse, delta, dq, T, H, Hkv, window, scale);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dq_d32_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                              const float* lse, const float* delta, bf16* dq, int T, int H, int Hkv,
                              int window, float scale) {
    attn::bwd_dq<32, 64, 64>(q, k, v, doc, dout, lse, delta, dq, T, H, Hkv, window, scale);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dq_d64_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                              const float* lse, const float* delta, bf16* dq, int T, int H, int Hkv,
                              int window, float scale) {
    attn::bwd_dq<64, 64, 64>(q, k, v, doc, dout, lse, delta, dq, T, H, Hkv, window, scale);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dq_d128_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                              const float* lse, const float* delta, bf16* dq, int T, int H, int Hkv,
                              int window, float scale) {
    attn::bwd_dq<128, 64, 32>(q, k, v, doc, dout, lse, delta, dq, T, H, Hkv, window, scale);
}

// dk, dv: grid (ceil(T/64), Hkv, B), block 128, dynamic smem attn::dkdv_smem<D, BQ>() bytes with
// query blocks BQ of 64 (32 for D=128): 13312 (D=16), 21504 (D=32), 37888 (D=64), 52864 (D=128;
// above 48 KB, so the launcher sets CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES).
extern __shared__ __align__(16) unsigned char attn_smem[];
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dkdv_d16_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                                const float* lse, const float* delta, bf16* dk, bf16* dv, int T, int H,
                                int Hkv, int window, float scale) {
    attn::bwd_dkdv<16, 64, attn::dkdv_bq(16)>(q, k, v, doc, dout, lse, delta, dk, dv, T, H, Hkv, window, scale, attn_smem);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dkdv_d32_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                                const float* lse, const float* delta, bf16* dk, bf16* dv, int T, int H,
                                int Hkv, int window, float scale) {
    attn::bwd_dkdv<32, 64, attn::dkdv_bq(32)>(q, k, v, doc, dout, lse, delta, dk, dv, T, H, Hkv, window, scale, attn_smem);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dkdv_d64_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                                const float* lse, const float* delta, bf16* dk, bf16* dv, int T, int H,
                                int Hkv, int window, float scale) {
    attn::bwd_dkdv<64, 64, attn::dkdv_bq(64)>(q, k, v, doc, dout, lse, delta, dk, dv, T, H, Hkv, window, scale, attn_smem);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dkdv_d128_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                                const float* lse, const float* delta, bf16* dk, bf16* dv, int T, int H,
                                int Hkv, int window, float scale) {
    attn::bwd_dkdv<128, 64, attn::dkdv_bq(128)>(q, k, v, doc, dout, lse, delta, dk, dv, T, H, Hkv, window, scale, attn_smem);
}

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
#include "common.cuh"

namespace attn {

constexpr int NT = 128;  // threads per block (4 warps, 16 rows of a tile each)
constexpr float LOG2E = 1.4426950408889634f;
constexpr float LN2 = 0.6931471805599453f;
// "No window" as a window no distance reaches, small enough that j + win cannot overflow int.
constexpr int NO_WINDOW = 1 << 30;
__device__ __forceinline__ bool no_window(int window, int T) { return window <= 0 || window >= T; }
#define POS_INF __int_as_float(0x7f800000)

__device__ __forceinline__ unsigned smem_addr(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; when !ok nothing is read and zeros are written.
__device__ __forceinline__ void cp_async16(bf16* dst, const bf16* src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], const bf16* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p))
                 : "memory");
}

// c += a b for one m16n8k16 tile (a row-major 16x16, b "col" 16x8, c 16x8 f32).
__device__ __forceinline__ void mma(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two f32 -> one register of two bf16, `lo` in the low half (the lower k index of a fragment).
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    bf16x2 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}

// Fragment addressing inside a 16x16 block of a row-major smem tile with row stride LD.
// A operand (rows = M, cols = K) and B operand stored [K][N] (.trans): matrices 0..3 are
// (rows 0-7, cols 0-7), (rows 8-15, cols 0-7), (rows 0-7, cols 8-15), (rows 8-15, cols 8-15).
template <int LD>
__device__ __forceinline__ const bf16* frag_a(const bf16* tile, int row0, int col0) {
    const int lane = threadIdx.x & 31;
    return tile + (row0 + (lane & 15)) * LD + col0 + (lane >> 4) * 8;
}
// B operand stored [N][K] (non-trans): matrices are (n 0-7, k 0-7), (n 0-7, k 8-15),
// (n 8-15, k 0-7), (n 8-15, k 8-15), i.e. {b0, b1} of n-tile n0 then of n-tile n0 + 8.
template <int LD>
__device__ __forceinline__ const bf16* frag_bt(const bf16* tile, int n0, int k0) {
    const int lane = threadIdx.x & 31;
    return tile + (n0 + (lane & 7) + ((lane >> 4) << 3)) * LD + k0 + ((lane >> 3) & 1) * 8;
}

// Issues the cp.async copies of ROWS rows (starting at token row0) of D bf16 each, row stride
// `stride` elements in global memory, into a tile with row stride D + 8. A thread copies the same
// 16-byte column of every NT / (D / 8)-th row; the source pointer advances by chained adds so the
// compiler has no per-chunk 64-bit offsets to hoist out of the caller's loop (register pressure).
template <int D, int ROWS>
__device__ __forceinline__ void load_rows(bf16* s, const bf16* g, long stride, int row0, int T) {
    constexpr int CH = D / 8, LD = D + 8, RPI = NT / CH;
    static_assert(NT % CH == 0 && ROWS % RPI == 0, "tile copy must divide among the threads");
    const int r0 = threadIdx.x / CH, col = (threadIdx.x % CH) * 8;
    const bf16* src = g + (long)(row0 + r0) * stride + col;
    const long step = (long)RPI * stride;
#pragma unroll
    for (int it = 0; it < ROWS / RPI; ++it) {
        const bool ok = row0 + r0 + it * RPI < T;
        cp_async16(s + (r0 + it * RPI) * LD + col, ok ? src : g, ok);
        src += step;
    }
}

// Writes a warp's 16 x D f32 accumulator rows (times `mul`) into a bf16 smem tile.
template <int D>
__device__ __forceinline__ void stage_rows(bf16* s, const float (&acc)[D / 8][4], float mul) {
    constexpr int LD = D + 8;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int dt = 0; dt < D / 8; ++dt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = warp * 16 + g + 8 * r, col = dt * 8 + 2 * tq;
            *reinterpret_cast<bf16x2*>(s + row * LD + col) =
                __floats2bfloat162_rn(acc[dt][2 * r] * mul, acc[dt][2 * r + 1] * mul);
        }
    }
}

// Stores ROWS staged rows (token row0 + r < T only) with 16-byte stores.
template <int D, int ROWS>
__device__ __forceinline__ void store_rows(bf16* g, long stride, const bf16* s, int row0, int T) {
    constexpr int CH = D / 8, LD = D + 8, RPI = NT / CH;
    const int r0 = threadIdx.x / CH, col = (threadIdx.x % CH) * 8;
    bf16* dst = g + (long)(row0 + r0) * stride + col;
    const long step = (long)RPI * stride;
#pragma unroll
    for (int it = 0; it < ROWS / RPI; ++it) {
        if (row0 + r0 + it * RPI < T)
            *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(s + (r0 + it * RPI) * LD + col);
        dst += step;
    }
}

// Whether any query of [q0, q0 + BM) sees any key of [k0, k0 + BN) with document ids: each
// thread tests one key against BM * BN / NT queries whose ids are in sdq. Block-uniform result.
template <int BM, int BN>
__device__ __forceinline__ bool keys_visible(const int* dg, const int* sdq, int q0, int k0, int T, int win) {
    constexpr int R = BM * BN / NT;
    static_assert(NT % BN == 0 && R * (NT / BN) == BM, "pair split");
    const int j = k0 + threadIdx.x % BN, r0 = threadIdx.x / BN * R;
    bool hit = false;
    if (j < T) {
        const int dj = dg[j];
#pragma unroll 8
        for (int r = r0; r < r0 + R; ++r) {
            const int i = q0 + r;
            hit |= (i < T) & (j <= i) & (i - j < win) & (sdq[r] == dj);
        }
    }
    return __syncthreads_or(hit) != 0;
}

// The same with the roles swapped: each thread tests one query against BN * BQ / NT keys (sdk).
template <int BN, int BQ>
__device__ __forceinline__ bool queries_visible(const int* dg, const int* sdk, int k0, int q0, int T, int win) {
    constexpr int R = BN * BQ / NT;
    static_assert(NT % BQ == 0 && R * (NT / BQ) == BN, "pair split");
    const int i = q0 + threadIdx.x % BQ, c0 = threadIdx.x / BQ * R;
    bool hit = false;
    if (i < T) {
        const int di = dg[i];
#pragma unroll 8
        for (int c = c0; c < c0 + R; ++c) {
            const int j = k0 + c;
            hit |= (j < T) & (j <= i) & (i - j < win) & (sdk[c] == di);
        }
    }
    return __syncthreads_or(hit) != 0;
}

// ---------------------------------------------------------------------------------------------
// Forward.
template <int D, int BM, int BN>
__device__ __forceinline__ void fwd(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                    const bf16* __restrict__ v, const int* __restrict__ doc,
                                    bf16* __restrict__ out, float* __restrict__ lse, int T, int H,
                                    int Hkv, int window, float scale) {
    static_assert(BM == 16 * (NT / 32) && BM <= BN, "a warp per 16 queries; Q is staged in sK");
    constexpr int LD = D + 8, KD = D / 16, NB = BN / 8, ND = D / 8;
    __shared__ __align__(16) bf16 sK[BN * LD];
    __shared__ __align__(16) bf16 sV[BN * LD];
    __shared__ int sDocQ[BM];
    __shared__ int sDocK[2][BN];

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BM;
    const int h = blockIdx.y, b = blockIdx.z, hk = h / (H / Hkv);
    const int win = no_window(window, T) ? NO_WINDOW : window;
    const long qs = (long)H * D, ks = (long)Hkv * D;
    const bf16* qg = q + (long)b * T * qs + (long)h * D;
    const bf16* kg = k + (long)b * T * ks + (long)hk * D;
    const bf16* vg = v + (long)b * T * ks + (long)hk * D;
    const int* dg = doc ? doc + (long)b * T : nullptr;

    load_rows<D, BM>(sK, qg, qs, q0, T);
    cp_commit();
    if (dg && tid < BM) sDocQ[tid] = q0 + tid < T ? dg[q0 + tid] : -1;
    cp_wait<0>();
    __syncthreads();
    unsigned qf[KD][4];
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) ldsm_x4(qf[kk], frag_a<LD>(sK, warp * 16, kk * 16));
    int rdoc[2] = {0, 0};
    if (dg) {
        rdoc[0] = sDocQ[warp * 16 + g];
        rdoc[1] = sDocQ[warp * 16 + g + 8];
    }
    __syncthreads();  // sK is reused for K

    const int qlast = min(q0 + BM, T) - 1;
    const int kb_hi = qlast / BN, kb_lo = max(0, q0 - win + 1) / BN;
    auto next_block = [&](int kb) {
        if (dg)
            while (kb <= kb_hi && !keys_visible<BM, BN>(dg, sDocQ, q0, kb * BN, T, win)) ++kb;
        return kb;
    };
    auto issue_k = [&](int kb, int buf) {
        load_rows<D, BN>(sK, kg, ks, kb * BN, T);
        if (dg && tid < BN) sDocK[buf][tid] = kb * BN + tid < T ? dg[kb * BN + tid] : -1;
    };

    const float sl2 = scale * LOG2E;
    float o[ND][4];
#pragma unroll
    for (int i = 0; i < ND; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};

    int kb = next_block(kb_lo);
    if (kb <= kb_hi) {
        issue_k(kb, 0);
        cp_commit();
        load_rows<D, BN>(sV, vg, ks, kb * BN, T);
        cp_commit();
    }
    for (int it = 0; kb <= kb_hi; ++it) {
        const int nxt = next_block(kb + 1);
        const int k0 = kb * BN;
        cp_wait<1>();  // K(kb) landed; V(kb) may be in flight
        __syncthreads();

        float s[NB][4];
#pragma unroll
        for (int i = 0; i < NB; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
#pragma unroll
            for (int nn = 0; nn < BN / 16; ++nn) {
                unsigned bf[4];
                ldsm_x4(bf, frag_bt<LD>(sK, nn * 16, kk * 16));
                mma(s[2 * nn], qf[kk], bf[0], bf[1]);
                mma(s[2 * nn + 1], qf[kk], bf[2], bf[3]);
            }
        }
        __syncthreads();  // every warp is done with sK
        if (nxt <= kb_hi) issue_k(nxt, (it + 1) & 1);
        cp_commit();

        // Mask, then the online softmax of this thread's two rows (g and g + 8 of the warp).
        const bool full = !dg && k0 + BN - 1 <= q0 && q0 + BM - 1 - k0 < win;
        const int* kd = sDocK[it & 1];
#pragma unroll
        for (int nt = 0; nt < NB; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float x = s[nt][e] * sl2;
                if (!full) {
                    const int i = q0 + warp * 16 + g + (e >> 1) * 8;
                    const int j = k0 + nt * 8 + 2 * tq + (e & 1);
                    const bool vis = j <= i && i - j < win && (!dg || rdoc[e >> 1] == kd[j - k0]);
                    if (!vis) x = NEG_INF;
                }
                s[nt][e] = x;
            }
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float mx = m[r];
#pragma unroll
            for (int nt = 0; nt < NB; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float shift = mx == NEG_INF ? 0.f : mx;  // empty so far: exp2(-inf - 0) = 0
            const float alpha = exp2f(m[r] - shift);
            m[r] = mx;
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < NB; ++nt) {
                s[nt][2 * r] = exp2f(s[nt][2 * r] - shift);
                s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - shift);
                sum += s[nt][2 * r] + s[nt][2 * r + 1];
            }
            l[r] = l[r] * alpha + sum;
#pragma unroll
            for (int dt = 0; dt < ND; ++dt) {
                o[dt][2 * r] *= alpha;
                o[dt][2 * r + 1] *= alpha;
            }
        }
        unsigned pa[BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            pa[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            pa[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            pa[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            pa[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        }

        cp_wait<1>();  // V(kb) landed; K(nxt) may be in flight
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
            for (int dn = 0; dn < D / 16; ++dn) {
                unsigned bf[4];
                ldsm_x4_t(bf, frag_a<LD>(sV, kk * 16, dn * 16));
                mma(o[2 * dn], pa[kk], bf[0], bf[1]);
                mma(o[2 * dn + 1], pa[kk], bf[2], bf[3]);
            }
        }
        __syncthreads();  // every warp is done with sV
        if (nxt <= kb_hi) load_rows<D, BN>(sV, vg, ks, nxt * BN, T);
        cp_commit();
        kb = nxt;
    }
    cp_wait<0>();

    // Row sums over the quad, lse, O / sum staged through sK for 16-byte stores.
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float sum = l[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        inv[r] = sum > 0.f ? 1.f / sum : 0.f;
        const int row = q0 + warp * 16 + g + 8 * r;
        if (tq == 0 && row < T)
            lse[((long)b * H + h) * T + row] = sum > 0.f ? (m[r] + log2f(sum)) * LN2 : NEG_INF;
    }
#pragma unroll
    for (int dt = 0; dt < ND; ++dt) {
        o[dt][0] *= inv[0];
        o[dt][1] *= inv[0];
        o[dt][2] *= inv[1];
        o[dt][3] *= inv[1];
    }
    __syncthreads();
    stage_rows<D>(sK, o, 1.f);
    __syncthreads();
    store_rows<D, BM>(out + (long)b * T * qs + (long)h * D, qs, sK, q0, T);
}

// ---------------------------------------------------------------------------------------------
// Backward, query side: dq.
template <int D, int BM, int BN>
__device__ __forceinline__ void bwd_dq(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                       const bf16* __restrict__ v, const int* __restrict__ doc,
                                       const bf16* __restrict__ dout, const float* __restrict__ lse,
                                       const float* __restrict__ delta, bf16* __restrict__ dq, int T,
                                       int H, int Hkv, int window, float scale) {
    static_assert(BM == 16 * (NT / 32) && BM <= 2 * BN, "a warp per 16 queries; Q staged in sK+sV");
    constexpr int LD = D + 8, KD = D / 16, NB = BN / 8, ND = D / 8;
    __shared__ __align__(16) bf16 sKV[2 * BN * LD];
    __shared__ int sDocQ[BM];
    __shared__ int sDocK[2][BN];
    bf16* sK = sKV;
    bf16* sV = sKV + BN * LD;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
    const int q0 = (gridDim.x - 1 - blockIdx.x) * BM;
    const int h = blockIdx.y, b = blockIdx.z, hk = h / (H / Hkv);
    const int win = no_window(window, T) ? NO_WINDOW : window;
    const long qs = (long)H * D, ks = (long)Hkv * D;
    const long qoff = (long)b * T * qs + (long)h * D;
    const bf16* kg = k + (long)b * T * ks + (long)hk * D;
    const bf16* vg = v + (long)b * T * ks + (long)hk * D;
    const int* dg = doc ? doc + (long)b * T : nullptr;

    unsigned qf[KD][4], of[KD][4];
    load_rows<D, BM>(sKV, q + qoff, qs, q0, T);
    cp_commit();
    if (dg && tid < BM) sDocQ[tid] = q0 + tid < T ? dg[q0 + tid] : -1;
    cp_wait<0>();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) ldsm_x4(qf[kk], frag_a<LD>(sKV, warp * 16, kk * 16));
    __syncthreads();
    load_rows<D, BM>(sKV, dout + qoff, qs, q0, T);
    cp_commit();
    cp_wait<0>();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) ldsm_x4(of[kk], frag_a<LD>(sKV, warp * 16, kk * 16));
    int rdoc[2] = {0, 0};
    float lse2[2], dlt[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = q0 + warp * 16 + g + 8 * r;
        if (dg) rdoc[r] = sDocQ[warp * 16 + g + 8 * r];
        // +inf for rows past T (or empty rows): P = exp2(s - inf) = 0 there.
        const float L = row < T ? lse[((long)b * H + h) * T + row] : NEG_INF;
        lse2[r] = L == NEG_INF ? POS_INF : L * LOG2E;
        dlt[r] = row < T ? delta[((long)b * H + h) * T + row] : 0.f;
    }
    __syncthreads();  // sKV is reused for K and V

    const int qlast = min(q0 + BM, T) - 1;
    const int kb_hi = qlast / BN, kb_lo = max(0, q0 - win + 1) / BN;
    auto next_block = [&](int kb) {
        if (dg)
            while (kb <= kb_hi && !keys_visible<BM, BN>(dg, sDocQ, q0, kb * BN, T, win)) ++kb;
        return kb;
    };
    auto issue_k = [&](int kb, int buf) {
        load_rows<D, BN>(sK, kg, ks, kb * BN, T);
        if (dg && tid < BN) sDocK[buf][tid] = kb * BN + tid < T ? dg[kb * BN + tid] : -1;
    };

    const float sl2 = scale * LOG2E;
    float acc[ND][4];
#pragma unroll
    for (int i = 0; i < ND; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

    int kb = next_block(kb_lo);
    if (kb <= kb_hi) {
        load_rows<D, BN>(sV, vg, ks, kb * BN, T);
        cp_commit();
        issue_k(kb, 0);
        cp_commit();
    }
    for (int it = 0; kb <= kb_hi; ++it) {
        const int nxt = next_block(kb + 1);
        const int k0 = kb * BN;
        cp_wait<1>();  // V(kb) landed; K(kb) may be in flight
        __syncthreads();
        float dp[NB][4];
#pragma unroll
        for (int i = 0; i < NB; ++i) dp[i][0] = dp[i][1] = dp[i][2] = dp[i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
#pragma unroll
            for (int nn = 0; nn < BN / 16; ++nn) {
                unsigned bf[4];
                ldsm_x4(bf, frag_bt<LD>(sV, nn * 16, kk * 16));
                mma(dp[2 * nn], of[kk], bf[0], bf[1]);
                mma(dp[2 * nn + 1], of[kk], bf[2], bf[3]);
            }
        }
        __syncthreads();  // every warp is done with sV
        if (nxt <= kb_hi) load_rows<D, BN>(sV, vg, ks, nxt * BN, T);
        cp_commit();
        cp_wait<1>();  // K(kb) landed; V(nxt) may be in flight
        __syncthreads();

        float s[NB][4];
#pragma unroll
        for (int i = 0; i < NB; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
#pragma unroll
            for (int nn = 0; nn < BN / 16; ++nn) {
                unsigned bf[4];
                ldsm_x4(bf, frag_bt<LD>(sK, nn * 16, kk * 16));
                mma(s[2 * nn], qf[kk], bf[0], bf[1]);
                mma(s[2 * nn + 1], qf[kk], bf[2], bf[3]);
            }
        }
        const bool full = !dg && k0 + BN - 1 <= q0 && q0 + BM - 1 - k0 < win;
        const int* kd = sDocK[it & 1];
#pragma unroll
        for (int nt = 0; nt < NB; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = e >> 1;
                bool vis = true;
                if (!full) {
                    const int i = q0 + warp * 16 + g + r * 8;
                    const int j = k0 + nt * 8 + 2 * tq + (e & 1);
                    vis = j <= i && i - j < win && (!dg || rdoc[r] == kd[j - k0]);
                }
                const float p = vis ? exp2f(s[nt][e] * sl2 - lse2[r]) : 0.f;
                s[nt][e] = p * (dp[nt][e] - dlt[r]);  // dS
            }
        }
        unsigned da[BN / 16][4];
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            da[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
            da[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
            da[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
            da[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        }
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
            for (int dn = 0; dn < D / 16; ++dn) {
                unsigned bf[4];
                ldsm_x4_t(bf, frag_a<LD>(sK, kk * 16, dn * 16));
                mma(acc[2 * dn], da[kk], bf[0], bf[1]);
                mma(acc[2 * dn + 1], da[kk], bf[2], bf[3]);
            }
        }
        __syncthreads();  // every warp is done with sK and sDocK[it & 1]
        if (nxt <= kb_hi) issue_k(nxt, (it + 1) & 1);
        cp_commit();
        kb = nxt;
    }
    cp_wait<0>();
    __syncthreads();
    stage_rows<D>(sKV, acc, scale);
    __syncthreads();
    store_rows<D, BM>(dq + qoff, qs, sKV, q0, T);
}

// ---------------------------------------------------------------------------------------------
// Backward, key side: dk and dv of one kv head, summed over its query heads in the block.
template <int D, int BQ>
__host__ __device__ constexpr int dkdv_smem() {
    return (2 * 64 + 2 * BQ) * (D + 8) * 2 + BQ * 4 * 3 + 64 * 4;
}

template <int D, int BN, int BQ>
__device__ __forceinline__ void bwd_dkdv(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                         const bf16* __restrict__ v, const int* __restrict__ doc,
                                         const bf16* __restrict__ dout, const float* __restrict__ lse,
                                         const float* __restrict__ delta, bf16* __restrict__ dk,
                                         bf16* __restrict__ dv, int T, int H, int Hkv, int window,
                                         float scale, unsigned char* smem) {
    static_assert(BN == 16 * (NT / 32), "a warp per 16 keys");
    constexpr int LD = D + 8, KD = D / 16, NQ = BQ / 8, ND = D / 8;
    bf16* sK = reinterpret_cast<bf16*>(smem);
    bf16* sV = sK + BN * LD;
    bf16* sQ = sV + BN * LD;
    bf16* sO = sQ + BQ * LD;  // dO tile
    float* sL = reinterpret_cast<float*>(sO + BQ * LD);  // lse * log2(e), +inf past T
    float* sDl = sL + BQ;                                // delta
    int* sDocQ = reinterpret_cast<int*>(sDl + BQ);
    int* sDocK = sDocQ + BQ;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tq = lane & 3;
    const int k0 = blockIdx.x * BN;
    const int hk = blockIdx.y, b = blockIdx.z, G = H / Hkv;
    const int win = no_window(window, T) ? NO_WINDOW : window;
    const long qs = (long)H * D, ks = (long)Hkv * D;
    const long koff = (long)b * T * ks + (long)hk * D;
    const int* dg = doc ? doc + (long)b * T : nullptr;

    load_rows<D, BN>(sK, k + koff, ks, k0, T);
    load_rows<D, BN>(sV, v + koff, ks, k0, T);
    cp_commit();
    if (dg && tid < BN) sDocK[tid] = k0 + tid < T ? dg[k0 + tid] : -1;
    __syncthreads();  // sDocK for the first visibility scan
    int kdoc[2] = {0, 0};
    if (dg) {
        kdoc[0] = sDocK[warp * 16 + g];
        kdoc[1] = sDocK[warp * 16 + g + 8];
    }

    const int klast = min(k0 + BN, T) - 1;
    const int qb_lo = k0 / BQ, qb_hi = min(T - 1, klast + win - 1) / BQ;
    auto next_block = [&](int qb) {
        if (dg)
            while (qb <= qb_hi && !queries_visible<BN, BQ>(dg, sDocK, k0, qb * BQ, T, win)) ++qb;
        return qb;
    };
    auto issue = [&](int hh, int qb) {
        const int hq = hk * G + hh, q0 = qb * BQ;
        const long qoff = (long)b * T * qs + (long)hq * D;
        load_rows<D, BQ>(sQ, q + qoff, qs, q0, T);
        load_rows<D, BQ>(sO, dout + qoff, qs, q0, T);
        if (tid < BQ) {
            const int i = q0 + tid;
            const long o = ((long)b * H + hq) * T + i;
            const float L = i < T ? lse[o] : NEG_INF;
            sL[tid] = L == NEG_INF ? POS_INF : L * LOG2E;
            sDl[tid] = i < T ? delta[o] : 0.f;
            if (dg) sDocQ[tid] = i < T ? dg[i] : -1;
        }
    };

    const float sl2 = scale * LOG2E;
    float adk[ND][4], adv[ND][4];
#pragma unroll
    for (int i = 0; i < ND; ++i) {
        adk[i][0] = adk[i][1] = adk[i][2] = adk[i][3] = 0.f;
        adv[i][0] = adv[i][1] = adv[i][2] = adv[i][3] = 0.f;
    }

    const int qfirst = next_block(qb_lo);
    int hh = 0, qb = qfirst;
    if (qb <= qb_hi) issue(hh, qb);
    cp_commit();
    while (qb <= qb_hi) {
        // The next (head, query block): query blocks in order, then the next head of the group.
        int nh = hh, nq = next_block(qb + 1);
        if (nq > qb_hi) {
            nh = hh + 1;
            nq = qfirst;
        }
        const int q0 = qb * BQ;
        cp_wait<0>();  // Q, dO (and at first K, V) landed; sL, sDl, sDocQ written
        __syncthreads();

        float st[NQ][4], dpt[NQ][4];
#pragma unroll
        for (int i = 0; i < NQ; ++i) {
            st[i][0] = st[i][1] = st[i][2] = st[i][3] = 0.f;
            dpt[i][0] = dpt[i][1] = dpt[i][2] = dpt[i][3] = 0.f;
        }
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
            unsigned ka[4], va[4];
            ldsm_x4(ka, frag_a<LD>(sK, warp * 16, kk * 16));
            ldsm_x4(va, frag_a<LD>(sV, warp * 16, kk * 16));
#pragma unroll
            for (int nn = 0; nn < BQ / 16; ++nn) {
                unsigned bf[4];
                ldsm_x4(bf, frag_bt<LD>(sQ, nn * 16, kk * 16));
                mma(st[2 * nn], ka, bf[0], bf[1]);
                mma(st[2 * nn + 1], ka, bf[2], bf[3]);
                ldsm_x4(bf, frag_bt<LD>(sO, nn * 16, kk * 16));
                mma(dpt[2 * nn], va, bf[0], bf[1]);
                mma(dpt[2 * nn + 1], va, bf[2], bf[3]);
            }
        }
        // Rows are keys (g, g + 8 of the warp), columns queries.
        const bool full = !dg && q0 >= k0 + BN - 1 && q0 + BQ - 1 - k0 < win && q0 + BQ <= T;
#pragma unroll
        for (int nt = 0; nt < NQ; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int c = nt * 8 + 2 * tq + (e & 1);
                bool vis = true;
                if (!full) {
                    const int j = k0 + warp * 16 + g + (e >> 1) * 8, i = q0 + c;
                    vis = i < T && j <= i && i - j < win && (!dg || kdoc[e >> 1] == sDocQ[c]);
                }
                const float p = vis ? exp2f(st[nt][e] * sl2 - sL[c]) : 0.f;
                st[nt][e] = p;
                dpt[nt][e] = p * (dpt[nt][e] - sDl[c]);  // dS^T
            }
        }
        unsigned pa[BQ / 16][4], da[BQ / 16][4];
#pragma unroll
        for (int kk = 0; kk < BQ / 16; ++kk) {
            pa[kk][0] = pack_bf16(st[2 * kk][0], st[2 * kk][1]);
            pa[kk][1] = pack_bf16(st[2 * kk][2], st[2 * kk][3]);
            pa[kk][2] = pack_bf16(st[2 * kk + 1][0], st[2 * kk + 1][1]);
            pa[kk][3] = pack_bf16(st[2 * kk + 1][2], st[2 * kk + 1][3]);
            da[kk][0] = pack_bf16(dpt[2 * kk][0], dpt[2 * kk][1]);
            da[kk][1] = pack_bf16(dpt[2 * kk][2], dpt[2 * kk][3]);
            da[kk][2] = pack_bf16(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
            da[kk][3] = pack_bf16(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
        }
#pragma unroll
        for (int kk = 0; kk < BQ / 16; ++kk) {
#pragma unroll
            for (int dn = 0; dn < D / 16; ++dn) {
                unsigned bf[4];
                ldsm_x4_t(bf, frag_a<LD>(sO, kk * 16, dn * 16));
                mma(adv[2 * dn], pa[kk], bf[0], bf[1]);
                mma(adv[2 * dn + 1], pa[kk], bf[2], bf[3]);
                ldsm_x4_t(bf, frag_a<LD>(sQ, kk * 16, dn * 16));
                mma(adk[2 * dn], da[kk], bf[0], bf[1]);
                mma(adk[2 * dn + 1], da[kk], bf[2], bf[3]);
            }
        }
        __syncthreads();  // every warp is done with sQ, sO, sL, sDl, sDocQ
        if (nh >= G) break;
        issue(nh, nq);
        cp_commit();
        hh = nh;
        qb = nq;
    }
    cp_wait<0>();
    __syncthreads();
    stage_rows<D>(sK, adk, scale);
    stage_rows<D>(sV, adv, 1.f);
    __syncthreads();
    store_rows<D, BN>(dk + koff, ks, sK, k0, T);
    store_rows<D, BN>(dv + koff, ks, sV, k0, T);
}

}  // namespace attn

// ---------------------------------------------------------------------------------------------
// Entry points (extern "C" names for the loader; the bodies are the templates above).
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
    attn::bwd_dkdv<16, 64, 64>(q, k, v, doc, dout, lse, delta, dk, dv, T, H, Hkv, window, scale, attn_smem);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dkdv_d32_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                                const float* lse, const float* delta, bf16* dk, bf16* dv, int T, int H,
                                int Hkv, int window, float scale) {
    attn::bwd_dkdv<32, 64, 64>(q, k, v, doc, dout, lse, delta, dk, dv, T, H, Hkv, window, scale, attn_smem);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dkdv_d64_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                                const float* lse, const float* delta, bf16* dk, bf16* dv, int T, int H,
                                int Hkv, int window, float scale) {
    attn::bwd_dkdv<64, 64, 64>(q, k, v, doc, dout, lse, delta, dk, dv, T, H, Hkv, window, scale, attn_smem);
}
extern "C" __global__ void __launch_bounds__(attn::NT)
    attention_bwd_dkdv_d128_bf16(const bf16* q, const bf16* k, const bf16* v, const int* doc, const bf16* dout,
                                const float* lse, const float* delta, bf16* dk, bf16* dv, int T, int H,
                                int Hkv, int window, float scale) {
    attn::bwd_dkdv<128, 64, 32>(q, k, v, doc, dout, lse, delta, dk, dv, T, H, Hkv, window, scale, attn_smem);
}

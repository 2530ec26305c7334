// attention_bwd.cuh: the flash attention backward by recomputation: the query-side kernel (dq)
// and the key-side kernel (dk, dv summed over the query heads of a kv head), each output written
// once by one block, no atomics. attention.cu describes the algorithm and instantiates it.
#pragma once
#include "attention_tiles.cuh"

namespace attn {

// Query side: dq.
template <int D, int BM, int BN>
__device__ __forceinline__ void bwd_dq(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                       const bf16* __restrict__ v, const int* __restrict__ doc,
                                       const bf16* __restrict__ dout, const float* __restrict__ lse,
                                       const float* __restrict__ delta, bf16* __restrict__ dq, int T,
                                       int H, int Hkv, int window, float scale) {
    static_assert(BM == 16 * (NT / 32) && BM <= 2 * BN, "a warp per 16 queries; Q staged in sK+sV");
    constexpr int LD = tile_ld(D), KD = D / 16, NB = BN / 8, ND = D / 8;
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
                mma16816(dp[2 * nn], of[kk], bf[0], bf[1]);
                mma16816(dp[2 * nn + 1], of[kk], bf[2], bf[3]);
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
                mma16816(s[2 * nn], qf[kk], bf[0], bf[1]);
                mma16816(s[2 * nn + 1], qf[kk], bf[2], bf[3]);
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
                mma16816(acc[2 * dn], da[kk], bf[0], bf[1]);
                mma16816(acc[2 * dn + 1], da[kk], bf[2], bf[3]);
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

// Query rows per block of the key-side kernel: 32 for D = 128 to stay clear of spills.
__host__ __device__ constexpr int dkdv_bq(int D) { return D == 128 ? 32 : 64; }
template <int D, int BQ>
__host__ __device__ constexpr int dkdv_smem() {
    return (2 * 64 + 2 * BQ) * tile_ld(D) * 2 + BQ * 4 * 3 + 64 * 4;
}

template <int D, int BN, int BQ>
__device__ __forceinline__ void bwd_dkdv(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                         const bf16* __restrict__ v, const int* __restrict__ doc,
                                         const bf16* __restrict__ dout, const float* __restrict__ lse,
                                         const float* __restrict__ delta, bf16* __restrict__ dk,
                                         bf16* __restrict__ dv, int T, int H, int Hkv, int window,
                                         float scale, unsigned char* smem) {
    static_assert(BN == 16 * (NT / 32), "a warp per 16 keys");
    constexpr int LD = tile_ld(D), KD = D / 16, NQ = BQ / 8, ND = D / 8;
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
                mma16816(st[2 * nn], ka, bf[0], bf[1]);
                mma16816(st[2 * nn + 1], ka, bf[2], bf[3]);
                ldsm_x4(bf, frag_bt<LD>(sO, nn * 16, kk * 16));
                mma16816(dpt[2 * nn], va, bf[0], bf[1]);
                mma16816(dpt[2 * nn + 1], va, bf[2], bf[3]);
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
                mma16816(adv[2 * dn], pa[kk], bf[0], bf[1]);
                mma16816(adv[2 * dn + 1], pa[kk], bf[2], bf[3]);
                ldsm_x4_t(bf, frag_a<LD>(sQ, kk * 16, dn * 16));
                mma16816(adk[2 * dn], da[kk], bf[0], bf[1]);
                mma16816(adk[2 * dn + 1], da[kk], bf[2], bf[3]);
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

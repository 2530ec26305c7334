// attention_fwd.cuh: the flash attention forward (one block per 64 queries of one head, online
// softmax over key blocks). attention.cu describes the algorithm and instantiates it.
#pragma once
#include "attention_tiles.cuh"

namespace attn {

template <int D, int BM, int BN>
__device__ __forceinline__ void fwd(const bf16* __restrict__ q, const bf16* __restrict__ k,
                                    const bf16* __restrict__ v, const int* __restrict__ doc,
                                    bf16* __restrict__ out, float* __restrict__ lse, int T, int H,
                                    int Hkv, int window, float scale) {
    static_assert(BM == 16 * (NT / 32) && BM <= BN, "a warp per 16 queries; Q is staged in sK");
    constexpr int LD = tile_ld(D), KD = D / 16, NB = BN / 8, ND = D / 8;
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
                mma16816(s[2 * nn], qf[kk], bf[0], bf[1]);
                mma16816(s[2 * nn + 1], qf[kk], bf[2], bf[3]);
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
                mma16816(o[2 * dn], pa[kk], bf[0], bf[1]);
                mma16816(o[2 * dn + 1], pa[kk], bf[2], bf[3]);
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

}  // namespace attn

// warp.cpp: what the 32 lanes of a warp do together. Each lane deposits its operands and waits;
// the last lane to arrive computes the collective for all of them with the PTX ISA's layouts:
//   shfl.sync (idx, down, up, bfly) within segments of `width` lanes;
//   ldmatrix.sync.aligned.m8n8.x4(.trans).b16: lane 8j+s addresses row s of matrix j; lane t gets
//     in register j (row t/4, cols 2(t%4), 2(t%4)+1) of matrix j, or with .trans (rows 2(t%4),
//     2(t%4)+1, col t/4);
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, g = t/4, t4 = t%4, e = low/high half:
//     A register r = (row g + 8(r&1), col 2t4 + e + 8(r>>1)); B register r = (k 2t4 + e + 8r,
//     n g); C/D register q = (row g + 8(q>>1), col 2t4 + (q&1));
// and cp.async, whose 16-byte copies land at the thread's cp.async.wait_group (so a read before
// the wait sees what was there before), zero-filled past `bytes`.
#include <string>

#include "internal.h"

namespace emu {
namespace {

enum Kind { kShfl = 1, kLdsm = 2, kMma = 3, kSyncwarp = 4, kWgmma = 5 };

const char* kind_name(int k) {
    switch (k) {
        case kShfl: return "__shfl_*_sync";
        case kLdsm: return "ldmatrix";
        case kMma: return "mma.sync";
        case kSyncwarp: return "__syncwarp";
        case kWgmma: return "wgmma.mma_async";
    }
    return "?";
}

unsigned lo16(uint32_t r) { return r & 0xffffu; }
unsigned hi16(uint32_t r) { return r >> 16; }
float bf(unsigned h) { return __uint_as_float(h << 16); }

void do_shfl(Fiber* lanes, unsigned n, unsigned parts) {
    for (unsigned l = 0; l < n; l++) {
        if (!(parts >> l & 1)) continue;
        Fiber& f = lanes[l];
        const int kind = int(f.in[3]), arg = int(f.in[1]);
        int width = int(f.in[2]);
        if (width <= 0 || width > 32 || (width & (width - 1))) width = 32;
        const int base = int(l) & ~(width - 1);
        int s = int(l);
        switch (kind) {
            case EMU_SHFL_IDX: s = base + (arg & (width - 1)); break;
            case EMU_SHFL_DOWN: s = int(l) + arg; if (s - base >= width) s = int(l); break;
            case EMU_SHFL_UP: s = int(l) - arg; if (s < base) s = int(l); break;
            case EMU_SHFL_XOR: s = int(l) ^ arg; if (s - base >= width || s < base) s = int(l); break;
        }
        if (s >= int(n) || !(parts >> s & 1)) {
            report(std::string("__shfl_*_sync reads lane ") + std::to_string(s) + ", which is not in the mask, at " +
                       where(f),
                   false);
            s = int(l);
        }
        f.out[0] = lanes[s].in[0];
    }
}

void do_ldsm(Fiber* lanes, unsigned n) {
    const bool trans = lanes[0].in[1] != 0;
    unsigned short m[4][8][8];  // [matrix][row][col] b16
    for (unsigned j = 0; j < 4; j++)
        for (unsigned r = 0; r < 8; r++) {
            const Fiber& src = lanes[8 * j + r];
            const unsigned off = src.in[0];
            const unsigned char* p = emu_shared_window + off;
            check_shared(src, p, 16, false, "ldmatrix row read", g_launch->epoch);
            if (off % 16 != 0)
                report("ldmatrix row address " + std::to_string(off) + " (shared) is not 16-byte aligned at " + where(src),
                       false);
            if (off + 16 > kWindow) {
                report("ldmatrix row address " + std::to_string(off) + " is outside shared memory at " + where(src), true);
                return;
            }
            memcpy(m[j][r], p, 16);
        }
    for (unsigned t = 0; t < n; t++)
        for (unsigned j = 0; j < 4; j++) {
            const unsigned g = t / 4, c = 2 * (t % 4);
            const unsigned lo = trans ? m[j][c][g] : m[j][g][c];
            const unsigned hi = trans ? m[j][c + 1][g] : m[j][g][c + 1];
            lanes[t].out[j] = lo | (hi << 16);
        }
}

void do_mma(Fiber* lanes) {
    float A[16][16], B[16][8], C[16][8];
    for (unsigned t = 0; t < 32; t++) {
        const Fiber& f = lanes[t];
        const unsigned g = t / 4, t4 = t % 4;
        for (unsigned r = 0; r < 4; r++) {
            const unsigned row = g + 8 * (r & 1), col = 2 * t4 + 8 * (r >> 1);
            A[row][col] = bf(lo16(f.in[r]));
            A[row][col + 1] = bf(hi16(f.in[r]));
        }
        for (unsigned r = 0; r < 2; r++) {
            const unsigned k = 2 * t4 + 8 * r;
            B[k][g] = bf(lo16(f.in[4 + r]));
            B[k + 1][g] = bf(hi16(f.in[4 + r]));
        }
        for (unsigned q = 0; q < 4; q++) C[g + 8 * (q >> 1)][2 * t4 + (q & 1)] = __uint_as_float(f.in[6 + q]);
    }
    // D = C + A B, each element summed in k order in f32; j runs innermost so the compiler
    // vectorizes across columns without changing any element's order.
    for (unsigned i = 0; i < 16; i++)
        for (unsigned k = 0; k < 16; k++)
            for (unsigned j = 0; j < 8; j++) C[i][j] += A[i][k] * B[k][j];
    for (unsigned t = 0; t < 32; t++) {
        const unsigned g = t / 4, t4 = t % 4;
        for (unsigned q = 0; q < 4; q++) lanes[t].out[q] = __float_as_uint(C[g + 8 * (q >> 1)][2 * t4 + (q & 1)]);
    }
}

// The byte a wgmma shared-memory descriptor addresses for element (mn, k) of its operand (mn:
// the M row of A or the N column of B), as the PTX ISA's canonical layouts with the 128-byte
// swizzle put it: K-major, 8-row groups SBO apart, each row 128 bytes of k; MN-major, 8-k groups
// SBO apart and 64-wide MN groups LBO apart, each k row 128 bytes of MN. The swizzle XORs the
// 16-byte chunk (address bits 4-6) with the row within the 1024-byte atom (bits 7-9).
unsigned wgmma_addr(uint64_t desc, bool mn_major, unsigned mn, unsigned k) {
    const unsigned start = unsigned(desc & 0x3fff) << 4;
    const unsigned lbo = unsigned((desc >> 16) & 0x3fff) << 4, sbo = unsigned((desc >> 32) & 0x3fff) << 4;
    const unsigned a = mn_major ? start + (mn / 64) * lbo + (k / 8) * sbo + (k % 8) * 128 + (mn % 64) * 2
                                : start + (mn / 8) * sbo + (mn % 8) * 128 + k * 2;
    return a ^ (((a >> 7) & 7) << 4);
}

// D (64 x 128, f32) += A (64 x 16) B (16 x 128) over the 128 threads of a warpgroup. Thread t
// (warp q = t / 32, g = lane / 4, t4 = lane % 4) holds rows 16 q + g and 16 q + g + 8, columns
// 8 j + 2 t4 and 8 j + 2 t4 + 1: d[4 j], d[4 j + 1] (row 16 q + g), d[4 j + 2], d[4 j + 3] (+8).
void do_wgmma(Fiber* th) {
    const Fiber& f0 = th[0];
    const uint64_t da = f0.in[0] | uint64_t(f0.in[1]) << 32, db = f0.in[2] | uint64_t(f0.in[3]) << 32;
    const bool mn_a = f0.in[4] != 0, mn_b = f0.in[5] != 0;
    for (unsigned t = 1; t < 128; t++)
        if (memcmp(th[t].in, f0.in, 6 * sizeof(uint32_t)) != 0) {
            report("wgmma: threads of one warpgroup pass different descriptors or layouts (" + where(f0) + " and " +
                       where(th[t]) + ")",
                   true);
            return;
        }
    if (((da >> 62) & 3) != 1 || ((db >> 62) & 3) != 1) {
        report("wgmma at " + where(f0) + ": only the 128-byte swizzle (descriptor mode 1) is emulated", true);
        return;
    }
    static float A[64][16], B[16][128];
    auto load = [&](uint64_t desc, bool mn_major, unsigned mn, unsigned k) {
        const unsigned off = wgmma_addr(desc, mn_major, mn, k);
        if (off + 2 > kWindow) {
            report("wgmma operand at shared offset " + std::to_string(off) + " is outside shared memory at " + where(f0),
                   true);
        }
        check_shared(f0, emu_shared_window + off, 2, false, "wgmma operand read", g_launch->epoch);
        unsigned short h;
        memcpy(&h, emu_shared_window + off, 2);
        return bf(h);
    };
    for (unsigned m = 0; m < 64; m++)
        for (unsigned k = 0; k < 16; k++) A[m][k] = load(da, mn_a, m, k);
    for (unsigned k = 0; k < 16; k++)
        for (unsigned n = 0; n < 128; n++) B[k][n] = load(db, mn_b, n, k);
    static float D[64][128];
    for (unsigned t = 0; t < 128; t++) {
        const unsigned q = t / 32, lane = t % 32, g = lane / 4, t4 = lane % 4;
        for (unsigned j = 0; j < 16; j++)
            for (unsigned e = 0; e < 4; e++) D[16 * q + g + 8 * (e >> 1)][8 * j + 2 * t4 + (e & 1)] = th[t].acc[4 * j + e];
    }
    // In k order per element, vectorized across n (as in do_mma).
    for (unsigned m = 0; m < 64; m++)
        for (unsigned k = 0; k < 16; k++)
            for (unsigned n = 0; n < 128; n++) D[m][n] += A[m][k] * B[k][n];
    for (unsigned t = 0; t < 128; t++) {
        const unsigned q = t / 32, lane = t % 32, g = lane / 4, t4 = lane % 4;
        for (unsigned j = 0; j < 16; j++)
            for (unsigned e = 0; e < 4; e++) th[t].acc[4 * j + e] = D[16 * q + g + 8 * (e >> 1)][8 * j + 2 * t4 + (e & 1)];
    }
}

}  // namespace

void warp_collective(int kind, unsigned mask) {
    Launch& L = *g_launch;
    Fiber& me = *L.cur;
    const unsigned w = me.tid / kWarp;
    Fiber* lanes = &L.fibers[w * kWarp];
    const unsigned n = std::min<unsigned>(kWarp, L.nthreads - w * kWarp);
    const unsigned exists = n == 32 ? 0xffffffffu : (1u << n) - 1;
    const unsigned parts = mask & exists;
    if (!(parts >> (me.tid % kWarp) & 1)) {
        report(std::string(kind_name(kind)) + " with mask 0x" + std::to_string(mask) +
                   " that leaves out the calling lane at " + where(me),
               false);
    }
    for (unsigned l = 0; L.warps[w].exited && l < n; l++)
        if ((parts >> l & 1) && lanes[l].state == State::Done) {
            report(std::string(kind_name(kind)) + " at " + where(me) + " waits for lane " + std::to_string(l) +
                       ", which has exited",
                   true);
        }
    me.state = State::AtWarp;
    me.coll_kind = kind;
    me.coll_mask = mask;
    const unsigned expected = parts == 0xffffffffu ? 32 : unsigned(__builtin_popcount(parts));
    if (++L.warps[w].arrived < expected) {
        yield_to_scheduler();
        return;
    }
    L.warps[w].arrived = 0;
    for (unsigned l = 0; l < n; l++) {
        if (!(parts >> l & 1)) continue;
        if (lanes[l].state != State::AtWarp || lanes[l].coll_kind != kind) {
            report(std::string("lanes of one warp meet at different collectives: ") + kind_name(kind) + " at " +
                       where(me) + ", " + kind_name(lanes[l].coll_kind) + " at " + where(lanes[l]),
                   true);
        }
    }
    if ((kind == kLdsm || kind == kMma) && parts != 0xffffffffu)
        report(std::string(kind_name(kind)) + " (.sync.aligned) needs all 32 lanes of the warp at " + where(me), true);
    switch (kind) {
        case kShfl: do_shfl(lanes, n, parts); break;
        case kLdsm: do_ldsm(lanes, n); break;
        case kMma: do_mma(lanes); break;
        default: break;
    }
    for (unsigned l = 0; l < n; l++)
        if ((parts >> l & 1) && l != me.tid % kWarp) make_runnable(lanes[l]);
    me.state = State::Runnable;
}

// Lands the copies of every committed group but the newest `keep`: each counts as this thread's
// write of its 16 bytes, conflicting with other threads' accesses since it was issued.
void land_copies(Fiber& f, unsigned keep) {
    auto& cs = f.copies;
    size_t kept = 0;
    for (size_t i = 0; i < cs.size(); i++) {
        const PendingCopy c = cs[i];
        if (c.group + keep >= f.commits) {
            cs[kept++] = c;
            continue;
        }
        unsigned char* dst = emu_shared_window + c.dst;
        check_shared(f, dst, 16, true, "cp.async landing", c.issued);
        if (c.bytes > 0) memcpy(dst, c.src, size_t(c.bytes));
        memset(dst + c.bytes, 0, size_t(16 - c.bytes));
    }
    cs.resize(kept);
}

}  // namespace emu

using namespace emu;

extern "C" unsigned emu_shfl(int kind, unsigned mask, unsigned bits, int arg, int width) {
    Fiber& f = *g_launch->cur;
    f.in[0] = bits;
    f.in[1] = unsigned(arg);
    f.in[2] = unsigned(width);
    f.in[3] = unsigned(kind);
    warp_collective(kShfl, mask);
    return f.out[0];
}

extern "C" void __syncwarp(unsigned mask) { warp_collective(kSyncwarp, mask); }

extern "C" void emu_ldsm_x4(unsigned* r, unsigned addr, int trans) {
    Fiber& f = *g_launch->cur;
    f.in[0] = addr;
    f.in[1] = unsigned(trans);
    warp_collective(kLdsm, 0xffffffffu);
    for (int j = 0; j < 4; j++) r[j] = f.out[j];
}

extern "C" void emu_mma16816(float* d, const unsigned* a, unsigned b0, unsigned b1) {
    Fiber& f = *g_launch->cur;
    for (int i = 0; i < 4; i++) f.in[i] = a[i];
    f.in[4] = b0;
    f.in[5] = b1;
    for (int q = 0; q < 4; q++) f.in[6 + q] = __float_as_uint(d[q]);
    warp_collective(kMma, 0xffffffffu);
    for (int q = 0; q < 4; q++) d[q] = __uint_as_float(f.out[q]);
}

extern "C" void emu_wgmma_m64n128k16(float* d, unsigned long long da, unsigned long long db, int mn_a, int mn_b) {
    Launch& L = *g_launch;
    Fiber& me = *L.cur;
    const unsigned g = me.tid / 128;
    if ((g + 1) * 128 > L.nthreads) {
        report("wgmma at " + where(me) + " needs a whole warpgroup of 128 threads; the block has " +
                   std::to_string(L.nthreads),
               true);
    }
    Fiber* th = &L.fibers[g * 128];
    for (unsigned t = 0; t < 128; t++)
        if (th[t].state == State::Done)
            report("wgmma at " + where(me) + " waits for thread " + std::to_string(g * 128 + t) + ", which has exited",
                   true);
    me.in[0] = uint32_t(da), me.in[1] = uint32_t(da >> 32);
    me.in[2] = uint32_t(db), me.in[3] = uint32_t(db >> 32);
    me.in[4] = uint32_t(mn_a), me.in[5] = uint32_t(mn_b);
    me.acc = d;
    me.state = State::AtWarp;
    me.coll_kind = kWgmma;
    if (++L.groups[g] < 128) {
        yield_to_scheduler();
        return;
    }
    L.groups[g] = 0;
    for (unsigned t = 0; t < 128; t++)
        if (th[t].state != State::AtWarp || th[t].coll_kind != kWgmma)
            report(std::string("threads of one warpgroup meet at different collectives: wgmma at ") + where(me) + ", " +
                       kind_name(th[t].coll_kind) + " at " + where(th[t]),
                   true);
    do_wgmma(th);
    for (unsigned t = 0; t < 128; t++)
        if (&th[t] != &me) make_runnable(th[t]);
    me.state = State::Runnable;
}

extern "C" void emu_cp_async16(unsigned dst, const void* src, int bytes) {
    Launch& L = *g_launch;
    Fiber& f = *L.cur;
    if (dst % 16 != 0 || dst + 16 > kWindow)
        report("cp.async to shared offset " + std::to_string(dst) + ", which is not a 16-byte aligned slot in shared memory, at " +
                   where(f),
               dst + 16 > kWindow);
    if (reinterpret_cast<uintptr_t>(src) % 16 != 0)
        report("cp.async from a global address that is not 16-byte aligned at " + where(f), false);
    if (bytes < 0 || bytes > 16) {
        report("cp.async of " + std::to_string(bytes) + " bytes (0 to 16 allowed) at " + where(f), true);
    }
    if (bytes > 0 && !check_global(f, src, size_t(bytes), false, "cp.async source")) return;
    f.copies.push_back({dst, static_cast<const unsigned char*>(src), bytes, f.commits, L.epoch});
}

extern "C" void emu_cp_commit() { g_launch->cur->commits++; }

extern "C" void emu_cp_wait(int n) { land_copies(*g_launch->cur, unsigned(n)); }

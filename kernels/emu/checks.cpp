// checks.cpp: the emulator's memory checks. The kernel sources are compiled with
// -fsanitize=thread, which only inserts a call (__tsan_read4(addr), __tsan_write16(addr), ...)
// before every load and store; no ThreadSanitizer runtime is linked, these hooks are ours:
// - an address in the shared window: bounds (dynamic shared memory, or a placed static
//   declaration), a read of bytes nothing in this block wrote, and races: two threads touching
//   the same byte between two barriers, at least one writing (per byte: the epoch and thread of
//   the last write and of the last read(s); an epoch advances at every barrier);
// - an address on a fiber stack (a thread's locals) or in the program image: not checked;
// - anything else must lie inside a live emulated allocation (red zones either side catch the
//   off-by-ones); an access outside every allocation stops the launch before it happens;
// - a 16-byte access must be 16-byte aligned, as the device requires.
#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "internal.h"

namespace emu {
namespace {

struct Cell {
    uint32_t w_epoch, r_epoch;
    uint16_t w_tid, r_tid;
    uint8_t r_multi;
};
Cell g_shadow[kWindow];

struct Alloc {
    size_t bytes;
    uint64_t id;
};
std::map<uintptr_t, Alloc> g_allocs;
uint64_t g_next_id = 1;
uintptr_t g_stack_lo = 0, g_stack_hi = 0;
// Accesses come in runs over a few buffers (a kernel's inputs and outputs): the last four
// allocations hit answer most of them (one is forgotten when it is freed).
struct Hit {
    uintptr_t lo = 1, hi = 0;
};
Hit g_hits[4];
unsigned g_hit_next = 0;
uintptr_t g_image_lo = 0, g_image_hi = 0;
std::set<std::pair<std::string, const void*>> g_seen;  // (kind, code address) reported once a launch

int find_image(struct dl_phdr_info* info, size_t, void*) {
    // The first object is the program itself: its loaded segments hold the kernels' constants
    // and the runtime's own data, which kernels may read.
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const auto& ph = info->dlpi_phdr[i];
        if (ph.p_type != PT_LOAD) continue;
        const uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
        if (!g_image_lo || lo < g_image_lo) g_image_lo = lo;
        if (hi > g_image_hi) g_image_hi = hi;
    }
    return 1;
}

std::string hex(uintptr_t v) {
    char b[32];
    snprintf(b, sizeof b, "0x%lx", static_cast<unsigned long>(v));
    return b;
}

// Where shared byte `off` is: the dynamic area, a static declaration, or neither.
std::string shared_place(size_t off, size_t n) {
    const Launch& L = *g_launch;
    if (off + n <= L.dynamic_smem)
        return "dynamic shared memory [0, " + std::to_string(L.dynamic_smem) + ")";
    for (size_t i = 0; i < L.statics.size(); i++) {
        const auto& s = L.statics[i];
        if (off >= s.offset && off + n <= s.offset + s.bytes)
            return "static __shared__ #" + std::to_string(i) + " [" + std::to_string(s.offset) + ", " +
                   std::to_string(s.offset + s.bytes) + ")";
    }
    return "no shared allocation (dynamic: " + std::to_string(L.dynamic_smem) + " bytes, " +
           std::to_string(L.statics.size()) + " static declarations placed)";
}

bool shared_in_bounds(size_t off, size_t n) {
    const Launch& L = *g_launch;
    if (off + n <= L.dynamic_smem) return true;
    for (const auto& s : L.statics)
        if (off >= s.offset && off + n <= s.offset + s.bytes) return true;
    return false;
}

const char* rw(bool write) { return write ? "write" : "read"; }

}  // namespace

void set_stack_range(const void* lo, const void* hi) {
    g_stack_lo = reinterpret_cast<uintptr_t>(lo);
    g_stack_hi = reinterpret_cast<uintptr_t>(hi);
    if (!g_image_hi) dl_iterate_phdr(find_image, nullptr);
}

void checks_begin_launch() { g_seen.clear(); }

void register_alloc(void* base, size_t bytes) { g_allocs[reinterpret_cast<uintptr_t>(base)] = {bytes, g_next_id++}; }
void unregister_alloc(void* base) {
    g_allocs.erase(reinterpret_cast<uintptr_t>(base));
    for (Hit& h : g_hits)
        if (h.lo == reinterpret_cast<uintptr_t>(base)) h = Hit{};
}

void report(const std::string& text, bool fatal) {
    Launch& L = *g_launch;
    if (L.findings.size() < 20)
        L.findings.push_back({text});
    else
        L.dropped++;
    if (fatal) {
        if (L.cur && !L.aborted) abort_launch();
        L.aborted = true;
    }
}

void check_shared(const Fiber& f, const void* p, size_t n, bool write, const char* what, uint32_t since,
                  const void* site) {
    Launch& L = *g_launch;
    const size_t off = static_cast<size_t>(static_cast<const unsigned char*>(p) - emu_shared_window);
    if (!shared_in_bounds(off, n)) {
        report(std::string("shared memory out of bounds in ") + L.kernel + " at " + where(f) + ": " + what + " " +
                   rw(write) + " of " + std::to_string(n) + " bytes at shared offset " + std::to_string(off) + " (" +
                   shared_place(off, n) + ")",
               true);
        return;
    }
    const uint16_t tid = uint16_t(f.tid);
    for (size_t i = off; i < off + n; i++) {
        Cell& c = g_shadow[i];
        const char* problem = nullptr;
        uint16_t other = 0;
        if (write) {
            if (c.w_epoch >= since && c.w_epoch >= L.block_epoch && c.w_tid != tid) {
                problem = "write-write race", other = c.w_tid;
            } else if (c.r_epoch >= since && c.r_epoch >= L.block_epoch && (c.r_multi || c.r_tid != tid)) {
                problem = "read-write race", other = c.r_tid;
            }
            c.w_epoch = L.epoch;
            c.w_tid = tid;
        } else {
            if (c.w_epoch < L.block_epoch) {
                problem = "read of uninitialised shared memory";
            } else if (c.w_epoch >= since && c.w_tid != tid) {
                problem = "write-read race", other = c.w_tid;
            }
            if (c.r_epoch != L.epoch) {
                c.r_epoch = L.epoch, c.r_tid = tid, c.r_multi = 0;
            } else if (c.r_tid != tid) {
                c.r_multi = 1;
            }
        }
        if (__builtin_expect(problem == nullptr, 1) || !g_checks) continue;
        // One report per kind and place in the code is enough to find it.
        if (!g_seen.insert({std::string(problem) + what, site}).second) return;
        std::string text = std::string(problem) + " in " + L.kernel + " at " + where(f) + ": " + what + " " + rw(write) +
                           " of " + std::to_string(n) + " bytes at shared offset " + std::to_string(off) + " (byte " +
                           std::to_string(i) + ", " + shared_place(i, 1) + ")";
        if (strstr(problem, "race")) {
            const Fiber& o = L.fibers[other];
            text += " conflicts with thread " + std::to_string(other) + " (" + where(o) +
                    ") since the last __syncthreads";
        }
        report(text, false);
        return;
    }
}

bool check_global(const Fiber& f, const void* p, size_t n, bool write, const char* what) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    for (const Hit& h : g_hits)
        if (a >= h.lo && a + n <= h.hi) return true;
    auto it = g_allocs.upper_bound(a);
    if (it != g_allocs.begin()) {
        --it;
        if (a >= it->first && a + n <= it->first + it->second.bytes) {
            g_hits[g_hit_next++ % 4] = {it->first, it->first + it->second.bytes};
            return true;
        }
    }
    Launch& L = *g_launch;
    std::string near = "not in any allocation";
    if (it != g_allocs.end() && a >= it->first && a - it->first < it->second.bytes + 4096) {
        const size_t off = a - it->first;
        near = "byte offset " + std::to_string(off) + " of allocation #" + std::to_string(it->second.id) + " (" +
               std::to_string(it->second.bytes) + " bytes at " + hex(it->first) + "), " +
               std::to_string(off + n - it->second.bytes) + " bytes past its end";
    }
    auto next = g_allocs.lower_bound(a);
    if (next != g_allocs.end() && a < next->first && next->first - a <= 256)
        near += "; " + std::to_string(next->first - a) + " bytes before allocation #" + std::to_string(next->second.id) +
                " (" + std::to_string(next->second.bytes) + " bytes at " + hex(next->first) + ")";
    report(std::string("global memory out of bounds in ") + L.kernel + " at " + where(f) + ": " + what + " " +
               rw(write) + " of " + std::to_string(n) + " bytes at " + hex(a) + ", " + near,
           true);
    return false;
}

}  // namespace emu

using namespace emu;

namespace {

inline void access(const void* p, size_t n, bool write, const void* site) {
    Launch* L = g_launch;
    if (!L || !L->cur) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const uintptr_t w = reinterpret_cast<uintptr_t>(emu_shared_window);
    if (a - w < kWindow) {
        check_shared(*L->cur, p, n, write, "kernel", L->epoch, site);
        return;
    }
    if (a - g_stack_lo < g_stack_hi - g_stack_lo) return;
    if (a >= g_image_lo && a < g_image_hi) return;
    if (!g_checks) return;
    check_global(*L->cur, p, n, write, "kernel");
}



}  // namespace

// A vector access of `align` bytes the kernel means as one (emu.h's 16-byte types, common.cuh's
// Pack): the device faults on a misaligned one, so the launch stops here, before it happens.
extern "C" void emu_check_align(const void* p, unsigned long align) {
    Launch* L = g_launch;
    if (!L || !L->cur || (reinterpret_cast<uintptr_t>(p) & (align - 1)) == 0) return;
    const uintptr_t a = reinterpret_cast<uintptr_t>(p);
    const bool shared = a - reinterpret_cast<uintptr_t>(emu_shared_window) < kWindow;
    report("misaligned " + std::to_string(align) + "-byte access in " + L->kernel + " at " + where(*L->cur) +
               ": address " + (shared ? "shared offset " + std::to_string(a - reinterpret_cast<uintptr_t>(emu_shared_window))
                                      : hex(a)) +
               " (the device faults on it)",
           true);
}

// The calls -fsanitize=thread puts before every access of the kernel code.
extern "C" {
void __tsan_init() {}
void __tsan_func_entry(void*) {}
void __tsan_func_exit() {}
void __tsan_read1(void* p) { access(p, 1, false, __builtin_return_address(0)); }
void __tsan_read2(void* p) { access(p, 2, false, __builtin_return_address(0)); }
void __tsan_read4(void* p) { access(p, 4, false, __builtin_return_address(0)); }
void __tsan_read8(void* p) { access(p, 8, false, __builtin_return_address(0)); }
void __tsan_read16(void* p) { access(p, 16, false, __builtin_return_address(0)); }
void __tsan_write1(void* p) { access(p, 1, true, __builtin_return_address(0)); }
void __tsan_write2(void* p) { access(p, 2, true, __builtin_return_address(0)); }
void __tsan_write4(void* p) { access(p, 4, true, __builtin_return_address(0)); }
void __tsan_write8(void* p) { access(p, 8, true, __builtin_return_address(0)); }
void __tsan_write16(void* p) { access(p, 16, true, __builtin_return_address(0)); }
void __tsan_unaligned_read2(void* p) { access(p, 2, false, __builtin_return_address(0)); }
void __tsan_unaligned_read4(void* p) { access(p, 4, false, __builtin_return_address(0)); }
void __tsan_unaligned_read8(void* p) { access(p, 8, false, __builtin_return_address(0)); }
void __tsan_unaligned_read16(void* p) { access(p, 16, false, __builtin_return_address(0)); }
void __tsan_unaligned_write2(void* p) { access(p, 2, true, __builtin_return_address(0)); }
void __tsan_unaligned_write4(void* p) { access(p, 4, true, __builtin_return_address(0)); }
void __tsan_unaligned_write8(void* p) { access(p, 8, true, __builtin_return_address(0)); }
void __tsan_unaligned_write16(void* p) { access(p, 16, true, __builtin_return_address(0)); }
void __tsan_read_range(void* p, unsigned long n) { access(p, n, false, __builtin_return_address(0)); }
void __tsan_write_range(void* p, unsigned long n) { access(p, n, true, __builtin_return_address(0)); }
void __tsan_volatile_read4(void* p) { access(p, 4, false, __builtin_return_address(0)); }
void __tsan_volatile_write4(void* p) { access(p, 4, true, __builtin_return_address(0)); }
// Only the registry's function-local statics (their guard variables) use atomics.
unsigned char __tsan_atomic8_load(const volatile unsigned char* a, int) { return __atomic_load_n(a, __ATOMIC_ACQUIRE); }
void __tsan_atomic8_store(volatile unsigned char* a, unsigned char v, int) { __atomic_store_n(a, v, __ATOMIC_RELEASE); }
void __tsan_vptr_update(void**, void*) {}
void __tsan_vptr_read(void**) {}
}

// internal.h: the emulator runtime's state, shared by runtime.cpp (fibers, scheduler, launch,
// allocations), warp.cpp (collectives and the tensor-core PTX) and checks.cpp (the memory checks
// and their reports). None of this is visible to kernel code, which only sees emu.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "emu.h"

namespace emu {

constexpr unsigned kWarp = 32;
// The device's largest opt-in shared memory a block (H100/H200), and the window holding it:
// dynamic shared memory from offset 0, static declarations after it.
constexpr size_t kSmemLimit = 227 * 1024;
constexpr size_t kWindow = 2 * kSmemLimit;

enum class State { Runnable, AtBarrier, AtWarp, Done };

// One cp.async issued by a thread: it lands (and counts as that thread's write) at its wait.
struct PendingCopy {
    unsigned dst;
    const unsigned char* src;
    int bytes;
    unsigned group;   // the commit group it belongs to (the thread's count of commits so far)
    uint32_t issued;  // the epoch it was issued in: it may land any time from then to its wait
};

// A static `__shared__` declaration, placed in the window at its first use in a launch.
struct StaticShared {
    const void* tag;
    size_t offset, bytes;
};

struct Fiber {
    void* sp = nullptr;
    State state = State::Runnable;
    EmuCoords coords{};
    unsigned tid = 0;  // linear thread index in the block
    // The warp collective this lane waits at, its input and output (warp.cpp).
    int coll_kind = 0;
    unsigned coll_mask = 0;
    uint32_t in[10] = {};
    uint32_t out[4] = {};
    float* acc = nullptr;  // a wgmma's accumulators (64 floats on this thread's stack)
    std::vector<PendingCopy> copies;
    unsigned commits = 0;
};

struct Warp {
    unsigned arrived = 0;  // lanes waiting at the current collective
    unsigned exited = 0;   // lanes that have finished (a collective must not wait for them)
};

// A finding of the checks; `fatal` ones (an access outside every allocation) stop the launch
// before the access happens, the others are collected and the launch runs on.
struct Finding {
    std::string text;
};

struct Launch {
    const char* kernel = "";
    dim3 grid{}, block{};
    size_t dynamic_smem = 0;
    std::vector<StaticShared> statics;
    unsigned nthreads = 0;
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<unsigned> groups;  // threads of each warpgroup waiting at a wgmma
    Fiber* cur = nullptr;
    // Fibers ready to run, first in first out: a fiber that blocks hands over straight to the
    // next one (no trip through the scheduler), in an order fixed by the program alone.
    std::vector<Fiber*> ready;
    size_t ready_head = 0, ready_count = 0;
    uint32_t block_epoch = 0;  // the epoch the current block started in
    uint32_t epoch = 0;        // advances at every block start and barrier
    int or_acc = 0, or_result = 0;
    bool aborted = false;
    std::vector<Finding> findings;
    size_t dropped = 0;  // findings past the report's limit
};

extern Launch* g_launch;
extern bool g_checks;

// runtime.cpp
void yield_to_scheduler();
void make_runnable(Fiber& f);
[[noreturn]] void abort_launch();
std::string where(const Fiber& f);
// warp.cpp: the last lane of a warp to arrive at a collective computes it for all lanes.
void warp_collective(int kind, unsigned mask);
// checks.cpp. `since`: the epoch from which another thread's access conflicts (the current one
// for ordinary accesses; a cp.async's issue epoch when it lands).
// `site`: the code address of the access (one report per kind and site).
void check_shared(const Fiber& f, const void* p, size_t n, bool write, const char* what, uint32_t since,
                  const void* site = nullptr);
bool check_global(const Fiber& f, const void* p, size_t n, bool write, const char* what);
void report(const std::string& text, bool fatal);
void checks_begin_launch();
void register_alloc(void* base, size_t bytes);
void unregister_alloc(void* base);
void set_stack_range(const void* lo, const void* hi);

}  // namespace emu

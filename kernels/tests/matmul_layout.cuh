// matmul_layout.cuh: static_asserts appended to matmul.cu (after ptx_fragments.cuh) by
// tests/layouts.rs and run by NVRTC's front end (no GPU). They hold the mma.sync GEMM's data path to the PTX ISA's layouts:
// every fragment register ldmatrix fills holds the element mma.sync m16n8k16 expects there,
// read from where the tile loader stored it; the loader stores each tile chunk once; the
// hoisted address steps are exact; the epilogue writes each C element once, from the
// accumulator that holds it; and no ldmatrix phase or 16-byte store quarter-warp has a bank
// conflict. A wrong lane formula or swizzle on a GPU gives silently wrong products (or slow
// ones); here it fails to compile, naming the layout.
namespace mm_check {
using namespace mm;
using namespace ptx;

// Where the loader put each 16-byte chunk of one operand's stage tile (stored rows x CPR).
template <bool KC, int EXT>
struct Placement {
    int at[EXT * BK / 8];
    bool ok;  // every chunk written once, 16-byte aligned, inside the tile, no two at one place
};
template <bool KC, int EXT>
__host__ __device__ constexpr Placement<KC, EXT> place() {
    using L = TileLoader<KC, EXT>;
    constexpr int CHUNKS = EXT * BK / 8, ROWS = KC ? EXT : BK;
    Placement<KC, EXT> p{};
    p.ok = true;
    for (int c = 0; c < CHUNKS; c++) p.at[c] = -1;
    for (int tid = 0; tid < THREADS; tid++)
        for (int i = 0; i < L::PER; i++) {
            const int row = L::copy_row(tid, i), chunk = L::copy_chunk(tid), off = L::copy_off(tid, i);
            const bool inside = row < ROWS && chunk < L::CPR && off >= 0 && off < CHUNKS * 16 && off % 16 == 0;
            if (!inside || p.at[row * L::CPR + chunk] != -1) p.ok = false;
            else p.at[row * L::CPR + chunk] = off;
        }
    bool used[CHUNKS] = {};
    for (int c = 0; c < CHUNKS; c++) {
        if (p.at[c] < 0 || used[p.at[c] / 16]) p.ok = false;
        else used[p.at[c] / 16] = true;
    }
    return p;
}
// The shared byte of stored element (row, col) (col along the contiguous dimension).
template <bool KC, int EXT>
__host__ __device__ constexpr int stored_at(const Placement<KC, EXT>& p, int row, int col) {
    return p.at[row * TileLoader<KC, EXT>::CPR + col / 8] + 2 * (col % 8);
}

template <bool TA, class T>
struct ARows {
    int wm, i, kk;
    __host__ __device__ constexpr int operator()(int lane) const { return a_frag_off<TA, T>(lane, wm, i, kk); }
};
template <bool TB, class T>
struct BRows {
    int wn, p, kk;
    __host__ __device__ constexpr int operator()(int lane) const { return b_frag_off<TB, T>(lane, wn, p, kk); }
};

// A: register r of fragment (i, kk) holds op(A)[wm WTM + 16 i + row][16 kk + col]. FLIP reads
// with the other ldmatrix variant (a control: it must fail).
template <bool TA, class T, bool FLIP = false>
__host__ __device__ constexpr bool a_path_agrees() {
    const auto p = place<!TA, T::BM>();
    if (!p.ok) return false;
    for (int wm = 0; wm < T::WM; wm++)
        for (int i = 0; i < T::MI; i++)
            for (int kk = 0; kk < BK / 16; kk++) {
                const ARows<TA, T> rows{wm, i, kk};
                if (!conflict_free(rows, 32)) return false;
                for (int t = 0; t < 32; t++) {
                    const int h = TA ? a_frag_off<TA, T>(t, wm, i, 0) + kk * A_FRAG_STEP<TA, T>
                                     : a_frag_off<TA, T>(t, wm, 0, kk) + i * A_FRAG_STEP<TA, T>;
                    if (h != rows(t)) return false;
                    for (int r = 0; r < 4; r++)
                        for (int e = 0; e < 2; e++) {
                            const int m = wm * T::WTM + 16 * i + mma_a_row(t, r);
                            const int k = 16 * kk + mma_a_col(t, r, e);
                            const int want = TA ? stored_at(p, k, m) : stored_at(p, m, k);
                            if (ldsm_source(rows, TA != FLIP, t, r, e) != want) return false;
                        }
                }
            }
    return true;
}

// B: register (j & 1) of n tile 2p + j / 2 (ldmatrix register j of pair p) holds
// op(B)[16 kk + k][wn WTN + 8 (2p + j / 2) + n].
template <bool TB, class T, bool FLIP = false>
__host__ __device__ constexpr bool b_path_agrees() {
    const auto p = place<TB, T::BN>();
    if (!p.ok) return false;
    for (int wn = 0; wn < T::WN; wn++)
        for (int pr = 0; pr < T::NI / 2; pr++)
            for (int kk = 0; kk < BK / 16; kk++) {
                const BRows<TB, T> rows{wn, pr, kk};
                if (!conflict_free(rows, 32)) return false;
                for (int t = 0; t < 32; t++) {
                    const int h = TB ? b_frag_off<TB, T>(t, wn, 0, kk) + pr * B_FRAG_STEP<TB, T>
                                     : b_frag_off<TB, T>(t, wn, pr, 0) + kk * B_FRAG_STEP<TB, T>;
                    if (h != rows(t)) return false;
                    for (int j = 0; j < 4; j++)
                        for (int e = 0; e < 2; e++) {
                            const int k = 16 * kk + mma_b_k(t, j & 1, e);
                            const int n = wn * T::WTN + 8 * (2 * pr + j / 2) + mma_b_n(t);
                            const int want = TB ? stored_at(p, n, k) : stored_at(p, k, n);
                            if (ldsm_source(rows, !TB != FLIP, t, j, e) != want) return false;
                        }
                }
            }
    return true;
}

// The loader's 16-byte stores: each quarter-warp (8 lanes, one store phase) hits 8 bank groups.
template <bool KC, int EXT>
struct CopyAt {
    int i;
    __host__ __device__ constexpr int operator()(int tid) const { return TileLoader<KC, EXT>::copy_off(tid, i); }
};
template <bool KC, int EXT>
__host__ __device__ constexpr bool stores_conflict_free() {
    for (int i = 0; i < TileLoader<KC, EXT>::PER; i++)
        if (!conflict_free(CopyAt<KC, EXT>{i}, THREADS)) return false;
    return true;
}

// The epilogue: accumulator q of tile (i, j) is C[wm WTM + 16 i + row][wn WTN + 8 j + col] (the
// rows and columns the A and B checks gave that tile), its pairs are adjacent columns of one row,
// and the warps together write the BM x BN tile once.
template <class T>
__host__ __device__ constexpr bool epilogue_covers_once() {
    bool seen[T::BM * T::BN] = {};
    for (int wm = 0; wm < T::WM; wm++)
        for (int wn = 0; wn < T::WN; wn++)
            for (int t = 0; t < 32; t++)
                for (int i = 0; i < T::MI; i++)
                    for (int j = 0; j < T::NI; j++)
                        for (int q = 0; q < 4; q++) {
                            const int row = c_frag_row<T>(t, wm, i, q), col = c_frag_col<T>(t, wn, j, q);
                            if (row != wm * T::WTM + 16 * i + mma_c_row(t, q)) return false;
                            if (col != wn * T::WTN + 8 * j + mma_c_col(t, q)) return false;
                            if (q % 2 == 1 && (c_frag_row<T>(t, wm, i, q - 1) != row ||
                                               c_frag_col<T>(t, wn, j, q - 1) != col - 1))
                                return false;
                            if (seen[row * T::BN + col]) return false;
                            seen[row * T::BN + col] = true;
                        }
    for (int x = 0; x < T::BM * T::BN; x++)
        if (!seen[x]) return false;
    return true;
}

template <class T>
__host__ __device__ constexpr bool stores_and_epilogue_agree() {
    return stores_conflict_free<true, T::BM>() && stores_conflict_free<false, T::BM>() &&
           stores_conflict_free<true, T::BN>() && stores_conflict_free<false, T::BN>() &&
           epilogue_covers_once<T>() && T::A_BYTES % 128 == 0 && T::STAGE_BYTES % 128 == 0;
}

// Per tile and layout (the message names the one that breaks). The stage tiles start at
// multiples of 128 bytes, so the bank groups above are those of the real addresses.
static_assert(a_path_agrees<false, Big>(), "Big: A [M][K] (ldmatrix) fragments");
static_assert(a_path_agrees<true, Big>(), "Big: A [K][M] (ldmatrix.trans) fragments");
static_assert(b_path_agrees<false, Big>(), "Big: B [K][N] (ldmatrix.trans) fragments");
static_assert(b_path_agrees<true, Big>(), "Big: B [N][K] (ldmatrix) fragments");
static_assert(stores_and_epilogue_agree<Big>(), "Big: loader stores, epilogue, stage alignment");
static_assert(a_path_agrees<false, Small>(), "Small: A [M][K] (ldmatrix) fragments");
static_assert(a_path_agrees<true, Small>(), "Small: A [K][M] (ldmatrix.trans) fragments");
static_assert(b_path_agrees<false, Small>(), "Small: B [K][N] (ldmatrix.trans) fragments");
static_assert(b_path_agrees<true, Small>(), "Small: B [N][K] (ldmatrix) fragments");
static_assert(stores_and_epilogue_agree<Small>(), "Small: loader stores, epilogue, stage alignment");
// Controls: the check tells the two ldmatrix variants apart.
static_assert(!a_path_agrees<false, Small, true>(), "A read with .trans must not pass");
static_assert(!b_path_agrees<true, Small, true>(), "B read with .trans must not pass");
}  // namespace mm_check

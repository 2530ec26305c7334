// attention_layout.cuh: static_asserts appended to attention.cu (after ptx_fragments.cuh) by
// tests/layouts.rs and run by NVRTC's front end (no GPU). They hold attention_tiles.cuh's
// fragment addressing and row copies to the PTX ISA's layouts, for every head dim the kernels
// are built for: through frag_a / frag_bt, ldmatrix gives each lane the register mma.sync
// m16n8k16 expects in the three roles the kernels use (A from rows, B from [K][N] rows with
// .trans, B from [N][K] rows); no ldmatrix phase has a bank conflict; the row copies move every
// 16-byte chunk of a tile once, and for D >= 64 (the real head dims) each quarter-warp of
// 16-byte copies hits 8 bank groups. The kernels use ldmatrix register j of a B load as
// register j & 1 of n tile n0 + 8 (j >> 1).
namespace attn_check {
using namespace attn;
using namespace ptx;

enum Role { A_ROWS, B_KN_TRANS, B_NK };

// The shared byte (from the tile's start) of the row lane l hands ldmatrix for the 16x16 block at
// (r0, c0): through frag_bt for B stored [N][K], frag_a otherwise.
template <int LD, Role R>
struct RowAt {
    int r0, c0;
    __host__ __device__ constexpr int operator()(int l) const {
        return 2 * (R == B_NK ? (r0 + frag_bt_row(l)) * LD + c0 + frag_bt_col(l)
                              : (r0 + frag_a_row(l)) * LD + c0 + frag_a_col(l));
    }
};

// One role over the 16x16 blocks of a 64-row tile of row stride LD, with D columns. FLIP reads
// with the other ldmatrix variant (a control: it must fail).
template <int D, Role R, bool FLIP = false>
__host__ __device__ constexpr bool role_agrees() {
    constexpr int LD = tile_ld(D);
    if ((LD * 2) % 16 != 0) return false;
    const bool trans = (R == B_KN_TRANS) != FLIP;
    for (int r0 = 0; r0 < 64; r0 += 16)
        for (int c0 = 0; c0 < D; c0 += 16) {
            const RowAt<LD, R> rows{r0, c0};
            if (!conflict_free(rows, 32)) return false;
            for (int t = 0; t < 32; t++)
                for (int j = 0; j < 4; j++)
                    for (int e = 0; e < 2; e++) {
                        int want = 0;  // element offset
                        if (R == A_ROWS)  // A[r0 + row][c0 + col]
                            want = (r0 + mma_a_row(t, j)) * LD + c0 + mma_a_col(t, j, e);
                        else if (R == B_KN_TRANS)  // B[k0 + k][n0 + n], stored [K][N]
                            want = (r0 + mma_b_k(t, j & 1, e)) * LD + c0 + 8 * (j >> 1) + mma_b_n(t);
                        else  // B[k0 + k][n0 + n], stored [N][K]: r0 = n0, c0 = k0
                            want = (r0 + 8 * (j >> 1) + mma_b_n(t)) * LD + c0 + mma_b_k(t, j & 1, e);
                        if (ldsm_source(rows, trans, t, j, e) != 2 * want) return false;
                    }
        }
    return true;
}

// The shared byte of thread tid's copy it.
template <int D>
struct CopyAt {
    int it;
    __host__ __device__ constexpr int operator()(int tid) const {
        return 2 * (row_copy_row<D>(tid, it) * tile_ld(D) + row_copy_col<D>(tid));
    }
};

// The row copies of a ROWS x D tile (64 rows, and 32 where a thread's rows divide them, as
// load_rows requires): every (row, chunk) once; for D >= 64 conflict-free.
template <int D, int ROWS>
__host__ __device__ constexpr bool copies_agree() {
    constexpr int CH = D / 8, RPI = NT / CH;
    bool seen[ROWS * CH] = {};
    for (int tid = 0; tid < NT; tid++)
        for (int it = 0; it < ROWS / RPI; it++) {
            const int row = row_copy_row<D>(tid, it), col = row_copy_col<D>(tid);
            if (row >= ROWS || col % 8 != 0 || col >= D || seen[row * CH + col / 8]) return false;
            seen[row * CH + col / 8] = true;
        }
    for (int x = 0; x < ROWS * CH; x++)
        if (!seen[x]) return false;
    if (D < 64) return true;
    for (int it = 0; it < ROWS / RPI; it++)
        if (!conflict_free(CopyAt<D>{it}, NT)) return false;
    return true;
}

template <int D>
__host__ __device__ constexpr bool head_dim_agrees() {
    return role_agrees<D, A_ROWS>() && role_agrees<D, B_KN_TRANS>() && role_agrees<D, B_NK>() &&
           copies_agree<D, 64>() && (32 % (NT / (D / 8)) != 0 || copies_agree<D, 32>());
}

static_assert(head_dim_agrees<16>(), "D = 16: fragments or row copies");
static_assert(head_dim_agrees<32>(), "D = 32: fragments or row copies");
static_assert(head_dim_agrees<64>(), "D = 64: fragments or row copies");
static_assert(head_dim_agrees<128>(), "D = 128: fragments or row copies");
// Controls: the check tells the two ldmatrix variants apart.
static_assert(!role_agrees<64, A_ROWS, true>(), "A read with .trans must not pass");
static_assert(!role_agrees<64, B_KN_TRANS, true>(), "[K][N] B read without .trans must not pass");
}  // namespace attn_check

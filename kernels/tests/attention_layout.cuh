// attention_layout.cuh: static_asserts appended to attention.cu by tests/attention_layout.rs and
// run by NVRTC's front end (no GPU). They hold attention_tiles.cuh's fragment addressing and row
// copies to the PTX ISA's layouts, for every head dim the kernels are built for: through
// frag_a / frag_bt, ldmatrix gives each lane the register mma.sync m16n8k16 expects in the
// three roles the kernels use (A from rows, B from [K][N] rows with .trans, B from [N][K] rows);
// no ldmatrix phase has a bank conflict; the row copies move every 16-byte chunk of a tile once,
// and for D >= 64 (the real head dims) each quarter-warp of 16-byte copies hits 8 bank groups.
//
// Layouts, from the PTX ISA (lane t, g = t / 4, t4 = t % 4, e = low (0) or high (1) bf16 of a
// 32-bit register):
//   mma m16n8k16 A (16x16, row):  register r holds (row g + 8 (r & 1), col 2 t4 + e + 8 (r >> 1))
//   mma m16n8k16 B (16x8, col):   register r holds (k 2 t4 + e + 8 r, n g)
//   ldmatrix .x4: lane 8 j + s addresses row s of matrix j; register j of lane t then holds
//   (row g, col 2 t4 + e) of matrix j, or with .trans (row 2 t4 + e, col g).
// The kernels use ldmatrix register j of a B load as register j & 1 of n tile n0 + 8 (j >> 1).
namespace attn_check {
using namespace attn;

enum Role { A_ROWS, B_KN_TRANS, B_NK };

// The element ldmatrix gives lane t's register j, half e, when lane l addresses row `row(l)`.
template <int LD, Role R>
__host__ __device__ constexpr int row_of(int l, int r0, int c0) {
    return R == B_NK ? (r0 + frag_bt_row(l)) * LD + c0 + frag_bt_col(l) : (r0 + frag_a_row(l)) * LD + c0 + frag_a_col(l);
}
template <int LD, Role R>
__host__ __device__ constexpr int loaded(bool trans, int r0, int c0, int t, int j, int e) {
    return trans ? row_of<LD, R>(8 * j + 2 * (t % 4) + e, r0, c0) + t / 4
                 : row_of<LD, R>(8 * j + t / 4, r0, c0) + 2 * (t % 4) + e;
}

// One role over the 16x16 blocks of a 64-row tile of row stride LD, with D columns. FLIP reads
// with the other ldmatrix variant (a control: it must fail).
template <int D, Role R, bool FLIP = false>
__host__ __device__ constexpr bool role_agrees() {
    constexpr int LD = tile_ld(D);
    if ((LD * 2) % 16 != 0) return false;
    const bool trans = (R == B_KN_TRANS) != FLIP;
    for (int r0 = 0; r0 < 64; r0 += 16)
        for (int c0 = 0; c0 < D; c0 += 16) {
            for (int j = 0; j < 4; j++) {  // each 8-lane phase: 8 rows, 16-byte aligned, 8 bank groups
                bool group[8] = {};
                for (int s = 0; s < 8; s++) {
                    const int byte = 2 * row_of<LD, R>(8 * j + s, r0, c0);
                    if (byte % 16 != 0 || group[byte / 16 % 8]) return false;
                    group[byte / 16 % 8] = true;
                }
            }
            for (int t = 0; t < 32; t++)
                for (int j = 0; j < 4; j++)
                    for (int e = 0; e < 2; e++) {
                        int want = 0;
                        if (R == A_ROWS)  // A[r0 + row][c0 + col]
                            want = (r0 + t / 4 + 8 * (j & 1)) * LD + c0 + 2 * (t % 4) + e + 8 * (j >> 1);
                        else if (R == B_KN_TRANS)  // B[k0 + k][n0 + n], stored [K][N]
                            want = (r0 + 2 * (t % 4) + e + 8 * (j & 1)) * LD + c0 + 8 * (j >> 1) + t / 4;
                        else  // B[k0 + k][n0 + n], stored [N][K]: r0 = n0, c0 = k0
                            want = (r0 + 8 * (j >> 1) + t / 4) * LD + c0 + 2 * (t % 4) + e + 8 * (j & 1);
                        if (loaded<LD, R>(trans, r0, c0, t, j, e) != want) return false;
                    }
        }
    return true;
}

// The row copies of a ROWS x D tile (64 rows, and 32 where a thread's rows divide them, as
// load_rows requires): every (row, chunk) once; for D >= 64 conflict-free.
template <int D, int ROWS>
__host__ __device__ constexpr bool copies_agree() {
    constexpr int CH = D / 8, LD = tile_ld(D), RPI = NT / CH;
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
    for (int q = 0; q < NT / 8; q++)
        for (int it = 0; it < ROWS / RPI; it++) {
            bool group[8] = {};
            for (int s = 0; s < 8; s++) {
                const int tid = 8 * q + s;
                const int g = 2 * (row_copy_row<D>(tid, it) * LD + row_copy_col<D>(tid)) / 16 % 8;
                if (group[g]) return false;
                group[g] = true;
            }
        }
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

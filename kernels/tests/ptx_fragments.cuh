// ptx_fragments.cuh: the reference the layout checks hold the kernels to, written once. It gives
// the PTX ISA's mma.sync m16n8k16 (bf16) and ldmatrix fragment layouts as functions, plus a test
// for shared-memory bank conflicts. tests/layouts.rs puts it ahead of each *_layout.cuh.
//
// Lane t, g = t / 4, t4 = t % 4, e = the low (0) or high (1) bf16 of a 32-bit register:
//   mma A (16x16, row):  register r holds (row g + 8 (r & 1), col 2 t4 + e + 8 (r >> 1))
//   mma B (16x8, col):   register r holds (k 2 t4 + e + 8 r, n g)
//   mma C/D (16x8, f32): register q holds (row g + 8 (q >> 1), col 2 t4 + (q & 1))
//   ldmatrix .x4: lane 8 j + s addresses row s of matrix j; register j of lane t then holds
//   (row g, col 2 t4 + e) of matrix j, or with .trans (row 2 t4 + e, col g).
namespace ptx {

__host__ __device__ constexpr int mma_a_row(int t, int r) { return t / 4 + 8 * (r & 1); }
__host__ __device__ constexpr int mma_a_col(int t, int r, int e) { return 2 * (t % 4) + e + 8 * (r >> 1); }
__host__ __device__ constexpr int mma_b_k(int t, int r, int e) { return 2 * (t % 4) + e + 8 * r; }
__host__ __device__ constexpr int mma_b_n(int t) { return t / 4; }
__host__ __device__ constexpr int mma_c_row(int t, int q) { return t / 4 + 8 * (q >> 1); }
__host__ __device__ constexpr int mma_c_col(int t, int q) { return 2 * (t % 4) + (q & 1); }

// The shared byte that ldmatrix puts in lane t's register j, half e, when each lane l addresses
// the row at byte row_at(l).
template <class RowAt>
__host__ __device__ constexpr int ldsm_source(const RowAt& row_at, bool trans, int t, int j, int e) {
    return trans ? row_at(8 * j + 2 * (t % 4) + e) + 2 * (t / 4) : row_at(8 * j + t / 4) + 2 * (2 * (t % 4) + e);
}

// Whether 16-byte accesses at byte_at(0..n-1) are aligned and, in each phase of 8 (an ldmatrix
// matrix, or a quarter-warp of 16-byte stores), fall in 8 different bank groups.
template <class ByteAt>
__host__ __device__ constexpr bool conflict_free(const ByteAt& byte_at, int n) {
    for (int p = 0; p < n; p += 8) {
        bool group[8] = {};
        for (int s = p; s < p + 8; s++) {
            const int b = byte_at(s);
            if (b % 16 != 0 || group[b / 16 % 8]) return false;
            group[b / 16 % 8] = true;
        }
    }
    return true;
}

}  // namespace ptx

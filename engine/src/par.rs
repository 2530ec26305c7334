//! Deterministic parallel loops. Work is split into pieces whose boundaries depend only on the
//! problem size, never on the thread count, and every reduction adds its partial results in a
//! fixed order. So a result is bitwise the same with 1 thread or 64 (exact resume needs it).

use rayon::prelude::*;

/// Rows per block for reductions across rows (RMSNorm's weight gradient, loss sums).
pub const REDUCE_BLOCK_ROWS: usize = 64;

/// Calls `f(row_index, row)` for every `row_len`-long row of `out`, in parallel.
pub fn for_each_row<F: Send>(out: &mut [F], row_len: usize, f: impl Fn(usize, &mut [F]) + Sync + Send) {
    if row_len == 0 {
        return;
    }
    // Group small rows so a task has at least ~4K elements of work.
    let min_rows = (4096 / row_len).max(1);
    out.par_chunks_mut(row_len).with_min_len(min_rows).enumerate().for_each(|(r, row)| f(r, row));
}

/// Splits `n` rows into fixed blocks of `REDUCE_BLOCK_ROWS`, computes `f(start..end)` for each
/// block in parallel and returns the partial results in block order.
pub fn map_row_blocks<T: Send>(n: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync + Send) -> Vec<T> {
    let blocks = n.div_ceil(REDUCE_BLOCK_ROWS);
    (0..blocks)
        .into_par_iter()
        .map(|b| f(b * REDUCE_BLOCK_ROWS..((b + 1) * REDUCE_BLOCK_ROWS).min(n)))
        .collect()
}

/// Element-wise map over equal-length slices in fixed-size chunks.
pub fn map_elems<F: Send + Sync + Copy, G: Send>(x: &[F], out: &mut [G], f: impl Fn(F) -> G + Sync + Send) {
    const CHUNK: usize = 8192;
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = f(x);
        }
    });
}

/// Element-wise map of two equal-length slices in fixed-size chunks.
pub fn zip_elems<F: Send + Sync + Copy, G: Send>(
    a: &[F],
    b: &[F],
    out: &mut [G],
    f: impl Fn(F, F) -> G + Sync + Send,
) {
    const CHUNK: usize = 8192;
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = f(a, b);
        }
    });
}

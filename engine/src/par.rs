//! Deterministic parallel loops. Work is split into pieces whose boundaries depend only on the
//! problem size, never on the thread count, and every reduction adds its partial results in a
//! fixed order. So a result is bitwise the same with 1 thread or 64 (exact resume needs it).

use rayon::prelude::*;

/// Rows per block for reductions across rows (RMSNorm's weight gradient, loss sums).
pub const REDUCE_BLOCK_ROWS: usize = 64;

/// Work (in elements touched or multiply-adds) that makes one parallel task worth its
/// scheduling cost of a few microseconds.
pub const TASK_WORK: usize = 16 * 1024;

/// Rows per task for rows that each cost `cost` elements of work: at least one row, and about
/// `TASK_WORK` of work per task. Depends on the problem only, never on the thread count.
pub fn rows_per_task(cost: usize) -> usize {
    (TASK_WORK / cost.max(1)).max(1)
}

/// Calls `f(row_index, row)` for every `row_len`-long row of `out`, in parallel. `cost` is the
/// work of one row, which is what sizes the tasks: an output row of 1 element can still be a
/// reduction over a 32000-wide input row (a logsumexp), and must not be grouped like a copy.
/// Tasks are fixed runs of `rows_per_task(cost)` rows.
pub fn for_each_row<F: Send>(
    out: &mut [F],
    row_len: usize,
    cost: usize,
    f: impl Fn(usize, &mut [F]) + Sync + Send,
) {
    for_each_row_with(out, row_len, cost, || (), |_, r, row| f(r, row));
}

/// `for_each_row` with per-task scratch: `init` builds it once per task and `f` gets it for
/// every row of the task (score buffers that would otherwise be allocated per row).
pub fn for_each_row_with<F: Send, S>(
    out: &mut [F],
    row_len: usize,
    cost: usize,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [F]) + Sync + Send,
) {
    if row_len == 0 {
        return;
    }
    let rows = rows_per_task(cost);
    out.par_chunks_mut(rows * row_len).enumerate().for_each(|(task, chunk)| {
        let mut scratch = init();
        for (i, row) in chunk.chunks_mut(row_len).enumerate() {
            f(&mut scratch, task * rows + i, row);
        }
    });
}

/// `for_each_row` over two outputs with the same number of rows: `f(r, a_row, b_row)` (a
/// normalized row and its statistic, say).
pub fn for_each_row2<A: Send, B: Send>(
    a: &mut [A],
    a_len: usize,
    b: &mut [B],
    b_len: usize,
    cost: usize,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync + Send,
) {
    if a_len == 0 || b_len == 0 {
        return;
    }
    let rows = rows_per_task(cost);
    a.par_chunks_mut(rows * a_len).zip(b.par_chunks_mut(rows * b_len)).enumerate().for_each(
        |(task, (a, b))| {
            for (i, (ra, rb)) in a.chunks_mut(a_len).zip(b.chunks_mut(b_len)).enumerate() {
                f(task * rows + i, ra, rb);
            }
        },
    );
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

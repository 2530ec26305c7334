//! Launchers of kernels/cu/embedding.cu: the row gather and its deterministic scatter-add.
//! Ids are validated on the host (the op already has them there), so the backward's index plan
//! is built on the host too: a stable counting sort of positions by id, cut into segments of at
//! most `SEGMENT` rows so a frequent token does not serialize the grid (see `plan`).

use super::{launch_err, CudaData, CudaSlice, CudaStorage, Gpu, LaunchConfig, PushKernelArg};
use crate::error::{Error, Result};
use half::bf16;

/// Rows one segment of the backward sums before handing over to the merge kernel.
pub const SEGMENT: usize = 64;

/// The backward's index arrays (layouts as in kernels/cu/embedding.cu).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Positions sorted by (id, position).
    pub order: Vec<i32>,
    /// (id, begin, end, slot) per segment; slot -1 writes the gradient row directly.
    pub segs: Vec<i32>,
    /// (id, first_slot, nslots) per id cut into several segments.
    pub merges: Vec<i32>,
    /// Partial rows the segments of cut ids fill.
    pub slots: usize,
}

/// The plan for `ids` (each < `vocab`, at most i32::MAX of them) with segments of at most `seg` rows.
pub fn plan(ids: &[usize], vocab: usize, seg: usize) -> Plan {
    let seg = seg.max(1);
    let (start, order) = crate::ops::embedding::bucket_by_id(ids, vocab);
    let order: Vec<i32> = order.into_iter().map(|n| n as i32).collect();
    let (mut segs, mut merges, mut slots) = (Vec::new(), Vec::new(), 0usize);
    for v in 0..vocab {
        let (b, e) = (start[v], start[v + 1]);
        if b == e {
            continue;
        }
        if e - b <= seg {
            segs.extend_from_slice(&[v as i32, b as i32, e as i32, -1]);
            continue;
        }
        let first = slots;
        let mut k = b;
        while k < e {
            let end = (k + seg).min(e);
            segs.extend_from_slice(&[v as i32, k as i32, end as i32, slots as i32]);
            slots += 1;
            k = end;
        }
        merges.extend_from_slice(&[v as i32, first as i32, (slots - first) as i32]);
    }
    Plan { order, segs, merges, slots }
}

/// A 2-D block for row kernels: x walks a row's 16-byte chunks, y picks the row; 256 threads.
fn row_block(c: usize) -> (u32, u32) {
    let bx = c.div_ceil(8).max(1).next_power_of_two().min(256) as u32;
    (bx, 256 / bx)
}

fn rows_cfg(gpu: &Gpu, rows: usize, c: usize) -> LaunchConfig {
    let (bx, by) = row_block(c);
    let grid = rows.div_ceil(by as usize).clamp(1, gpu.sm_count * 64);
    LaunchConfig { grid_dim: (grid as u32, 1, 1), block_dim: (bx, by, 1), shared_mem_bytes: 0 }
}

fn c_i32(op: &'static str, c: usize) -> Result<i32> {
    i32::try_from(c)
        .map_err(|_| Error::invalid(op, format!("rows of {c} elements exceed the kernels' i32 width")))
}

/// out [n, c] = table[ids[n], :] for a bf16 `table` [vocab, c]. `ids` (i32 or u32 on the
/// device, n of them) must already be validated against `vocab` on the host.
pub fn embedding_fwd(ids: &CudaStorage, table: &CudaStorage, vocab: usize, c: usize) -> Result<CudaStorage> {
    let op = "embedding";
    let t = table.bf16(op)?;
    if t.len() != vocab * c {
        return Err(Error::invalid(op, format!("the table has {} elements, not [{vocab}, {c}]", t.len())));
    }
    let gpu = &table.gpu;
    let n = ids.len();
    let mut out = gpu.alloc::<bf16>(n * c)?;
    if n == 0 || c == 0 {
        return Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(out)));
    }
    let f = gpu.func("embedding", "embedding_fwd_bf16")?;
    let (n64, c32, v64) = (n as i64, c_i32(op, c)?, vocab as i64);
    let mut b = gpu.stream.launch_builder(&f);
    match &ids.data {
        CudaData::I32(s) => b.arg(s),
        CudaData::U32(s) => b.arg(s),
        _ => return Err(Error::DType { op, got: ids.dtype(), expected: "i32 or u32 token ids" }),
    };
    // SAFETY: ids hold n 32-bit ints below vocab (checked by the caller; others give NaN rows),
    // the table vocab*c bf16, out n*c; each out row is written once.
    unsafe { b.arg(t).arg(&mut out).arg(&n64).arg(&c32).arg(&v64).launch(rows_cfg(gpu, n, c)) }
        .map_err(launch_err(op))?;
    Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(out)))
}

/// dtable [vocab, c] (bf16) = the rows of `dy` [n, c] summed by token id in position order;
/// `ids` are the forward's validated ids (on the host).
pub fn embedding_bwd(ids: &[usize], dy: &CudaStorage, vocab: usize, c: usize) -> Result<CudaStorage> {
    let op = "embedding backward";
    let g = dy.bf16(op)?;
    if g.len() != ids.len() * c {
        return Err(Error::invalid(op, format!("dy has {} elements, not [{}, {c}]", g.len(), ids.len())));
    }
    if ids.len() > i32::MAX as usize {
        return Err(Error::invalid(op, "more than 2^31 tokens"));
    }
    let gpu = &dy.gpu;
    // Rows of ids that never occur stay zero.
    let mut dt = gpu.zeros::<bf16>(vocab * c)?;
    if ids.is_empty() || c == 0 {
        return Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(dt)));
    }
    let p = plan(ids, vocab, SEGMENT);
    let order = gpu.upload(&p.order)?;
    let segs = gpu.upload(&p.segs)?;
    // One element keeps the pointer valid when no id needs merging (it is never read then).
    let mut partial: CudaSlice<f32> = gpu.alloc(p.slots.max(1) * c)?;
    let (nseg, c32) = ((p.segs.len() / 4) as i64, c_i32(op, c)?);
    let f = gpu.func("embedding", "embedding_bwd_bf16")?;
    // SAFETY: dy holds n*c bf16, order n positions, segs nseg*4 ints whose ranges lie in order and
    // whose ids are < vocab; dt holds vocab*c, partial slots*c; each output row is written once.
    unsafe {
        gpu.stream
            .launch_builder(&f)
            .arg(g)
            .arg(&order)
            .arg(&segs)
            .arg(&nseg)
            .arg(&c32)
            .arg(&mut dt)
            .arg(&mut partial)
            .launch(rows_cfg(gpu, nseg as usize, c))
    }
    .map_err(launch_err(op))?;
    if !p.merges.is_empty() {
        let merges = gpu.upload(&p.merges)?;
        let nmerge = (p.merges.len() / 3) as i64;
        let fm = gpu.func("embedding", "embedding_bwd_merge_bf16")?;
        // SAFETY: merges hold nmerge*3 ints naming slots < slots and ids < vocab.
        unsafe {
            gpu.stream
                .launch_builder(&fm)
                .arg(&partial)
                .arg(&merges)
                .arg(&nmerge)
                .arg(&c32)
                .arg(&mut dt)
                .launch(rows_cfg(gpu, nmerge as usize, c))
        }
        .map_err(launch_err(op))?;
    }
    Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(dt)))
}

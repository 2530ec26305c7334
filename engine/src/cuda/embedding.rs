//! Launchers of kernels/cu/embedding.cu: the row gather and its deterministic scatter-add.
//! Ids are validated on the host (the op already has them there), so the backward's index plan
//! is built on the host too: a stable counting sort of positions by id, cut into segments of at
//! most `SEGMENT` rows so a frequent token does not serialize the grid (see `plan`).

use super::launch::{Elem as E, Param as P};
use super::rmsnorm::c_i32;
use super::{Arg, CudaData, CudaStorage, DeviceBuffer, Gpu, Kernel, LaunchConfig};
use crate::error::{Error, Result};
use half::bf16;

/// ids [N], table [V, C], out [N, C], N, C, V.
pub const EMBEDDING_FWD: Kernel = Kernel {
    module: "embedding",
    name: "embedding_fwd_bf16",
    params: &[P::ConstPtr(E::I32), P::ConstPtr(E::BF16), P::MutPtr(E::BF16), P::I64, P::I32, P::I64],
};
/// dy [N, C], order [N], segs [nseg, 4], nseg, C, dtable [V, C], partial [slots, C].
pub const EMBEDDING_BWD: Kernel = Kernel {
    module: "embedding",
    name: "embedding_bwd_bf16",
    params: &[
        P::ConstPtr(E::BF16),
        P::ConstPtr(E::I32),
        P::ConstPtr(E::I32),
        P::I64,
        P::I32,
        P::MutPtr(E::BF16),
        P::MutPtr(E::F32),
    ],
};
/// The same with an f32 dtable (not launched by the engine today).
pub const EMBEDDING_BWD_F32: Kernel = Kernel {
    module: "embedding",
    name: "embedding_bwd_bf16_f32",
    params: &[
        P::ConstPtr(E::BF16),
        P::ConstPtr(E::I32),
        P::ConstPtr(E::I32),
        P::I64,
        P::I32,
        P::MutPtr(E::F32),
        P::MutPtr(E::F32),
    ],
};
/// partial [slots, C], merges [nmerge, 3], nmerge, C, dtable [V, C].
pub const EMBEDDING_MERGE: Kernel = Kernel {
    module: "embedding",
    name: "embedding_bwd_merge_bf16",
    params: &[P::ConstPtr(E::F32), P::ConstPtr(E::I32), P::I64, P::I32, P::MutPtr(E::BF16)],
};
/// The same into an f32 dtable (not launched by the engine today).
pub const EMBEDDING_MERGE_F32: Kernel = Kernel {
    module: "embedding",
    name: "embedding_bwd_merge_f32",
    params: &[P::ConstPtr(E::F32), P::ConstPtr(E::I32), P::I64, P::I32, P::MutPtr(E::F32)],
};
pub const KERNELS: &[&Kernel] =
    &[&EMBEDDING_FWD, &EMBEDDING_BWD, &EMBEDDING_BWD_F32, &EMBEDDING_MERGE, &EMBEDDING_MERGE_F32];

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
    let (start, order) = crate::kernel_args::bucket_by_id(ids, vocab);
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
    let ids = match &ids.data {
        CudaData::I32(s) => Arg::ptr(s),
        CudaData::U32(s) => Arg::u32_as_i32(s),
        _ => return Err(Error::DType { op, got: ids.dtype(), expected: "i32 or u32 token ids" }),
    };
    let args = [
        ids,
        Arg::ptr(t),
        Arg::ptr_mut(&mut out),
        Arg::i64(n as i64),
        Arg::i32(c_i32(op, c)?),
        Arg::i64(vocab as i64),
    ];
    // SAFETY: ids hold n 32-bit ints below vocab (checked by the caller; others give NaN rows),
    // the table vocab*c bf16, out n*c; each out row is written once.
    unsafe { gpu.launch(op, &EMBEDDING_FWD, rows_cfg(gpu, n, c), &args) }?;
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
    let mut partial: DeviceBuffer<f32> = gpu.alloc(p.slots.max(1) * c)?; // [slots, C]
    let (nseg, c32) = ((p.segs.len() / 4) as i64, c_i32(op, c)?);
    let args = [
        Arg::ptr(g),
        Arg::ptr(&order),
        Arg::ptr(&segs),
        Arg::i64(nseg),
        Arg::i32(c32),
        Arg::ptr_mut(&mut dt),
        Arg::ptr_mut(&mut partial),
    ];
    // SAFETY: dy holds n*c bf16, order n positions, segs nseg*4 ints whose ranges lie in order and
    // whose ids are < vocab; dt holds vocab*c, partial slots*c; each output row is written once.
    unsafe { gpu.launch(op, &EMBEDDING_BWD, rows_cfg(gpu, nseg as usize, c), &args) }?;
    if !p.merges.is_empty() {
        let merges = gpu.upload(&p.merges)?;
        let nmerge = (p.merges.len() / 3) as i64;
        let args =
            [Arg::ptr(&partial), Arg::ptr(&merges), Arg::i64(nmerge), Arg::i32(c32), Arg::ptr_mut(&mut dt)];
        // SAFETY: merges hold nmerge*3 ints naming slots < slots and ids < vocab.
        unsafe { gpu.launch(op, &EMBEDDING_MERGE, rows_cfg(gpu, nmerge as usize, c), &args) }?;
    }
    Ok(CudaStorage::new(gpu.clone(), CudaData::BF16(dt)))
}

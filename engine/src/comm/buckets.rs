//! Gradient buckets: how gradients travel between data parallel ranks. Gradients are grouped,
//! in the order the backward completes them (the reverse of the parameter order), into
//! buckets of up to a size cap, and each bucket is reduced with one collective as soon as all
//! its gradients are complete. On a GPU the collective runs on the comm stream
//! (cuda/streams.rs), overlapped with the backward that goes on computing the next gradients on
//! the compute stream; a few large collectives instead of one per tensor keep the links busy.
//!
//! Layout. ZeRO shards each tensor on its own (`shard_range`: rank q owns piece q of ceil(len /
//! size) elements). A bucket is laid out rank-major so that a plain reduce-scatter of the
//! whole bucket hands each rank exactly its shards: segment q holds piece q of every member,
//! each padded with zeros to ceil(len / size), so all segments have one length S and
//!
//! ```text
//!   bucket [size * S] = | piece 0 of a, b, c | piece 1 of a, b, c | ... |   (a, b, c: members)
//! ```
//!
//! Rank r's reduce-scatter result [S] is its shard of every member, at the same offsets; an
//! all-gather of those (ZeRO-0) rebuilds the summed bucket, unpacked into whole tensors. Every
//! element is summed once, over the same ranks, so the result has the bits of reducing tensor
//! by tensor. Buckets sum in f32 (f64 for f64 gradients): bf16 gradients are widened as they
//! are packed and rounded once as they are unpacked, as the collectives did tensor by tensor.
//!
//! Order across streams (GPU): the bucket and its result buffer are allocated and packed on the
//! compute stream; an event there is what the comm stream waits for before the collective; an
//! event after the collective is what the compute stream waits for before unpacking; the
//! buffers are dropped only after that wait (the pool frees on the compute stream). The
//! emulator's stream check holds every run to this order.

use super::{copy_flat, shard_range, Comm};
use crate::cuda::{GpuEvent, Stream};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::{DType, Device, Shape, Tensor};

/// One bucket's layout: which gradients, where each sits in a rank's segment.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// The caller's indices of the member gradients, in reduction order.
    pub members: Vec<usize>,
    /// Each member's element count.
    lens: Vec<usize>,
    /// Each member's offset inside a rank's segment.
    offsets: Vec<usize>,
    /// Elements of one rank's segment (S): the sum of the members' ceil(len / size).
    segment: usize,
    /// The dtype the bucket sums in.
    pub dtype: DType,
    rank: usize,
    size: usize,
}

/// The dtype a gradient of `dtype` is summed in.
fn sum_dtype(dtype: DType) -> DType {
    if dtype == DType::F64 {
        DType::F64
    } else {
        DType::F32
    }
}

/// Buckets for gradients `grads` (element count, dtype; the caller's index is the position),
/// reduced in `order`, on rank `rank` of `size`: consecutive gradients of one summing dtype,
/// a new bucket when the next would take it past `cap_bytes` (a bucket holds at least one).
/// Every rank must plan the same buckets: they depend only on shapes, dtypes and the order.
pub fn plan_buckets(
    grads: &[(usize, DType)],
    order: &[usize],
    rank: usize,
    size: usize,
    cap_bytes: usize,
) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for &i in order {
        let (len, dtype) = grads[i];
        let (chunk, sum) = (len.div_ceil(size.max(1)), sum_dtype(dtype));
        let fits =
            |b: &Bucket| b.dtype == sum && (b.segment + chunk) * size * sum.size_in_bytes() <= cap_bytes;
        match out.last_mut() {
            Some(b) if fits(b) => {
                b.members.push(i);
                b.lens.push(len);
                b.offsets.push(b.segment);
                b.segment += chunk;
            }
            _ => out.push(Bucket {
                members: vec![i],
                lens: vec![len],
                offsets: vec![0],
                segment: chunk,
                dtype: sum,
                rank,
                size,
            }),
        }
    }
    out
}

impl Bucket {
    /// Elements of the whole bucket: size x S.
    pub fn elem_count(&self) -> usize {
        self.segment * self.size
    }

    /// The members' gradients (`grads[k]` for member k; None adds zeros) packed into a new
    /// bucket on `device`, rank-major (the file header).
    pub fn pack(&self, grads: &[Option<Tensor>], device: Device) -> Result<Tensor> {
        let mut bucket = Tensor::zeros_on([self.elem_count()], self.dtype, device)?;
        for (k, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            if g.elem_count() != self.lens[k] {
                return Err(Error::invalid(
                    "gradient bucket",
                    format!("a gradient of {} elements for a member of {}", g.elem_count(), self.lens[k]),
                ));
            }
            for q in 0..self.size {
                let r = shard_range(self.lens[k], q, self.size);
                copy_flat(g, r, &mut bucket, q * self.segment + self.offsets[k])?;
            }
        }
        Ok(bucket)
    }

    /// Member k's shard of the sums, from this rank's reduce-scatter result, as a [n] tensor of
    /// `dtype` (n = its `shard_range` length, maybe 0).
    pub fn shard_of(&self, piece: &Tensor, k: usize, dtype: DType) -> Result<Tensor> {
        let n = shard_range(self.lens[k], self.rank, self.size).len();
        let mut out = Tensor::zeros_on([n], dtype, piece.device())?;
        copy_flat(piece, self.offsets[k]..self.offsets[k] + n, &mut out, 0)?;
        Ok(out)
    }

    /// Member k's whole sums, from the all-gathered bucket, shaped `shape`, of `dtype`.
    pub fn whole_of(&self, bucket: &Tensor, k: usize, shape: &Shape, dtype: DType) -> Result<Tensor> {
        let mut out = Tensor::zeros_on(shape.clone(), dtype, bucket.device())?;
        for q in 0..self.size {
            let r = shard_range(self.lens[k], q, self.size);
            let at = q * self.segment + self.offsets[k];
            copy_flat(bucket, at..at + r.len(), &mut out, r.start)?;
        }
        Ok(out)
    }

    /// Starts the reduction of `bucket` (from `pack`): a reduce-scatter, then with `whole`
    /// (ZeRO-0) an all-gather back into the bucket. On a GPU it is queued on the comm stream
    /// behind an event of the compute stream, and returns at once; elsewhere it has run.
    pub fn start(&self, comm: &Comm, bucket: Tensor, whole: bool) -> Result<InFlight> {
        let mut piece = Tensor::zeros_on([self.segment], self.dtype, bucket.device())?;
        let gpu = match bucket.storage() {
            Storage::Cuda(c) => Some(c.gpu.clone()),
            Storage::Cpu(_) => None,
        };
        let mut bucket = bucket;
        let collectives = |bucket: &mut Tensor, piece: &mut Tensor| -> Result<()> {
            comm.reduce_scatter_into(bucket, piece)?;
            if whole {
                comm.all_gather_into(piece, bucket)?;
            }
            Ok(())
        };
        let done = match gpu {
            None => {
                collectives(&mut bucket, &mut piece)?;
                None
            }
            Some(gpu) => {
                let packed = gpu.record_event(Stream::Compute)?;
                let ev = gpu.on_stream(Stream::Comm, || -> Result<GpuEvent> {
                    gpu.wait_event(Stream::Comm, &packed)?;
                    collectives(&mut bucket, &mut piece)?;
                    gpu.record_event(Stream::Comm)
                })?;
                Some(ev)
            }
        };
        Ok(InFlight { bucket, piece, done })
    }
}

/// A bucket's reduction that may still be running on the comm stream. Holds the bucket and the
/// result buffer, so neither is freed (or reused by the pool) before the collective is done.
pub struct InFlight {
    bucket: Tensor,
    piece: Tensor,
    /// The comm stream's event after the collectives (GPU only).
    done: Option<GpuEvent>,
}

impl InFlight {
    /// Orders the compute stream after the collective (the host does not wait) and hands back
    /// (the bucket, all-gathered when `whole`; this rank's reduce-scatter result [S]).
    pub fn finish(self) -> Result<(Tensor, Tensor)> {
        if let (Some(ev), Storage::Cuda(c)) = (&self.done, self.bucket.storage()) {
            c.gpu.wait_event(Stream::Compute, ev)?;
        }
        Ok((self.bucket, self.piece))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_order_and_the_cap() {
        let grads = [(10, DType::F32), (3, DType::BF16), (7, DType::F32), (1, DType::F64), (4, DType::F32)];
        // 2 ranks: chunks 5, 2, 4, 1, 2; f32 bytes a rank-pair of chunk c: 8c.
        let b = plan_buckets(&grads, &[4, 3, 2, 1, 0], 1, 2, 48);
        let members: Vec<_> = b.iter().map(|b| b.members.clone()).collect();
        assert_eq!(members, vec![vec![4], vec![3], vec![2, 1], vec![0]]);
        assert_eq!((b[2].segment, b[2].offsets.clone(), b[2].dtype), (6, vec![0, 4], DType::F32));
        assert_eq!(b[1].dtype, DType::F64);
        // A gradient over the cap is a bucket of its own.
        assert_eq!(plan_buckets(&grads, &[0], 0, 2, 8).len(), 1);
    }
}

//! Embedding: out[n, :] = table[ids[n], :]. ids are i32 or u32 of any shape (B, T), the table
//! is [V, C], the output [.., C].
//! Backward scatter-adds into [V, C] deterministically: positions are bucketed by token id
//! (in position order), then each vocab row sums its bucket in that order, rows in parallel.
//! CUDA: a bf16 table; ids (on either device) are validated on the host first, and the same
//! bucketing, planned on the host, drives the device's scatter-add (cuda/embedding.rs).

use crate::cuda::{self, CudaStorage};
use crate::dtype::{Element, Float};
use crate::error::{Error, Result};
use crate::kernel_args::bucket_by_id;
use crate::ops::check_float;
use crate::par;
use crate::storage::CpuStorage;
use crate::storage::Storage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Shape, Tensor};

pub(crate) struct Saved {
    ids: Vec<usize>,
    vocab: usize,
}

/// Integer ids (i32 or u32) widened to i64, so range checks see negative values.
pub(crate) fn ids_as_i64(op: &'static str, ids: &Tensor) -> Result<Vec<i64>> {
    match ids.dtype() {
        DType::I32 => Ok(ids.data::<i32>(op)?.iter().map(|&i| i as i64).collect()),
        DType::U32 => Ok(ids.data::<u32>(op)?.iter().map(|&i| i as i64).collect()),
        got => Err(Error::DType { op, got, expected: "i32 or u32 token ids" }),
    }
}

/// Token ids as indices, each checked against `bound`.
pub(crate) fn ids_as_indices(op: &'static str, ids: &Tensor, bound: usize) -> Result<Vec<usize>> {
    ids_as_i64(op, ids)?
        .iter()
        .enumerate()
        .map(|(position, &i)| {
            if i < 0 || i as usize >= bound {
                Err(Error::IndexOutOfRange { op, index: i, bound, position })
            } else {
                Ok(i as usize)
            }
        })
        .collect()
}

fn forward<F: Float>(ids: &[usize], table: &Tensor, c: usize) -> Result<CpuStorage> {
    let t = table.data::<F>("embedding")?;
    let mut out = vec![F::zero(); ids.len() * c];
    par::for_each_row(&mut out, c, c, |n, row| row.copy_from_slice(&t[ids[n] * c..(ids[n] + 1) * c]));
    Ok(F::into_storage(out))
}

/// `ids` checked against `bound` on the host; a CUDA tensor is copied there first.
fn host_indices(op: &'static str, ids: &Tensor, bound: usize) -> Result<Vec<usize>> {
    match ids.storage() {
        Storage::Cpu(_) => ids_as_indices(op, ids, bound),
        Storage::Cuda(c) => {
            let host = Tensor::from_cpu(c.download()?, ids.shape().clone());
            ids_as_indices(op, &host, bound)
        }
    }
}

/// Rows of `table` [V, C] picked by `ids` [..]: [.., C].
pub fn embedding(ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    let op = "embedding";
    if table.rank() != 2 {
        return Err(Error::bad_shape(op, table.shape(), "the table must be [V, C]"));
    }
    let (v, c) = (table.dims()[0], table.dims()[1]);
    let mut dims = ids.dims().to_vec();
    dims.push(c);
    if table.is_cuda() {
        if table.dtype() != DType::BF16 {
            return Err(Error::DType { op, got: table.dtype(), expected: "a bf16 table on CUDA" });
        }
        if v > i32::MAX as usize {
            return Err(Error::bad_shape(op, table.shape(), "a CUDA table has at most 2^31 - 1 rows"));
        }
        let ts = table.cuda(op)?;
        let idx = host_indices(op, ids, v)?;
        let out = match ids.storage() {
            Storage::Cuda(dev) => cuda::embedding::embedding_fwd(dev, ts, v, c)?,
            Storage::Cpu(_) => {
                let host: Vec<i32> = idx.iter().map(|&i| i as i32).collect();
                let dev = CudaStorage::upload(&ts.gpu, &CpuStorage::I32(host))?;
                cuda::embedding::embedding_fwd(&dev, ts, v, c)?
            }
        };
        return record(op, &[ids, table], out, Shape::from(dims), |_| {
            Op::Embedding(Saved { ids: idx.clone(), vocab: v })
        });
    }
    check_float(op, table)?;
    let idx = ids_as_indices(op, ids, v)?;
    let out = match table.dtype() {
        DType::F32 => forward::<f32>(&idx, table, c)?,
        _ => forward::<f64>(&idx, table, c)?,
    };
    record(op, &[ids, table], out, Shape::from(dims), |_| Op::Embedding(Saved { ids: idx.clone(), vocab: v }))
}

/// Scatter-add of `g` rows [N, C] into a [V, C] gradient, deterministic at any thread count.
pub fn embedding_grad<F: Float>(ids: &[usize], g: &[F], vocab: usize, c: usize) -> Vec<F> {
    let (start, order) = bucket_by_id(ids, vocab);
    let mut out = vec![F::zero(); vocab * c];
    // Rows cost c per occurrence of their id; c is the average over a large batch.
    par::for_each_row(&mut out, c, c, |v, row| {
        for &n in &order[start[v]..start[v + 1]] {
            for (o, &x) in row.iter_mut().zip(&g[n * c..(n + 1) * c]) {
                *o += x;
            }
        }
    });
    out
}

pub(crate) fn backward(s: &Saved, g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    if !needs[1] {
        return Ok(vec![None, None]);
    }
    let c = g.shape().last();
    if g.is_cuda() {
        let dt = cuda::embedding::embedding_bwd(&s.ids, g.cuda("embedding backward")?, s.vocab, c)?;
        return Ok(vec![None, Some(Tensor::from_cuda(dt, Shape::new(&[s.vocab, c])))]);
    }
    let out = match g.dtype() {
        DType::F32 => {
            f32::into_storage(embedding_grad(&s.ids, g.data::<f32>("embedding backward")?, s.vocab, c))
        }
        _ => f64::into_storage(embedding_grad(&s.ids, g.data::<f64>("embedding backward")?, s.vocab, c)),
    };
    Ok(vec![None, Some(Tensor::from_cpu(out, Shape::new(&[s.vocab, c])))])
}

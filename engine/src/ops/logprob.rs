//! Per-sequence summed log-probabilities of target tokens: what DPO compares between the policy
//! and the reference. logits [B, T, V], labels [B, T] (i32; -100 = not counted, e.g. prompt
//! tokens); out [B] with out_b = sum over counted t of log softmax(x_bt)[label_bt], plus each
//! sequence's count of counted tokens (for length-normalized losses such as IPO).
//! Backward: dx_bt = g_b * (onehot(label_bt) - softmax(x_bt)), from the saved logsumexps.
//! On CUDA (logits f32 or bf16): the cross-entropy kernels' per-row losses, summed per sequence
//! by a fixed tree with scale -1 (logp = -loss exactly); out f32 [B].

use crate::cuda::{self, CudaData, CudaStorage};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::ops::cross_entropy::{
    check_logits, cuda_backward, cuda_rows, rows_lse, softmax_minus_onehot, targets_with_ignore, CudaSaved,
};
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Shape, Tensor};

pub(crate) struct Saved {
    logits: Tensor,
    labels: Vec<Option<usize>>,
    lse: Vec<f64>,
    t: usize,
    cuda: Option<CudaSaved>,
}

/// Summed log-probs [B] and counted tokens per sequence.
#[derive(Debug)]
pub struct SequenceLogProbs {
    pub logps: Tensor,
    pub counts: Vec<usize>,
}

fn forward<F: Float>(
    logits: &Tensor,
    labels: &[Option<usize>],
    b: usize,
    t: usize,
) -> Result<(CpuStorage, Vec<f64>)> {
    let xs = logits.data::<F>("sequence_logprobs")?;
    let v = logits.shape().last();
    let lse = rows_lse(xs, v, labels);
    let sums: Vec<F> = (0..b)
        .map(|s| {
            let mut acc = F::zero();
            for r in s * t..(s + 1) * t {
                if let Some(l) = labels[r] {
                    acc += xs[r * v + l] - lse[r];
                }
            }
            acc
        })
        .collect();
    Ok((F::into_storage(sums), lse.iter().map(|x| x.as_f64()).collect()))
}

/// Summed log-probs of `labels` [B, T] under `logits` [B, T, V]; see the file header.
pub fn sequence_logprobs(logits: &Tensor, labels: &Tensor) -> Result<SequenceLogProbs> {
    let op = "sequence_logprobs";
    let v = check_logits(op, logits, labels)?;
    if logits.rank() != 3 || labels.dims() != &logits.dims()[..2] {
        return Err(Error::mismatch(
            op,
            logits.shape(),
            labels.shape(),
            "logits must be [B, T, V] and labels [B, T]",
        ));
    }
    let (b, t) = (logits.dims()[0], logits.dims()[1]);
    let l = targets_with_ignore(op, labels, v)?;
    let counts = (0..b).map(|s| l[s * t..(s + 1) * t].iter().filter(|x| x.is_some()).count()).collect();
    if logits.is_cuda() {
        let (loss_rows, saved) = cuda_rows(op, logits, labels, &l, v)?;
        let gpu = logits.cuda(op)?.gpu.clone();
        let rows = CudaStorage::new(gpu, CudaData::F32(loss_rows)); // [B, T]
        let out = cuda::reduce::sum_last(&rows, b, t, -1.0)?;
        let logps = record(op, &[logits, labels], out, Shape::new(&[b]), |_| {
            Op::LogProb(Saved {
                logits: logits.detach(),
                labels: l.clone(),
                lse: Vec::new(),
                t,
                cuda: Some(saved),
            })
        })?;
        return Ok(SequenceLogProbs { logps, counts });
    }
    let (out, lse) = match logits.dtype() {
        DType::F32 => forward::<f32>(logits, &l, b, t)?,
        _ => forward::<f64>(logits, &l, b, t)?,
    };
    let logps = record(op, &[logits, labels], out, Shape::new(&[b]), |_| {
        Op::LogProb(Saved { logits: logits.detach(), labels: l.clone(), lse, t, cuda: None })
    })?;
    Ok(SequenceLogProbs { logps, counts })
}

fn grad<F: Float>(s: &Saved, g: &Tensor) -> Result<CpuStorage> {
    let op = "sequence_logprobs backward";
    let xs = s.logits.data::<F>(op)?;
    let gs = g.data::<F>(op)?;
    let lse: Vec<F> = s.lse.iter().map(|&x| F::c(x)).collect();
    // d logp / dx = onehot - softmax: the cross-entropy gradient with the sign flipped.
    let v = s.logits.shape().last();
    Ok(F::into_storage(softmax_minus_onehot(xs, v, &s.labels, &lse, |r| -gs[r / s.t])))
}

pub(crate) fn backward(s: &Saved, g: &Tensor) -> Result<InputGrads> {
    if let Some(cs) = &s.cuda {
        // d logp_b / dx = onehot - softmax: the cross-entropy gradient scaled by -g_b.
        return Ok(vec![
            Some(cuda_backward("sequence_logprobs backward", &s.logits, cs, g, s.t, -1.0)?),
            None,
        ]);
    }
    let out = match g.dtype() {
        DType::F32 => grad::<f32>(s, g)?,
        _ => grad::<f64>(s, g)?,
    };
    Ok(vec![Some(Tensor::from_cpu(out, s.logits.shape().clone())), None])
}

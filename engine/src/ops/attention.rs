//! Causal self-attention with GQA, document masking and an optional sliding window.
//! q is [B, T, H, D]; k and v are [B, T, Hkv, D] with H a multiple of Hkv (query head h reads
//! kv head h / (H/Hkv)); out is [B, T, H, D]. Query i sees key j when
//!   j <= i,  doc[i] == doc[j] (when document ids [B, T] are given: packed sequences),
//!   i - j < window (when a window is given: Mistral's sliding window, the token itself included).
//! Scores are scaled by 1/sqrt(D). Every query sees at least itself, so no row is empty.
//! Forward per query row: an exact softmax over the visible keys, saving logsumexp L [B, T, H].
//! Backward recomputes P = exp(s - L) (flash-attention style, nothing T x T is kept):
//!   Di = dO_i . O_i,  dS_ij = P_ij (dO_i . v_j - Di)
//!   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_{h in group, i} dS_ij q_i,  dv_j = sum P_ij dO_i
//! The CPU kernels (tiled, deterministic at any thread count) are in attention_cpu.rs.
//! On CUDA (q, k, v bf16 on one GPU, D 16, 32, 64 or 128): flash attention on tensor cores
//! (kernels/cu/attention.cu via cuda::attention); the logsumexp stays on the device as f32
//! [B, H, T] for the backward, and document ids are read there (uploaded when given on the CPU).

use crate::cuda::{self, CudaData, CudaStorage, DeviceBuffer};
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernel_args::AttnDims;
use crate::ops::check_float;
use crate::storage::CpuStorage;
use crate::tape::{record, InputGrads, Op};
use crate::{DType, Shape, Tensor};

pub use crate::ops::attention_cpu::{attention_bwd, attention_fwd};

/// Which keys a query may see, beyond causality.
#[derive(Clone, Debug, Default)]
pub struct AttentionMask {
    /// Per-token document ids [B, T] (i32/u32): tokens only see their own document.
    pub doc_ids: Option<Tensor>,
    /// Sliding window: query i sees keys j with i - j < window.
    pub window: Option<usize>,
}

/// Sizes and visibility rule of one attention call.
#[derive(Clone)]
pub struct AttnGeom {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub hkv: usize,
    pub d: usize,
    pub doc: Option<Vec<usize>>,
    pub window: Option<usize>,
}

impl AttnGeom {
    /// Query i of batch b may see key j.
    #[inline]
    pub fn visible(&self, b: usize, i: usize, j: usize) -> bool {
        j <= i
            && self.window.is_none_or(|w| i - j < w)
            && self.doc.as_ref().is_none_or(|d| d[b * self.t + i] == d[b * self.t + j])
    }
    /// Document id of token i of sequence b (0 without document ids).
    #[inline]
    pub fn doc_of(&self, b: usize, i: usize) -> usize {
        self.doc.as_ref().map_or(0, |d| d[b * self.t + i])
    }
    /// First key query i could see by causality and the window alone.
    #[inline]
    pub fn first_key(&self, i: usize) -> usize {
        self.window.map_or(0, |w| (i + 1).saturating_sub(w))
    }
    /// Last query that could see key j by causality and the window alone.
    #[inline]
    pub fn last_query(&self, j: usize) -> usize {
        self.window.map_or(self.t - 1, |w| (j + w - 1).min(self.t - 1))
    }
}

pub(crate) struct Saved {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Vec<f64>,
    geom: AttnGeom,
    /// What the CUDA backward reads (q, k, v on a GPU); `lse` above is then empty.
    cuda: Option<CudaSaved>,
}

/// The device side of a CUDA attention's saved state.
pub(crate) struct CudaSaved {
    /// Logsumexp of every score row, f32 [B, H, T].
    lse: DeviceBuffer<f32>,
    /// Document ids [B, T] (i32 or u32) on the GPU.
    doc: Option<Tensor>,
    dims: AttnDims,
}

/// Shapes, dtypes and the mask checked; document ids read into the geometry when `host_doc`
/// (the CPU path; the CUDA path reads them on the device and leaves `doc` None).
fn geometry(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttentionMask, host_doc: bool) -> Result<AttnGeom> {
    let op = "attention";
    if q.rank() != 4 || k.rank() != 4 {
        return Err(Error::mismatch(
            op,
            q.shape(),
            k.shape(),
            "q must be [B, T, H, D] and k, v [B, T, Hkv, D]",
        ));
    }
    let (qd, kd) = (q.dims(), k.dims());
    if k.shape() != v.shape() {
        return Err(Error::mismatch(op, k.shape(), v.shape(), "k and v must have the same shape"));
    }
    if qd[0] != kd[0] || qd[1] != kd[1] || qd[3] != kd[3] {
        return Err(Error::mismatch(op, q.shape(), k.shape(), "B, T and D of q and k must agree"));
    }
    if kd[2] == 0 || qd[2] % kd[2] != 0 {
        return Err(Error::mismatch(op, q.shape(), k.shape(), "query heads must be a multiple of kv heads"));
    }
    if q.dtype() != k.dtype() || k.dtype() != v.dtype() {
        return Err(Error::DTypeMismatch { op, lhs: q.dtype(), rhs: k.dtype() });
    }
    let doc = match &mask.doc_ids {
        None => None,
        Some(ids) => {
            if ids.elem_count() != qd[0] * qd[1] {
                return Err(Error::mismatch(op, q.shape(), ids.shape(), "document ids must be [B, T]"));
            }
            if host_doc {
                Some(crate::ops::embedding::ids_as_indices(op, ids, usize::MAX)?)
            } else {
                None
            }
        }
    };
    if mask.window == Some(0) {
        return Err(Error::invalid(op, "a sliding window must be at least 1"));
    }
    Ok(AttnGeom { b: qd[0], t: qd[1], h: qd[2], hkv: kd[2], d: qd[3], doc, window: mask.window })
}

fn forward<F: Float>(q: &Tensor, k: &Tensor, v: &Tensor, g: &AttnGeom) -> Result<(CpuStorage, Vec<f64>)> {
    let op = "attention";
    let (out, lse) = attention_fwd(q.data::<F>(op)?, k.data::<F>(op)?, v.data::<F>(op)?, g);
    Ok((F::into_storage(out), lse.iter().map(|x| x.as_f64()).collect()))
}

/// Causal attention; see the file header for shapes and the mask.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
    if q.is_cuda() {
        return attention_cuda(q, k, v, mask);
    }
    check_float("attention", q)?;
    let geom = geometry(q, k, v, mask, true)?;
    let (out, lse) = match q.dtype() {
        DType::F32 => forward::<f32>(q, k, v, &geom)?,
        _ => forward::<f64>(q, k, v, &geom)?,
    };
    record("attention", &[q, k, v], out, q.shape().clone(), |y| {
        Op::Attention(Saved {
            q: q.detach(),
            k: k.detach(),
            v: v.detach(),
            out: y.clone(),
            lse,
            geom,
            cuda: None,
        })
    })
}

/// The CUDA storage of `t` in `want`'s GPU, or an error naming the op.
fn on_gpu<'a>(op: &'static str, t: &'a Tensor, gpu: &CudaStorage) -> Result<&'a CudaStorage> {
    let c = t.cuda(op)?;
    if c.gpu.ordinal != gpu.gpu.ordinal {
        return Err(Error::WrongDevice {
            op,
            device: t.device(),
            msg: format!("the other inputs are on cuda:{}", gpu.gpu.ordinal),
        });
    }
    Ok(c)
}

fn attention_cuda(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttentionMask) -> Result<Tensor> {
    let op = "attention";
    let geom = geometry(q, k, v, mask, false)?;
    if q.dtype() != DType::BF16 {
        return Err(Error::DType {
            op,
            got: q.dtype(),
            expected: "bf16 q, k, v on CUDA (cast with to_dtype)",
        });
    }
    let qc = q.cuda(op)?;
    let (kc, vc) = (on_gpu(op, k, qc)?, on_gpu(op, v, qc)?);
    let doc = match &mask.doc_ids {
        None => None,
        Some(ids) if ids.is_cuda() => {
            on_gpu(op, ids, qc)?;
            Some(ids.detach())
        }
        Some(ids) => Some(ids.detach().to_device(q.device())?),
    };
    let dims = AttnDims { b: geom.b, t: geom.t, h: geom.h, hkv: geom.hkv, d: geom.d, window: geom.window };
    let docs = match &doc {
        None => cuda::attention::DocIds::None,
        Some(t) => cuda::attention::DocIds::of(op, t.cuda(op)?)?,
    };
    let (out, lse) =
        cuda::attention::forward(&qc.gpu, qc.bf16(op)?, kc.bf16(op)?, vc.bf16(op)?, &docs, &dims)?;
    let out = CudaStorage::new(qc.gpu.clone(), CudaData::BF16(out));
    record(op, &[q, k, v], out, q.shape().clone(), |y| {
        Op::Attention(Saved {
            q: q.detach(),
            k: k.detach(),
            v: v.detach(),
            out: y.clone(),
            lse: Vec::new(),
            geom,
            cuda: Some(CudaSaved { lse, doc, dims }),
        })
    })
}

fn grad_cuda(s: &Saved, cs: &CudaSaved, g: &Tensor) -> Result<[Tensor; 3]> {
    let op = "attention backward";
    // The output's gradient is used as bf16 on the output's GPU; anything else is made so.
    let g = if g.device() == s.out.device() && g.dtype() == DType::BF16 {
        g.clone()
    } else {
        g.detach().to_dtype(DType::BF16)?.to_device(s.out.device())?
    };
    let qc = s.q.cuda(op)?;
    let docs = match &cs.doc {
        None => cuda::attention::DocIds::None,
        Some(t) => cuda::attention::DocIds::of(op, t.cuda(op)?)?,
    };
    let (dq, dk, dv) = cuda::attention::backward(
        &qc.gpu,
        qc.bf16(op)?,
        s.k.cuda(op)?.bf16(op)?,
        s.v.cuda(op)?.bf16(op)?,
        &docs,
        s.out.cuda(op)?.bf16(op)?,
        &cs.lse,
        g.cuda(op)?.bf16(op)?,
        &cs.dims,
    )?;
    let wrap = |x, t: &Tensor| {
        Tensor::from_cuda(CudaStorage::new(qc.gpu.clone(), CudaData::BF16(x)), t.shape().clone())
    };
    Ok([wrap(dq, &s.q), wrap(dk, &s.k), wrap(dv, &s.v)])
}

fn grad<F: Float>(s: &Saved, g: &Tensor) -> Result<[CpuStorage; 3]> {
    let op = "attention backward";
    let lse: Vec<F> = s.lse.iter().map(|&x| F::c(x)).collect();
    let (dq, dk, dv) = attention_bwd(
        s.q.data::<F>(op)?,
        s.k.data::<F>(op)?,
        s.v.data::<F>(op)?,
        s.out.data::<F>(op)?,
        &lse,
        g.data::<F>(op)?,
        &s.geom,
    );
    Ok([F::into_storage(dq), F::into_storage(dk), F::into_storage(dv)])
}

pub(crate) fn backward(s: &Saved, g: &Tensor, needs: &[bool]) -> Result<InputGrads> {
    if let Some(cs) = &s.cuda {
        let [dq, dk, dv] = grad_cuda(s, cs, g)?;
        return Ok(vec![needs[0].then_some(dq), needs[1].then_some(dk), needs[2].then_some(dv)]);
    }
    let [dq, dk, dv] = match g.dtype() {
        DType::F32 => grad::<f32>(s, g)?,
        _ => grad::<f64>(s, g)?,
    };
    let shape = |t: &Tensor| -> Shape { t.shape().clone() };
    Ok(vec![
        needs[0].then(|| Tensor::from_cpu(dq, shape(&s.q))),
        needs[1].then(|| Tensor::from_cpu(dk, shape(&s.k))),
        needs[2].then(|| Tensor::from_cpu(dv, shape(&s.v))),
    ])
}

//! AdamW (Loshchilov & Hutter; PyTorch's formulation), per parameter tensor:
//!   p <- p - lr * wd * p                       (decoupled decay, only where `decay` is on)
//!   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2
//!   p <- p - (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//! Moments live in the parameter's dtype (f32 on the CPU), keyed by tensor id. The update is
//! element-wise in fixed chunks, so it is deterministic at any thread count.
//! On CUDA one fused kernel (kernels/cu/adamw.cu) does the same update in the same order with
//! IEEE f32 operations: moments are f32 device tensors; a bf16 parameter gets an f32 master
//! copy (kept here, keyed like the moments) that the step updates, and the bf16 parameter is
//! rewritten from it in the same kernel. An f32 CUDA parameter is its own master.

use crate::cuda::adamw::adamw_step as cuda_adamw_step;
use crate::dtype::Float;
use crate::error::{Error, Result};
use crate::kernel_args::AdamWHyper;
use crate::tape::Grads;
use crate::tensor::TensorId;
use crate::{DType, Tensor};
use rayon::prelude::*;
use std::collections::hash_map::Entry;
use std::collections::HashMap;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults but for weight decay 0.1, the usual LLM choice.
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 }
    }
}

/// First and second moments of one parameter.
#[derive(Clone)]
pub struct Moments {
    pub m: Tensor,
    pub v: Tensor,
}

pub struct AdamW {
    pub config: AdamWConfig,
    step: u64,
    state: HashMap<TensorId, Moments>,
    /// f32 master weights of bf16 CUDA parameters.
    masters: HashMap<TensorId, Tensor>,
}

/// One AdamW update of `p` with gradient `g`; see the file header. `t` is the 1-based step.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update<F: Float>(
    p: &mut [F],
    g: &[F],
    m: &mut [F],
    v: &mut [F],
    c: &AdamWConfig,
    lr: f64,
    t: u64,
    decay: bool,
) {
    let bc1 = 1.0 - c.beta1.powi(t as i32);
    let bc2 = 1.0 - c.beta2.powi(t as i32);
    let (b1, b2, eps) = (F::c(c.beta1), F::c(c.beta2), F::c(c.eps));
    let step_size = F::c(lr / bc1);
    let bc2_sqrt = F::c(bc2.sqrt());
    let keep = F::c(if decay { 1.0 - lr * c.weight_decay } else { 1.0 });
    const CHUNK: usize = 4096;
    p.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((p, m), v), g)| {
            // Zipped iterators rather than indexing: no bounds checks, so the loop vectorizes.
            for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
                *p *= keep;
                *m = b1 * *m + (F::one() - b1) * g;
                *v = b2 * *v + (F::one() - b2) * g * g;
                *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
            }
        });
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW { config, step: 0, state: HashMap::new(), masters: HashMap::new() }
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }
    pub fn set_step_count(&mut self, step: u64) {
        self.step = step;
    }

    /// Moments of a parameter, if it has been updated (checkpoints save these).
    pub fn moments(&self, id: TensorId) -> Option<&Moments> {
        self.state.get(&id)
    }
    /// Restores a parameter's moments (resuming from a checkpoint).
    pub fn set_moments(&mut self, id: TensorId, moments: Moments) {
        self.state.insert(id, moments);
    }

    /// The f32 master copy of a bf16 CUDA parameter, once it has been updated (checkpoints
    /// save it: the bf16 weight alone loses the update's low bits).
    pub fn master(&self, id: TensorId) -> Option<&Tensor> {
        self.masters.get(&id)
    }
    /// Restores a bf16 CUDA parameter's f32 master copy (resuming from a checkpoint); without
    /// one the first update starts from the bf16 weight.
    pub fn set_master(&mut self, id: TensorId, master: Tensor) {
        self.masters.insert(id, master);
    }

    /// Takes a parameter's moments out (data parallel ranks keep only their shard's).
    pub fn take_moments(&mut self, id: TensorId) -> Option<Moments> {
        self.state.remove(&id)
    }
    /// Takes a bf16 CUDA parameter's f32 master copy out.
    pub fn take_master(&mut self, id: TensorId) -> Option<Tensor> {
        self.masters.remove(&id)
    }

    /// Starts a new step (bias corrections use the new count).
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// Updates one parameter in place with its gradient, at learning rate `lr`.
    pub fn update(&mut self, p: &mut Tensor, g: &Tensor, decay: bool, lr: f64) -> Result<()> {
        let op = "adamw";
        if p.shape() != g.shape() {
            return Err(Error::mismatch(op, p.shape(), g.shape(), "parameter and gradient shapes differ"));
        }
        if p.is_cuda() {
            if self.step == 0 {
                return Err(Error::invalid(op, "begin_step must be called before update"));
            }
            return self.update_cuda(p, g, decay, lr);
        }
        if p.dtype() != g.dtype() {
            return Err(Error::DTypeMismatch { op, lhs: p.dtype(), rhs: g.dtype() });
        }
        if self.step == 0 {
            return Err(Error::invalid(op, "begin_step must be called before update"));
        }
        let st = self.state.entry(p.id()).or_insert_with(|| Moments {
            m: Tensor::zeros(p.shape().clone(), p.dtype()),
            v: Tensor::zeros(p.shape().clone(), p.dtype()),
        });
        let (c, t) = (self.config, self.step);
        match p.dtype() {
            DType::F32 => run::<f32>(p, g, st, &c, lr, t, decay),
            DType::F64 => run::<f64>(p, g, st, &c, lr, t, decay),
            got => Err(Error::DType { op, got, expected: "f32 or f64 parameters" }),
        }
    }

    /// The CUDA update: f32 or bf16 parameter, f32 or bf16 gradient on the same GPU.
    fn update_cuda(&mut self, p: &mut Tensor, g: &Tensor, decay: bool, lr: f64) -> Result<()> {
        let op = "adamw";
        let (id, dev, shape) = (p.id(), p.device(), p.shape().clone());
        let gc = g.cuda(op)?;
        let gpu = p.cuda(op)?.gpu.clone();
        if gc.gpu.ordinal != gpu.ordinal {
            return Err(Error::WrongDevice {
                op,
                device: g.device(),
                msg: format!("the parameter is on {dev}"),
            });
        }
        let st = match self.state.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let m = Tensor::zeros_on(shape.clone(), DType::F32, dev)?;
                let v = Tensor::zeros_on(shape.clone(), DType::F32, dev)?;
                e.insert(Moments { m, v })
            }
        };
        // Moments restored on the host (a checkpoint) move to the parameter's device as f32.
        for t in [&mut st.m, &mut st.v] {
            if t.device() != dev || t.dtype() != DType::F32 {
                *t = t.detach().to_dtype(DType::F32)?.to_device(dev)?;
            }
            if t.shape() != &shape {
                return Err(Error::mismatch(op, &shape, t.shape(), "moments and parameter shapes differ"));
            }
        }
        let h = hyper(&self.config, lr, self.step, decay);
        let (m, v) = (st.m.cuda_mut(op)?.f32_mut(op)?, st.v.cuda_mut(op)?.f32_mut(op)?);
        match p.dtype() {
            DType::F32 => cuda_adamw_step(&gpu, p.cuda_mut(op)?.f32_mut(op)?, m, v, &gc.data, None, &h),
            DType::BF16 => {
                let master = match self.masters.entry(id) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(p.detach().to_dtype(DType::F32)?),
                };
                if master.device() != dev || master.dtype() != DType::F32 {
                    *master = master.detach().to_dtype(DType::F32)?.to_device(dev)?;
                }
                if master.shape() != &shape {
                    return Err(Error::mismatch(
                        op,
                        &shape,
                        master.shape(),
                        "master and parameter shapes differ",
                    ));
                }
                let pm = master.cuda_mut(op)?.f32_mut(op)?;
                cuda_adamw_step(&gpu, pm, m, v, &gc.data, Some(p.cuda_mut(op)?.bf16_mut(op)?), &h)
            }
            got => Err(Error::DType { op, got, expected: "f32 or bf16 parameters on CUDA" }),
        }
    }

    /// One step over `params` (tensor, decay on/off) with their gradients; a parameter without
    /// a gradient is left alone.
    pub fn step<'a>(
        &mut self,
        params: impl IntoIterator<Item = (&'a mut Tensor, bool)>,
        grads: &Grads,
        lr: f64,
    ) -> Result<()> {
        self.begin_step();
        for (p, decay) in params {
            if let Some(g) = grads.get_id(p.id()) {
                let g = g.clone();
                self.update(p, &g, decay, lr)?;
            }
        }
        Ok(())
    }
}

fn run<F: Float>(
    p: &mut Tensor,
    g: &Tensor,
    st: &mut Moments,
    c: &AdamWConfig,
    lr: f64,
    t: u64,
    decay: bool,
) -> Result<()> {
    let g = g.data::<F>("adamw")?;
    // p, m and v are distinct tensors, each updated in place (no copies of the moments).
    let Moments { m, v } = st;
    let (mut m_res, mut v_res) = (Ok(()), Ok(()));
    p.update_in_place::<F>(|p| {
        m_res = m.update_in_place::<F>(|m| {
            v_res = v.update_in_place::<F>(|v| adamw_update(p, g, m, v, c, lr, t, decay));
        });
    })?;
    m_res?;
    v_res
}

/// The CUDA step's constants for learning rate `lr` at 1-based step `t`, decay on or off,
/// rounded to f32 from f64 exactly as `adamw_update` rounds them.
fn hyper(c: &AdamWConfig, lr: f64, t: u64, decay: bool) -> AdamWHyper {
    let bc1 = 1.0 - c.beta1.powi(t as i32);
    let bc2 = 1.0 - c.beta2.powi(t as i32);
    AdamWHyper {
        keep: (if decay { 1.0 - lr * c.weight_decay } else { 1.0 }) as f32,
        b1: c.beta1 as f32,
        b2: c.beta2 as f32,
        eps: c.eps as f32,
        step_size: (lr / bc1) as f32,
        bc2_sqrt: bc2.sqrt() as f32,
        gscale: 1.0,
    }
}

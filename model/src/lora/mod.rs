//! LoRA adapters on the decoder's projections (Hu et al. 2021, as PEFT implements them). A
//! targeted linear y = x W^T becomes
//!   y = x W^T + s * (dropout(x) A^T) B^T        A [r, in], B [out, r], s = alpha/r (or alpha/sqrt(r))
//! with W frozen: only A and B are trained. Adapters are named as PEFT's state dict names them,
//! less its `base_model.model.` prefix (`model.layers.{i}.self_attn.q_proj.lora_A.weight`), so
//! peft_io.rs only adds or strips the prefix.
//!
//! Initialisation follows PEFT's default (`init_lora_weights=True`): B is zero, so a fresh
//! adapter leaves the model unchanged, and A is drawn as torch's `kaiming_uniform_(a=sqrt(5))`
//! draws a Linear's weight: gain sqrt(2 / (1 + a^2)) = sqrt(1/3), bound = gain * sqrt(3 / fan_in)
//! = 1 / sqrt(in), i.e. uniform(-1/sqrt(in), 1/sqrt(in)) with fan_in = in (A's second dim).
//!
//! Dropout draws from a stream the trainer sets per step (`set_dropout_stream`), so the masks of
//! a step depend only on the run's seed and the step: a resumed run draws the same masks.
//! Without a stream (evaluation, generation, reference log-probs) there is no dropout.

pub mod fold;
mod model;
pub mod peft_io;
pub mod spec;

use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::names::{layer_name, layer_tensor_shape};
use solar_engine::{ops, DType, Device, Rng, Tape, Tensor};
pub use spec::{parse_targets, LoraSpec, Target, ALL_TARGETS, DEFAULT_TARGETS};
use std::collections::HashMap;
use std::sync::Mutex;

/// The adapter names of target `t` in layer `l`: (A, B).
pub fn adapter_names(l: usize, t: Target) -> (String, String) {
    let m = layer_name(l, t.module());
    (format!("{m}.lora_A.weight"), format!("{m}.lora_B.weight"))
}

/// Every adapter tensor of `spec` on a model of `cfg`: (name, shape), layer by layer, each
/// target's A then B (PEFT's state-dict order).
pub fn adapter_shapes(spec: &LoraSpec, cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for l in 0..cfg.num_hidden_layers {
        for &t in &spec.targets {
            let w = layer_tensor_shape(cfg, &format!("{}.weight", t.module())).expect("a projection");
            let (a, b) = adapter_names(l, t);
            out.push((a, vec![spec.r, w[1]]));
            out.push((b, vec![w[0], spec.r]));
        }
    }
    out
}

pub struct Lora {
    pub spec: LoraSpec,
    names: Vec<String>,
    params: Vec<Tensor>,
    index: HashMap<String, usize>,
    /// Off: the model is its base (DPO's reference).
    enabled: bool,
    dropout: Mutex<Option<Rng>>,
}

impl Lora {
    /// Adapters from named tensors; every expected tensor must be there with its shape.
    pub fn new(spec: LoraSpec, cfg: &LlamaConfig, mut named: HashMap<String, Tensor>) -> Result<Lora> {
        spec.validate().map_err(ModelError::Msg)?;
        let origin = std::path::Path::new("adapter");
        let (mut names, mut params) = (Vec::new(), Vec::new());
        for (name, shape) in adapter_shapes(&spec, cfg) {
            let t = named.remove(&name).ok_or_else(|| ModelError::tensor(origin, &name, "missing"))?;
            if t.dims() != shape.as_slice() {
                let msg = format!("shape {:?}, expected {shape:?}", t.dims());
                return Err(ModelError::tensor(origin, &name, msg));
            }
            names.push(name);
            params.push(t.to_dtype(DType::F32)?);
        }
        if let Some(extra) = named.keys().next() {
            return Err(ModelError::tensor(origin, extra, "not an adapter of this spec and model"));
        }
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Ok(Lora { spec, names, params, index, enabled: true, dropout: Mutex::new(None) })
    }

    /// Fresh adapters as PEFT makes them (see the file header), drawn in state-dict order from
    /// one stream seeded by `seed`.
    pub fn init(spec: LoraSpec, cfg: &LlamaConfig, seed: u64) -> Result<Lora> {
        let mut rng = Rng::new(seed ^ 0x4C6F_5241_0000_0001);
        let named = adapter_shapes(&spec, cfg)
            .into_iter()
            .map(|(name, shape)| {
                let t = if name.ends_with("lora_A.weight") {
                    let bound = 1.0 / (shape[1] as f64).sqrt();
                    Tensor::rand_uniform(shape, -bound, bound, DType::F32, &mut rng)
                } else {
                    Tensor::zeros(shape, DType::F32)
                };
                (name, t)
            })
            .collect();
        Lora::new(spec, cfg, named)
    }

    /// Layer `l`'s adapters only (the same tensors, no copy), for a recomputed layer region
    /// (recompute.rs). Dropout is off in it: a region that is run twice must draw the same
    /// masks, so --recompute with --lora-dropout is refused up front.
    pub(crate) fn layer_view(&self, l: usize) -> Lora {
        let prefix = layer_name(l, "");
        let (names, params): (Vec<String>, Vec<Tensor>) = self
            .named_params()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(n, t)| (n.to_string(), t.clone()))
            .unzip();
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Lora {
            spec: self.spec.clone(),
            names,
            params,
            index,
            enabled: self.enabled,
            dropout: Mutex::new(None),
        }
    }

    pub fn named_params(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(&self.params)
    }

    pub fn named_params_mut(&mut self) -> impl Iterator<Item = (&str, &mut Tensor)> {
        self.names.iter().map(String::as_str).zip(self.params.iter_mut())
    }

    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.params[i])
    }

    pub(crate) fn move_to(&mut self, device: Device) -> Result<()> {
        for p in &mut self.params {
            p.move_to(device)?;
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn set_enabled(&mut self, on: bool) {
        self.enabled = on;
    }

    /// The stream dropout masks are drawn from while training; None turns dropout off.
    pub fn set_dropout_stream(&self, rng: Option<Rng>) {
        *self.dropout.lock().unwrap_or_else(|e| e.into_inner()) = rng;
    }

    /// The adapter term s * (dropout(x) A^T) B^T of target `t` in layer `l` for x [B, T, in]
    /// ([B, T, out]), or None when `t` is not adapted (or adapters are off). `dtype` is the
    /// compute dtype; A and B are watched on the tape, so their gradients come back by id.
    pub(crate) fn delta(
        &self,
        tape: Option<&Tape>,
        l: usize,
        t: Target,
        x: &Tensor,
        dtype: DType,
    ) -> Result<Option<Tensor>> {
        if !self.enabled || !self.spec.targets(t) {
            return Ok(None);
        }
        let (an, bn) = adapter_names(l, t);
        let get = |n: &str| -> Result<Tensor> {
            let p = self.param(n).ok_or_else(|| ModelError::Msg(format!("no adapter {n}")))?;
            let p = match tape {
                Some(tape) => tape.watch(p),
                None => p.clone(),
            };
            Ok(p.to_dtype(dtype)?)
        };
        let x = self.dropped(x)?;
        let xa = ops::matmul_t(&x, &get(&an)?, false, true)?; // [B, T, r]
        let xab = ops::matmul_t(&xa, &get(&bn)?, false, true)?; // [B, T, out]
        Ok(Some(ops::scale(&xab, self.spec.scaling())?))
    }

    /// x with inverted dropout applied (kept elements scaled by 1/(1-p)), when a stream is set.
    fn dropped(&self, x: &Tensor) -> Result<Tensor> {
        let p = self.spec.dropout;
        let mut guard = self.dropout.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rng) = guard.as_mut().filter(|_| p > 0.0) else { return Ok(x.clone()) };
        let keep = 1.0 / (1.0 - p);
        let mask: Vec<f32> =
            (0..x.elem_count()).map(|_| if rng.uniform() < p { 0.0 } else { keep as f32 }).collect();
        let mask = Tensor::from_vec(mask, x.dims())?.to_device(x.device())?.to_dtype(x.dtype())?;
        Ok(ops::mul(x, &mask)?)
    }

    /// W + s * B A for target `t` of layer `l`, f32 [out, in] (folding the adapter into W).
    pub fn fold(&self, l: usize, t: Target, w: &Tensor) -> Result<Tensor> {
        let (an, bn) = adapter_names(l, t);
        let (a, b) = match (self.param(&an), self.param(&bn)) {
            (Some(a), Some(b)) => (a.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?),
            _ => return Ok(w.clone()),
        };
        let ba = ops::matmul(&b, &a)?; // [out, in]
        Ok(ops::add(&w.to_dtype(DType::F32)?, &ops::scale(&ba, self.spec.scaling())?)?)
    }
}

//! The Llama/Mistral decoder on the engine's tape. Parameters are f32 tensors addressed by HF
//! names (names.rs); the forward is
//!   x = embed(ids)                                         [B, T, C]
//!   per layer: x += o_proj(attn(rope(q), rope(k), v))      q [B, T, H, D], k/v [B, T, Hkv, D]
//!              x += down(silu(gate(h)) * up(h))            h = rmsnorm(x), F wide
//!   h = rmsnorm(x); logits = h W^T (W = lm_head, or the embedding when tied)
//! The loss goes through the fused lm_head + cross-entropy, so a batch's logits never exist.
//! With a tape every parameter is watched (same id), so gradients come back keyed by it.
//! On CUDA the parameters stay f32 (the master weights the optimizer updates) and each use
//! casts them to bf16, so activations and matmuls run in bf16 while gradients arrive in f32
//! through the cast's backward and accumulate over micro-batches in f32.

use crate::checkpoint::{save_model, save_model_into, Checkpoint, OnBytes, WriteOptions, WriteReport};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::lora::{Lora, Target};
use crate::names::{self, parameter_shapes};
use solar_engine::ops::{self, AttentionMask, CrossEntropy};
use solar_engine::{DType, Device, Rng, Tape, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Token ids [B, T] (u32), a position per token (restarting at 0 per packed document) and
/// optional document ids [B, T] for packed rows.
#[derive(Clone, Debug)]
pub struct ModelInput {
    pub ids: Tensor,
    pub positions: Tensor,
    pub doc_ids: Option<Tensor>,
}

impl ModelInput {
    /// `b` rows of `t` tokens each, one sequence per row, positions 0..t.
    pub fn rows(ids: &[u32], b: usize, t: usize) -> Result<ModelInput> {
        let pos: Vec<u32> = (0..b * t).map(|i| (i % t) as u32).collect();
        Ok(ModelInput {
            ids: Tensor::from_vec(ids.to_vec(), [b, t])?,
            positions: Tensor::from_vec(pos, [b, t])?,
            doc_ids: None,
        })
    }
    pub fn batch(&self) -> usize {
        self.ids.dims()[0]
    }
    pub fn seq_len(&self) -> usize {
        self.ids.dims()[1]
    }
}

pub struct Llama {
    pub config: LlamaConfig,
    pub(crate) names: Vec<String>,
    pub(crate) params: Vec<Tensor>,
    pub(crate) index: HashMap<String, usize>,
    /// LoRA adapters; with them the parameters above are frozen (lora/model.rs).
    pub(crate) lora: Option<Lora>,
    /// Activation recompute (recompute.rs): a run setting, not part of the checkpoint.
    pub(crate) recompute: bool,
}

impl Llama {
    /// A model from named f32 tensors; every expected tensor must be there with its shape.
    pub fn new(config: LlamaConfig, mut named: HashMap<String, Tensor>) -> Result<Llama> {
        let origin = Path::new("model");
        let mut names = Vec::new();
        let mut params = Vec::new();
        for (name, shape) in parameter_shapes(&config) {
            let t = named.remove(&name).ok_or_else(|| ModelError::tensor(origin, &name, "missing"))?;
            if t.dims() != shape.as_slice() {
                return Err(ModelError::tensor(
                    origin,
                    &name,
                    format!("shape {:?}, expected {shape:?}", t.dims()),
                ));
            }
            names.push(name);
            params.push(t.to_dtype(DType::F32)?);
        }
        if let Some(extra) = named.keys().next() {
            return Err(ModelError::tensor(origin, extra, "not a parameter of this architecture"));
        }
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Ok(Llama { config, names, params, index, lora: None, recompute: false })
    }

    /// Random initialization as transformers does it: N(0, initializer_range) for matrices and
    /// embeddings, norms at 1. Tensors are drawn in HF order from one seeded stream.
    pub fn init(config: LlamaConfig, seed: u64) -> Result<Llama> {
        let mut rng = Rng::new(seed);
        let std = config.initializer_range;
        let named = parameter_shapes(&config)
            .into_iter()
            .map(|(name, shape)| {
                let t = if names::is_norm(&name) {
                    Tensor::ones(shape, DType::F32)
                } else {
                    Tensor::randn(shape, std, DType::F32, &mut rng)
                };
                (name, t)
            })
            .collect();
        Llama::new(config, named)
    }

    /// Loads an HF model folder (config.json + safetensors, single or sharded, f32/bf16/f16);
    /// weights become f32 for the CPU.
    pub fn load(dir: &Path) -> Result<Llama> {
        Llama::load_reporting(dir, &OnBytes::none())
    }

    /// `load`, telling `on_bytes` (done, total) as the parameters' bytes are read (a progress
    /// bar for big models).
    pub fn load_reporting(dir: &Path, on_bytes: &OnBytes) -> Result<Llama> {
        let ck = Checkpoint::open(dir)?;
        ck.validate()?;
        let named = ck.load_parameters(on_bytes)?;
        Llama::new(ck.config().clone(), named)
    }

    /// config.json of a model folder, without loading weights.
    pub fn load_config(dir: &Path) -> Result<LlamaConfig> {
        LlamaConfig::from_file(&dir.join("config.json"))
    }

    /// Writes the model as an HF folder (atomically), copying tokenizer files from `copy_from`.
    pub fn save(&self, out: &Path, opts: &WriteOptions, copy_from: Option<&Path>) -> Result<WriteReport> {
        let named: Vec<(String, Tensor)> =
            self.named_params().map(|(n, t)| (n.to_string(), t.clone())).collect();
        save_model(out, &self.config, &named, opts, copy_from)
    }

    /// Writes the model's files into `dir`, a folder the caller stages and puts in place itself;
    /// errors name the files as they will be known in `shown`.
    pub fn save_into(
        &self,
        dir: &Path,
        shown: &Path,
        opts: &WriteOptions,
        copy_from: Option<&Path>,
    ) -> Result<WriteReport> {
        let named: Vec<(String, Tensor)> =
            self.named_params().map(|(n, t)| (n.to_string(), t.clone())).collect();
        save_model_into(dir, shown, &self.config, &named, opts, copy_from)
    }

    /// Turns activation recompute on or off for forwards with a tape (recompute.rs).
    pub fn set_recompute(&mut self, on: bool) {
        self.recompute = on;
    }

    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.index.get(name).map(|&i| &self.params[i])
    }

    /// (name, tensor) in HF order.
    pub fn named_params(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(&self.params)
    }

    /// (name, tensor) in HF order, for the optimizer.
    pub fn named_params_mut(&mut self) -> impl Iterator<Item = (&str, &mut Tensor)> {
        self.names.iter().map(String::as_str).zip(self.params.iter_mut())
    }

    /// Where the parameters live.
    pub fn device(&self) -> Device {
        self.params.first().map_or(Device::Cpu, |p| p.device())
    }

    /// The model with every parameter moved to `device` (f32 there too; see the file header),
    /// keeping each parameter's id so optimizer state keyed by it still applies.
    pub fn to_device(mut self, device: Device) -> Result<Llama> {
        for p in &mut self.params {
            p.move_to(device)?;
        }
        if let Some(lora) = &mut self.lora {
            lora.move_to(device)?;
        }
        self.freeze_base()?;
        Ok(self)
    }

    /// The dtype activations are computed in: f32 on the CPU (f64 for a model cast to f64 by
    /// `to_f64_for_checks`), bf16 on CUDA.
    pub fn compute_dtype(&self) -> DType {
        if self.device().is_cuda() {
            DType::BF16
        } else if self.params.first().is_some_and(|p| p.dtype() == DType::F64) {
            DType::F64
        } else {
            DType::F32
        }
    }

    /// `t` (positions and document masks, built on the host and read by every layer) on the
    /// model's device, uploaded once per forward.
    pub(crate) fn on_device(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_device(self.device())?)
    }

    /// An activation made on the host (f32) in the model's device and compute dtype.
    pub(crate) fn activation(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.to_device(self.device())?.to_dtype(self.compute_dtype())?)
    }

    pub(crate) fn w(&self, tape: Option<&Tape>, name: &str) -> Result<Tensor> {
        let t = self.param(name).ok_or_else(|| ModelError::Msg(format!("no parameter {name}")))?;
        // With adapters the base is frozen: never on the tape, so it gets no gradient.
        let t = match tape {
            Some(tape) if self.lora.is_none() => tape.watch(t),
            _ => t.clone(),
        };
        Ok(t.to_dtype(self.compute_dtype())?)
    }

    /// The output projection: lm_head, or the embedding when tied.
    pub(crate) fn head(&self, tape: Option<&Tape>) -> Result<Tensor> {
        self.w(tape, if self.config.tie_word_embeddings { names::EMBED } else { names::LM_HEAD })
    }

    /// Hidden states after the final norm: [B, T, C].
    pub fn hidden(&self, tape: Option<&Tape>, input: &ModelInput) -> Result<Tensor> {
        let x = self.residual(tape, input, |_| ())?;
        Ok(ops::rmsnorm(&x, &self.w(tape, names::FINAL_NORM)?, self.config.rms_norm_eps)?)
    }

    /// The residual stream without a tape, [B, T, C] each: the embedding output, then the
    /// output of every block (L+1 tensors; no final norm). For layer-similarity analysis.
    /// They come back as f32 on the CPU whatever the model's device.
    pub fn layer_hiddens(&self, input: &ModelInput) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.config.num_hidden_layers + 1);
        let mut failed = None;
        self.residual(None, input, |x| {
            match x.to_dtype(DType::F32).and_then(|x| x.to_device(Device::Cpu)) {
                Ok(x) => out.push(x),
                Err(e) => failed = Some(e),
            }
        })?;
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(out),
        }
    }

    /// Embedding and every block; `each` sees the stream after the embedding and after each
    /// block. Returns the last block's output (before the final norm).
    fn residual(
        &self,
        tape: Option<&Tape>,
        input: &ModelInput,
        mut each: impl FnMut(&Tensor),
    ) -> Result<Tensor> {
        let doc_ids = input.doc_ids.as_ref().map(|d| self.on_device(d)).transpose()?;
        let mask = AttentionMask { doc_ids, window: self.config.sliding_window };
        let positions = self.on_device(&input.positions)?;
        // Ids and targets stay on the host: the ops validate them there and upload them once.
        let mut x = ops::embedding(&input.ids, &self.w(tape, names::EMBED)?)?;
        each(&x);
        for l in 0..self.config.num_hidden_layers {
            x = if self.recompute && tape.is_some() {
                self.checkpointed_block(tape, l, &x, &positions, &mask)?
            } else {
                self.block(tape, l, &x, &positions, |_, q, k, v| Ok(ops::attention(q, k, v, &mask)?))?
            };
            each(&x);
        }
        Ok(x)
    }

    /// Decoder block `l` on the residual stream x [B, T, C] at `positions` [B, T]. `attend(l, q,
    /// k, v)` gets the rotated q [B, T, H, D] and k, v [B, T, Hkv, D] and returns [B, T, H, D]:
    /// masked attention when training, the KV cache when generating.
    pub(crate) fn block(
        &self,
        tape: Option<&Tape>,
        l: usize,
        x: &Tensor,
        positions: &Tensor,
        mut attend: impl FnMut(usize, &Tensor, &Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let (b, t) = (x.dims()[0], x.dims()[1]);
        let (h, hkv, d) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim);
        let name = |s: &str| names::layer_name(l, s);
        let lin = |x: &Tensor, suffix: &str| -> Result<Tensor> {
            let y = ops::matmul_t(x, &self.w(tape, &name(suffix))?, false, true)?;
            let t = Target::of_weight_suffix(suffix).expect("a projection");
            match self.lora.as_ref().map(|a| a.delta(tape, l, t, x, self.compute_dtype())).transpose()? {
                Some(Some(d)) => Ok(ops::add(&y, &d)?),
                _ => Ok(y),
            }
        };
        let hn = ops::rmsnorm(x, &self.w(tape, &name("input_layernorm.weight"))?, cfg.rms_norm_eps)?;
        let q = lin(&hn, "self_attn.q_proj.weight")?.reshape([b, t, h, d])?;
        let k = lin(&hn, "self_attn.k_proj.weight")?.reshape([b, t, hkv, d])?;
        let v = lin(&hn, "self_attn.v_proj.weight")?.reshape([b, t, hkv, d])?;
        let q = ops::rope(&q, positions, cfg.rope_theta)?;
        let k = ops::rope(&k, positions, cfg.rope_theta)?;
        let a = attend(l, &q, &k, &v)?.reshape([b, t, h * d])?;
        let x = ops::add(x, &lin(&a, "self_attn.o_proj.weight")?)?;
        let hn =
            ops::rmsnorm(&x, &self.w(tape, &name("post_attention_layernorm.weight"))?, cfg.rms_norm_eps)?;
        let gate = lin(&hn, "mlp.gate_proj.weight")?;
        let up = lin(&hn, "mlp.up_proj.weight")?;
        Ok(ops::add(&x, &lin(&ops::swiglu(&gate, &up)?, "mlp.down_proj.weight")?)?)
    }

    /// Logits [B, T, V] in f32 (inference and tests; training uses `loss`). On CUDA they come
    /// back to the CPU, where the inference code that reads them runs.
    pub fn logits(&self, tape: Option<&Tape>, input: &ModelInput) -> Result<Tensor> {
        let hidden = self.hidden(tape, input)?;
        let logits = ops::matmul_t(&hidden, &self.head(tape)?, false, true)?;
        Ok(logits.to_dtype(DType::F32)?.to_device(Device::Cpu)?)
    }

    /// Per-sequence summed log-probs of `targets` [B, T] (i32, -100 not counted), computed on
    /// the model's device through the fused lm_head + log-prob op (the logits [B, T, V] never
    /// exist, only one tile of them) and returned on the CPU (DPO's small loss head runs
    /// there; the move is on the tape, so gradients flow back).
    pub fn sequence_logprobs(
        &self,
        tape: Option<&Tape>,
        input: &ModelInput,
        targets: &Tensor,
    ) -> Result<ops::SequenceLogProbs> {
        let hidden = self.hidden(tape, input)?; // [B, T, C]
        let lp = ops::linear_sequence_logprobs(&hidden, &self.head(tape)?, targets)?;
        Ok(ops::SequenceLogProbs { logps: lp.logps.to_device(Device::Cpu)?, counts: lp.counts })
    }

    /// Summed cross-entropy against `targets` [B, T] (i32, -100 ignored) and the count of
    /// counted tokens, through the fused lm_head + cross-entropy.
    pub fn loss(&self, tape: Option<&Tape>, input: &ModelInput, targets: &Tensor) -> Result<CrossEntropy> {
        let hidden = self.hidden(tape, input)?;
        let rows = input.batch() * input.seq_len();
        let h2 = hidden.reshape([rows, self.config.hidden_size])?;
        Ok(ops::linear_cross_entropy(&h2, &self.head(tape)?, &targets.reshape([rows])?)?)
    }
}

/// Next-token targets for rows of ids [B, T]: target[t] = ids[t+1], the last of each row -100.
pub fn next_token_targets(ids: &[u32], b: usize, t: usize) -> Vec<i32> {
    (0..b * t).map(|i| if i % t == t - 1 { ops::IGNORE_INDEX as i32 } else { ids[i + 1] as i32 }).collect()
}

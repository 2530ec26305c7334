//! A training step's memory, estimated from config.json and the flags before anything is
//! allocated, so a run that cannot fit is refused in a second with the numbers and what to
//! change, instead of dying in the OOM killer (or an allocation abort) minutes in.
//!
//! What a step holds (P parameters, N = rows x seq_len tokens of one micro-batch):
//!   CPU:  weights, gradients and both AdamW moments in f32: 16 P bytes.
//!   CUDA: bf16 weights and gradients, f32 master weights and moments: 16 P bytes too
//!         (2 + 2 + 4 + 8), laid out differently.
//!   Activations the tape keeps per token and layer (f32 on the CPU, bf16 on CUDA): the layer
//!   input, both normed inputs, q/k/v and their rotated copies, the attention output and its
//!   logsumexp, the MLP's gate, up and product, and the residual sums; plus one layer's
//!   working set during backward and the fused cross-entropy's logits tile. Logits over the
//!   whole vocabulary are never held (linear_cross_entropy), so the vocabulary only counts
//!   through the weights.
//!   With --recompute (`Plan::recompute`) a layer keeps only its input [B, T, C] across the
//!   step; its internals exist for one layer at a time, while that layer's backward reruns it.
//!   With LoRA (`Plan::trainable`: the adapters' parameter count) gradients and optimizer
//!   state cover the trainable parameters only; the frozen base costs its weights alone.
//! It is an estimate from below (allocator slack, the data and the tokenizer come on top),
//! so a run it refuses would certainly not have fit. tests hold it to the engine's own count
//! of what it allocated (solar_engine::alloc_stats) on a small model.
//!
//! Every product is checked: a config or flag whose sizes overflow 64 bits is refused here
//! with the field named, not wrapped into a small number.

use solar_engine::Device;
use solar_model::lora::LoraSpec;
use solar_model::names::layer_tensor_shape;
use solar_model::LlamaConfig;

/// Bytes of one training step, by part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepMemory {
    pub weights: u64,
    pub gradients: u64,
    /// AdamW moments and, on CUDA, the f32 master weights.
    pub optimizer: u64,
    pub activations: u64,
    /// Buffers inside ops that are no tensor (the fused cross-entropy's logits tiles): held
    /// by the process but not in the engine's tensor count (solar_engine::alloc_stats).
    pub scratch: u64,
}

impl StepMemory {
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.gradients)
            .saturating_add(self.optimizer)
            .saturating_add(self.activations)
            .saturating_add(self.scratch)
    }

    /// What the engine counts as tensors: everything but op scratch.
    pub fn tensors(&self) -> u64 {
        self.total().saturating_sub(self.scratch)
    }

    /// "1.2 GiB (weights 200 MiB, gradients ..., optimizer ..., activations ...)".
    pub fn describe(&self) -> String {
        format!(
            "{} (weights {}, gradients {}, optimizer {}, activations {}, op scratch {})",
            gib(self.total()),
            gib(self.weights),
            gib(self.gradients),
            gib(self.optimizer),
            gib(self.activations),
            gib(self.scratch)
        )
    }
}

/// Bytes as MiB or GiB, one decimal.
pub fn gib(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    }
}

/// The fused cross-entropy's tile: at most 4M f32 logits (fewer when a micro-batch's whole
/// logits are fewer), twice (forward and backward).
const CE_TILE_LOGITS: u64 = 4 << 20;

fn mul(a: u64, b: u64, what: &str) -> Result<u64, String> {
    a.checked_mul(b).ok_or_else(|| format!("{what} overflows 64 bits"))
}
fn add(a: u64, b: u64, what: &str) -> Result<u64, String> {
    a.checked_add(b).ok_or_else(|| format!("{what} overflows 64 bits"))
}

/// How a run trains, beyond the model's shape and the batch: what changes its memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Activation recompute (--recompute): each layer keeps only its input on the tape.
    pub recompute: bool,
    /// Parameters that train: gradients and optimizer state cover these. None: all of them (a
    /// full fine-tune). The hook for LoRA: its adapters' parameter count goes here, and their
    /// weights (f32 on both devices) come on top of the frozen base's.
    pub trainable: Option<u64>,
    /// What LoRA adds to the activations each layer saves, per token (elements): per adapted
    /// projection x A^T [r], its product with B^T and that scaled [2 x out], and with dropout
    /// the dropped input and its mask [2 x in].
    pub adapter_acts: u64,
}

impl Plan {
    /// The plan of a run: recompute or not, and with LoRA the adapters' parameter count,
    /// r x (in + out) per adapted projection per layer (saturating: an absurd config then
    /// simply does not fit).
    pub fn of_run(recompute: bool, lora: Option<&LoraSpec>, cfg: &LlamaConfig) -> Plan {
        let Some(spec) = lora else { return Plan { recompute, ..Default::default() } };
        let (mut params, mut acts) = (0u64, 0u64);
        for t in &spec.targets {
            let w = layer_tensor_shape(cfg, &format!("{}.weight", t.module())).unwrap_or_default();
            let (out, inp) = (w.first().copied().unwrap_or(0) as u64, w.get(1).copied().unwrap_or(0) as u64);
            let r = spec.r as u64;
            params = params.saturating_add(r.saturating_mul(out.saturating_add(inp)));
            let dropped = if spec.dropout > 0.0 { inp.saturating_mul(2) } else { 0 };
            acts = acts.saturating_add(r.saturating_add(out.saturating_mul(2)).saturating_add(dropped));
        }
        let trainable = Some(params.saturating_mul(cfg.num_hidden_layers as u64));
        Plan { recompute, trainable, adapter_acts: acts }
    }
}

/// A step's memory for micro-batches of `rows` sequences of `seq_len` tokens on `device`.
/// (DPO passes twice its batch: a chosen and a rejected row per pair.)
pub fn estimate_step(
    cfg: &LlamaConfig,
    rows: usize,
    seq_len: usize,
    device: Device,
) -> Result<StepMemory, String> {
    estimate_plan(cfg, rows, seq_len, device, Plan::default())
}

/// `estimate_step` for a run trained as `plan` says.
pub fn estimate_plan(
    cfg: &LlamaConfig,
    rows: usize,
    seq_len: usize,
    device: Device,
    plan: Plan,
) -> Result<StepMemory, String> {
    let p = cfg.checked_num_parameters().map_err(|(field, msg)| format!("config.json {field}: {msg}"))?;
    let (weight, grad, optim, act) = match device {
        Device::Cpu => (4, 4, 8, 4),
        Device::Cuda(_) => (2, 2, 12, 2),
    };
    let (c, f) = (cfg.hidden_size as u64, cfg.intermediate_size as u64);
    let q = (cfg.num_attention_heads * cfg.head_dim) as u64;
    let kv = (cfg.num_key_value_heads * cfg.head_dim) as u64;
    let what = "activations (--batch x --seq-len x the model's widths)";
    let tokens = mul(rows as u64, seq_len as u64, "--batch x --seq-len")?;
    // Saved per token and layer: x, two normed inputs, residual sums (5C); q, rotated q,
    // attention output (3q); k, v, rotated k (3kv); gate, up, product (3F); logsumexp (H).
    let per_layer = [5 * c, 3 * q, 3 * kv, 3 * f, cfg.num_attention_heads as u64, plan.adapter_acts]
        .into_iter()
        .try_fold(0u64, |a, b| a.checked_add(b))
        .ok_or_else(|| format!("{what} overflows 64 bits"))?;
    let layers = cfg.num_hidden_layers as u64;
    let kept = if plan.recompute {
        // Every layer's input, plus the internals of the one layer being recomputed.
        add(add(mul(layers, c, what)?, per_layer, what)?, 3 * c, what)?
    } else {
        add(mul(layers, per_layer, what)?, 3 * c, what)?
    };
    // Backward holds one layer's gradients of those at a time, in f32.
    let working = mul(add(per_layer, c, what)?, 4, what)?;
    let per_token = add(mul(kept, act, what)?, working, what)?;
    let activations = mul(tokens, per_token, what)?;
    let scratch = 2 * 4 * CE_TILE_LOGITS.min(tokens.saturating_mul(cfg.vocab_size as u64));
    let (trained, grad, optim, adapters) = match plan.trainable {
        None => (p, grad, optim, 0),
        // LoRA: f32 adapters beside the frozen base on both devices (no separate master):
        // 4 bytes of weight, 4 of gradient and 8 of moments each.
        Some(t) => (t, 4, 8, mul(t, 4, "adapter bytes")?),
    };
    Ok(StepMemory {
        weights: add(mul(p, weight, "parameter bytes")?, adapters, "parameter bytes")?,
        gradients: mul(trained, grad, "gradient bytes")?,
        optimizer: mul(trained, optim, "optimizer bytes")?,
        activations,
        scratch,
    })
}

/// Memory a run may use on `device`, where it can be known: `SOLAR_MEMORY_LIMIT` (bytes; a
/// cap a user or a test sets), else MemAvailable from /proc/meminfo for the CPU. CUDA's free
/// memory comes from the driver (`cuda_free`), where one is loaded; None means unknown, and
/// the run goes ahead.
pub fn available(device: Device, cuda_free: impl FnOnce(usize) -> Option<u64>) -> Option<u64> {
    if let Some(limit) = std::env::var("SOLAR_MEMORY_LIMIT").ok().and_then(|s| s.trim().parse().ok()) {
        return Some(limit);
    }
    match device {
        Device::Cpu => std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| mem_available(&t)),
        Device::Cuda(ordinal) => cuda_free(ordinal),
    }
}

/// MemAvailable of a /proc/meminfo text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Ok when a step of `rows` x `seq_len` fits in `available` bytes (or nothing is known);
/// otherwise the estimate and the flags that would make it fit.
pub fn check_fits(
    cfg: &LlamaConfig,
    rows: usize,
    seq_len: usize,
    device: Device,
    plan: Plan,
    available: Option<u64>,
) -> Result<StepMemory, String> {
    let needed = estimate_plan(cfg, rows, seq_len, device, plan)
        .map_err(|e| format!("cannot size a training step: {e}; lower --batch or --seq-len"))?;
    let Some(avail) = available else { return Ok(needed) };
    if needed.total() <= avail {
        return Ok(needed);
    }
    let fixed = needed.total() - needed.activations;
    let advice = if fixed >= avail {
        format!(
            "the model's weights, gradients and optimizer state alone need {}: this model cannot be trained on this machine",
            gib(fixed)
        )
    } else {
        let room = (avail - fixed) as f64 / needed.activations.max(1) as f64;
        format!(
            "activations must shrink about {:.0}x: lower --batch (keep the step the same size with \
             --grad-accum) or --seq-len{}",
            (1.0 / room).ceil().max(2.0),
            if plan.recompute { "" } else { ", or add --recompute" }
        )
    };
    Err(format!(
        "a training step needs about {} but {} is available on {device}: {advice}",
        needed.describe(),
        gib(avail),
    ))
}

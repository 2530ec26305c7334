//! What a LoRA run adds to the trainer: the adapters attached to the loaded base, the spec in the
//! run's resume identity (a checkpoint of other adapters, or of a full fine-tune, does not
//! resume), the per-step dropout stream (derived from the seed and the step, so a resumed run
//! draws the masks an uninterrupted one would), and the adapter's place in checkpoints and in
//! OUT: PEFT's adapter folder instead of a model.

use crate::error::{Result, TrainError};
use serde_json::{json, Map, Value};
use solar_engine::Rng;
use solar_model::checkpoint::SafeDType;
use solar_model::lora::peft_io::{load_adapter, save_adapter_into};
use solar_model::lora::{Lora, LoraSpec};
use solar_model::names::layer_tensor_shape;
use solar_model::{Llama, LlamaConfig};
use std::path::Path;

/// The adapter's folder inside a checkpoint (beside `model/`, which a LoRA checkpoint lacks).
pub const CHECKPOINT_ADAPTER: &str = "adapter";

/// `model` with fresh adapters of `spec` (seeded by the run's seed), or unchanged without one.
pub fn attach(model: Llama, spec: Option<&LoraSpec>, seed: u64) -> Result<Llama> {
    let Some(spec) = spec else { return Ok(model) };
    spec.validate().map_err(TrainError::Msg)?;
    let lora = Lora::init(spec.clone(), &model.config, seed)?;
    Ok(model.with_lora(lora)?)
}

/// Refuses, before any work, a rank above the smallest dimension of an adapted projection of
/// the model in `dir` (B A could not have that rank; the adapters would only waste memory).
pub fn check_rank(spec: Option<&LoraSpec>, cfg: &LlamaConfig, dir: &Path) -> Result<()> {
    let Some(spec) = spec else { return Ok(()) };
    for &t in &spec.targets {
        let shape = layer_tensor_shape(cfg, &format!("{}.weight", t.module())).unwrap_or_default();
        if let Some(&dim) = shape.iter().min().filter(|&&d| spec.r > d) {
            return Err(TrainError::file(
                dir,
                format!("--lora-r {} exceeds {t}'s smaller dimension {dim}: choose r <= {dim}", spec.r),
            ));
        }
    }
    Ok(())
}

/// Resume-identity keys of the model's adapters (none without).
pub fn identity(model: &Llama) -> Map<String, Value> {
    let Some(l) = model.lora() else { return Map::new() };
    let s = &l.spec;
    [
        ("lora.r", json!(s.r)),
        ("lora.alpha", json!(s.alpha)),
        ("lora.dropout", json!(s.dropout)),
        ("lora.targets", json!(s.target_names())),
        ("lora.rslora", json!(s.rslora)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Sets (or clears, with None) the dropout stream of 0-based `step`.
pub fn set_dropout_step(model: &Llama, seed: u64, step: Option<usize>) {
    if let Some(l) = model.lora() {
        let stream = step
            .map(|s| Rng::new(seed ^ 0xD50F_0000_0000_0000 ^ (s as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        l.set_dropout_stream(stream);
    }
}

/// Writes the adapters (f32, exact) into the checkpoint being staged in `stage`.
pub fn save_in_checkpoint(lora: &Lora, stage: &Path, shown: &Path) -> Result<()> {
    let dir = stage.join(CHECKPOINT_ADAPTER);
    std::fs::create_dir(&dir).map_err(|e| TrainError::file(&dir, format!("cannot create: {e}")))?;
    save_adapter_into(lora, &dir, &shown.join(CHECKPOINT_ADAPTER), "", SafeDType::F32, None)?;
    Ok(())
}

/// The model a checkpoint resumes: `base` with the checkpoint's adapters in place of its fresh
/// ones, or the checkpoint's full model. A checkpoint of the other kind is refused.
pub fn resume_model(dir: &Path, base: Llama) -> Result<Llama> {
    let adapter = dir.join(CHECKPOINT_ADAPTER);
    match (adapter.is_dir(), base.lora().is_some()) {
        (true, true) => {
            let device = base.device();
            let mut base = base;
            base.take_lora();
            let lora = load_adapter(&adapter, &base.config)?;
            Ok(base.with_lora(lora)?.to_device(device)?)
        }
        (false, false) => {
            drop(base);
            Ok(crate::byte_bar::load_llama(&dir.join("model"))?)
        }
        (true, false) => Err(TrainError::file(
            dir,
            "cannot resume: the checkpoint holds LoRA adapters, but this run has no --lora-r",
        )),
        (false, true) => Err(TrainError::file(
            dir,
            "cannot resume: the checkpoint holds a full fine-tune, but this run trains LoRA adapters",
        )),
    }
}

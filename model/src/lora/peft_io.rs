//! Adapters in PEFT's on-disk format, both ways: a folder with adapter_config.json (the LoRA
//! config: r, lora_alpha, lora_dropout, target_modules, use_rslora, peft_type "LORA", ...) and
//! adapter_model.safetensors, whose keys are the adapted modules' state-dict names under PEFT's
//! `base_model.model.` prefix without the adapter name ("default"), e.g.
//! `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight` ([r, in]; lora_B [out, r]).
//! Writing stages the folder and renames it into place (checkpoint::atomic). Reading refuses,
//! naming the file and field, what Solar's LoRA does not do (DoRA, biases, per-layer ranks,
//! layer subsets, extra trained modules, regex targets) rather than load it wrongly.

use super::spec::{parse_targets, LoraSpec};
use super::Lora;
use crate::checkpoint::{copy_through, decode_f32, encode_f32, write_synced, SafeDType, StagingDir};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use serde_json::{json, Value};
use solar_engine::{DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// What PEFT puts before a module's state-dict name (PeftModel.base_model.model).
pub const PEFT_PREFIX: &str = "base_model.model.";

/// adapter_config.json for `spec`. Fields Solar has no use for keep PEFT's defaults, so PEFT
/// reads the file as the LoRA Solar trained.
pub fn adapter_config(spec: &LoraSpec, base: &str) -> Value {
    json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": spec.r,
        // PEFT's lora_alpha is usually an integer; write it as one when it is.
        "lora_alpha": if spec.alpha.fract() == 0.0 && spec.alpha.abs() < 1e15 { json!(spec.alpha as i64) } else { json!(spec.alpha) },
        "lora_dropout": spec.dropout,
        "target_modules": spec.target_names(),
        "use_rslora": spec.rslora,
        "bias": "none",
        "fan_in_fan_out": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "use_dora": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null,
    })
}

/// Writes the adapter's two files into `dir` (a folder the caller stages), stored as `dtype`,
/// with the tokenizer files of `copy_from` beside them as PEFT's save_pretrained leaves a
/// tokenizer saved with it. Errors name the files as they will be known in `shown`.
pub fn save_adapter_into(
    lora: &Lora,
    dir: &Path,
    shown: &Path,
    base: &str,
    dtype: SafeDType,
    copy_from: Option<&Path>,
) -> Result<()> {
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in lora.named_params() {
        let mut bytes = Vec::new();
        encode_f32(&t.to_dtype(DType::F32)?.to_vec::<f32>()?, dtype, &mut bytes);
        buffers.push((format!("{PEFT_PREFIX}{name}"), t.dims().to_vec(), bytes));
    }
    let views = buffers
        .iter()
        .map(|(n, shape, bytes)| {
            safetensors::tensor::TensorView::new(dtype.to_safetensors(), shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| ModelError::tensor(shown, n, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| ModelError::file(&shown.join(ADAPTER_WEIGHTS), e.to_string()))?;
    write_synced(&dir.join(ADAPTER_WEIGHTS), &bytes)?;
    let cfg = serde_json::to_string_pretty(&adapter_config(&lora.spec, base)).unwrap_or_default();
    write_synced(&dir.join(ADAPTER_CONFIG), cfg.as_bytes())?;
    if let Some(from) = copy_from {
        copy_through(from, dir)?;
    }
    Ok(())
}

/// Writes the adapter as a folder `out`, atomically (staged beside it, then renamed).
pub fn save_adapter(
    lora: &Lora,
    out: &Path,
    base: &str,
    dtype: SafeDType,
    overwrite: bool,
    copy_from: Option<&Path>,
) -> Result<()> {
    let stage = StagingDir::create(out, overwrite)?;
    save_adapter_into(lora, stage.path(), out, base, dtype, copy_from)?;
    stage.commit()
}

/// Whether `dir` holds an adapter rather than a model.
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file()
}

/// Reads adapter_config.json into a spec, refusing what Solar cannot apply.
pub fn read_spec(dir: &Path) -> Result<LoraSpec> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, "cannot read", e))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| ModelError::file(&path, format!("not valid JSON: {e}")))?;
    let field = |f: &str, msg: &str| ModelError::field(&path, f, msg.to_string());
    if v["peft_type"].as_str() != Some("LORA") {
        return Err(field("peft_type", "must be \"LORA\" (Solar reads LoRA adapters only)"));
    }
    let r = v["r"].as_u64().filter(|&r| r > 0).ok_or_else(|| field("r", "must be a positive integer"))?;
    let alpha = v["lora_alpha"].as_f64().ok_or_else(|| field("lora_alpha", "must be a number"))?;
    let dropout = v["lora_dropout"].as_f64().unwrap_or(0.0);
    let rslora = v["use_rslora"].as_bool().unwrap_or(false);
    let unsupported: [(&str, bool); 7] = [
        ("use_dora", v["use_dora"].as_bool().unwrap_or(false)),
        ("bias", v["bias"].as_str().is_some_and(|b| b != "none")),
        ("fan_in_fan_out", v["fan_in_fan_out"].as_bool().unwrap_or(false)),
        ("modules_to_save", !v["modules_to_save"].is_null() && v["modules_to_save"] != json!([])),
        ("layers_to_transform", !v["layers_to_transform"].is_null()),
        ("rank_pattern", v["rank_pattern"].as_object().is_some_and(|m| !m.is_empty())),
        ("alpha_pattern", v["alpha_pattern"].as_object().is_some_and(|m| !m.is_empty())),
    ];
    if let Some((f, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(field(f, "is set, which Solar's LoRA does not support"));
    }
    // PEFT matches a target by the module path's last part; PEFT 0.22 writes `all-linear` out as
    // full paths (`model.layers.0.self_attn.q_proj`), which name the same modules. A layer that
    // lacks one of them shows up as a missing tensor when the weights load.
    let targets = match &v["target_modules"] {
        Value::String(s) => parse_targets(s),
        Value::Array(a) => {
            let names: Option<Vec<&str>> =
                a.iter().map(|n| n.as_str().map(|n| n.rsplit('.').next().unwrap_or(n))).collect();
            names.ok_or_else(|| "must be module names".to_string()).and_then(|n| parse_targets(&n.join(",")))
        }
        _ => Err("must be a list of module names".to_string()),
    }
    .map_err(|e| field("target_modules", &e.replace("--lora-targets: ", "")))?;
    let spec = LoraSpec { r: r as usize, alpha, dropout, targets, rslora };
    spec.validate().map_err(|e| ModelError::file(&path, e.replace("--lora-", "lora_")))?;
    Ok(spec)
}

/// Loads the adapter folder `dir` for a model of `cfg`: every tensor PEFT's keys name must be
/// one of the spec's adapters with its shape, and every adapter must be there.
pub fn load_adapter(dir: &Path, cfg: &LlamaConfig) -> Result<Lora> {
    let spec = read_spec(dir)?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let bytes = std::fs::read(&path).map_err(|e| ModelError::io(&path, "cannot read", e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| ModelError::file(&path, format!("not a safetensors file: {e}")))?;
    let mut named = HashMap::new();
    for (key, view) in st.tensors() {
        let name = key
            .strip_prefix(PEFT_PREFIX)
            .ok_or_else(|| ModelError::tensor(&path, &key, format!("does not start with {PEFT_PREFIX}")))?;
        let dtype = SafeDType::from_safetensors(view.dtype())
            .ok_or_else(|| ModelError::tensor(&path, &key, "dtype must be f32, bf16 or f16"))?;
        let mut data = Vec::new();
        decode_f32(dtype, view.data(), &mut data);
        named.insert(name.to_string(), Tensor::from_vec(data, view.shape().to_vec())?);
    }
    Lora::new(spec, cfg, named).map_err(|e| match e {
        ModelError::Tensor { tensor, msg, .. } => {
            ModelError::tensor(&path, &format!("{PEFT_PREFIX}{tensor}"), msg)
        }
        other => ModelError::file(&path, other.to_string()),
    })
}

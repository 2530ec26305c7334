//! Resumable training checkpoints: OUT/checkpoints/step-NNNNNN/ holds the weights (an HF
//! folder in f32, so they reload exactly), the AdamW moments (optimizer.safetensors, m.NAME and
//! v.NAME in f32) and trainer_state.json (step, counters, and the run's identity: settings and
//! data fingerprint). A LoRA run's checkpoint holds its adapters (adapter/, PEFT's format in
//! f32) instead of the model, and the moments of the adapters only. Each checkpoint is staged in a temporary folder and renamed into place,
//! so a run killed while writing leaves the previous checkpoint as the newest complete one.

use super::adapters;
use crate::error::{Result, TrainError};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use solar_engine::optim::adamw::Moments;
use solar_engine::optim::AdamW;
use solar_engine::Tensor;
use solar_model::checkpoint::{write_synced, StagingDir, WriteOptions};
use solar_model::output::fs_step;
use solar_model::output::place::temp_path;
use solar_model::Llama;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// What a checkpoint records besides tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Steps skipped for NaN/Inf so far, and how many of the latest were in a row.
    pub bad_steps: usize,
    pub bad_in_a_row: usize,
    /// Scored tokens trained on so far.
    pub tokens: u64,
    /// The settings and data that define the run; a resume must match them.
    pub identity: Map<String, Value>,
}

pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

fn step_dir(out: &Path, step: usize) -> PathBuf {
    checkpoints_dir(out).join(format!("step-{step:06}"))
}

/// Complete checkpoints (step, folder), oldest first. Leftover temporary folders of a killed
/// run are not checkpoints.
pub fn list_checkpoints(out: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(checkpoints_dir(out)) else { return Vec::new() };
    let mut found: Vec<(usize, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(STATE_FILE).is_file().then(|| (step, e.path()))
        })
        .collect();
    found.sort();
    found
}

fn f32_bytes(t: &Tensor) -> Result<Vec<u8>> {
    Ok(t.to_vec::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect())
}

/// Writes checkpoint `state.step` and keeps only the newest `keep`.
pub fn save_checkpoint(
    out: &Path,
    model: &Llama,
    opt: &AdamW,
    state: &TrainState,
    keep: usize,
) -> Result<()> {
    let target = step_dir(out, state.step);
    fs_step("create the checkpoints folder", &checkpoints_dir(out));
    std::fs::create_dir_all(checkpoints_dir(out))
        .map_err(|e| TrainError::file(&checkpoints_dir(out), format!("cannot create: {e}")))?;
    let stage = StagingDir::create(&target, true)?;
    match model.lora() {
        Some(lora) => adapters::save_in_checkpoint(lora, stage.path(), &target)?,
        None => {
            let f32_opts =
                WriteOptions { dtype: None, max_shard_size: None, overwrite: false, ..Default::default() };
            model.save(&stage.path().join("model"), &f32_opts, None)?;
        }
    }

    // Moments by parameter name, in f32 (the CPU's optimizer precision).
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, p) in model.trainable_params() {
        if let Some(Moments { m, v }) = opt.moments(p.id()) {
            buffers.push((format!("m.{name}"), m.dims().to_vec(), f32_bytes(m)?));
            buffers.push((format!("v.{name}"), v.dims().to_vec(), f32_bytes(v)?));
        }
    }
    let views = buffers
        .iter()
        .map(|(n, shape, bytes)| {
            Ok((
                n.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map_err(|e| TrainError::Msg(e.to_string()))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let path = stage.path().join(OPTIMIZER_FILE);
    let bytes =
        safetensors::tensor::serialize(views, None).map_err(|e| TrainError::file(&path, e.to_string()))?;
    write_synced(&path, &bytes)?;
    let mut st = serde_json::to_value(state).map_err(|e| TrainError::Msg(e.to_string()))?;
    st["optimizer_steps"] = serde_json::json!(opt.step_count());
    write_synced(
        &stage.path().join(STATE_FILE),
        serde_json::to_string_pretty(&st).unwrap_or_default().as_bytes(),
    )?;
    // A test hook: die here, with the checkpoint half-staged, as a SIGKILL would.
    crate::trainer::fault::maybe_abort("in-checkpoint", state.step);
    stage.commit()?;

    // An old checkpoint is renamed out of the listing before it is removed, so a kill during
    // the removal never leaves a half-removed folder that looks like a checkpoint.
    let all = list_checkpoints(out);
    for (_, dir) in all.iter().take(all.len().saturating_sub(keep.max(1))) {
        let trash = temp_path(dir, "trash")?;
        fs_step("move an old checkpoint out", dir);
        std::fs::rename(dir, &trash)
            .map_err(|e| TrainError::file(dir, format!("cannot remove an old checkpoint: {e}")))?;
        fs_step("remove an old checkpoint", &trash);
        std::fs::remove_dir_all(&trash)
            .map_err(|e| TrainError::file(&trash, format!("cannot remove an old checkpoint: {e}")))?;
    }
    Ok(())
}

/// Loads a checkpoint: the model (`base` with the checkpoint's adapters for a LoRA run), an
/// optimizer holding its moments, and the state.
pub fn load_checkpoint(
    dir: &Path,
    opt_config: solar_engine::optim::AdamWConfig,
    base: Llama,
) -> Result<(Llama, AdamW, TrainState)> {
    let model = adapters::resume_model(dir, base)?;
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path)
        .map_err(|e| TrainError::file(&state_path, format!("cannot read: {e}")))?;
    let raw: Value = serde_json::from_str(&text)
        .map_err(|e| TrainError::file(&state_path, format!("not valid JSON: {e}")))?;
    let state: TrainState = serde_json::from_value(raw.clone())
        .map_err(|e| TrainError::file(&state_path, format!("bad trainer state: {e}")))?;
    let mut opt = AdamW::new(opt_config);
    opt.set_step_count(raw["optimizer_steps"].as_u64().unwrap_or(state.step as u64));
    let path = dir.join(OPTIMIZER_FILE);
    let bytes = std::fs::read(&path).map_err(|e| TrainError::file(&path, format!("cannot read: {e}")))?;
    let st =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| TrainError::file(&path, e.to_string()))?;
    let tensor = |name: &str| -> Result<Option<Tensor>> {
        let Ok(view) = st.tensor(name) else { return Ok(None) };
        if view.dtype() != Dtype::F32 {
            return Err(TrainError::file(&path, format!("{name}: expected f32")));
        }
        let data: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Ok(Some(Tensor::from_vec(data, view.shape().to_vec())?))
    };
    for (name, p) in model.trainable_params() {
        if let (Some(m), Some(v)) = (tensor(&format!("m.{name}"))?, tensor(&format!("v.{name}"))?) {
            if m.dims() != p.dims() || v.dims() != p.dims() {
                return Err(TrainError::file(&path, format!("moments of {name} have the wrong shape")));
            }
            opt.set_moments(p.id(), Moments { m, v });
        }
    }
    Ok((model, opt, state))
}

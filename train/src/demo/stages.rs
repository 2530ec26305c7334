//! The demo's stages: init, upscale and the trainers, each through the code its subcommand
//! runs (pretrain, sft and dpo are crate::pipeline's, the functions the CLI calls; merge is
//! merge::merge). Sizes and step counts come from `Recipe` (default and --quick).

use crate::data::sft::SftFormat;
use crate::dpo::DpoConfig;
use crate::error::Result;
use crate::pipeline::{self, StageInput};
use crate::trainer::config::TrainConfig;
use crate::trainer::RunOptions;
use serde_json::Value;
use solar_engine::Device;
use solar_model::checkpoint::{SafeDType, WriteOptions};
use solar_model::dus::{upscale, LayerSpec};
use solar_model::init::{init_model_dir, InitOptions};
use solar_model::presets::preset;
use solar_model::{Llama, LlamaConfig};
use std::path::{Path, PathBuf};

/// DPO's beta in the demo: a strong pull towards the SFT model, so a few steps of preference
/// learning do not wash out what SFT taught.
pub const DPO_BETA: f64 = 0.5;

/// Model size and step counts of one demo run.
#[derive(Clone, Debug)]
pub struct Recipe {
    pub layers: usize,
    pub hidden: usize,
    pub base_steps: usize,
    pub extra_steps: usize,
    pub sft_steps: usize,
    pub dpo_steps: usize,
    pub sft_lr: f64,
    pub dpo_lr: f64,
    pub batch: usize,
    pub seq_len: usize,
    /// Where every stage trains and evaluates.
    pub device: Device,
}

impl Recipe {
    pub fn new(quick: bool) -> Recipe {
        if quick {
            Recipe {
                layers: 4,
                hidden: 48,
                base_steps: 40,
                extra_steps: 20,
                sft_steps: 30,
                dpo_steps: 10,
                sft_lr: 5e-4,
                dpo_lr: 2e-5,
                batch: 8,
                seq_len: 96,
                device: Device::Cpu,
            }
        } else {
            Recipe {
                layers: 8,
                hidden: 64,
                base_steps: 300,
                extra_steps: 150,
                sft_steps: 200,
                dpo_steps: 40,
                sft_lr: 5e-4,
                dpo_lr: 2e-5,
                batch: 16,
                seq_len: 128,
                device: Device::Cpu,
            }
        }
    }

    /// The base model: a small Llama with the byte-level tokenizer's vocabulary.
    pub fn base_config(&self) -> LlamaConfig {
        let mut cfg = preset("tiny").expect("the tiny preset exists");
        cfg.num_hidden_layers = self.layers;
        cfg.hidden_size = self.hidden;
        // Head dim 16 at every size, the smallest the CUDA attention kernels have, so the demo
        // runs on every device (--device cuda, and emu on the CPU's emulator).
        cfg.head_dim = 16;
        cfg.num_attention_heads = self.hidden / 16;
        cfg.num_key_value_heads =
            if cfg.num_attention_heads.is_multiple_of(2) { cfg.num_attention_heads / 2 } else { 1 };
        cfg.intermediate_size = self.hidden * 8 / 3 / 8 * 8;
        cfg.max_position_embeddings = 256;
        cfg
    }

    fn train_config(&self, steps: usize, lr: f64, seed: u64) -> TrainConfig {
        TrainConfig {
            lr,
            min_lr: lr / 10.0,
            warmup: (steps / 10).max(1),
            steps: Some(steps),
            batch: self.batch,
            seq_len: self.seq_len,
            seed,
            log_every: 0,
            weight_decay: 0.0,
            ..Default::default()
        }
    }
}

/// Writes records as JSONL, replacing the file atomically (the demo's own output).
pub fn write_jsonl(path: &Path, records: &[Value]) -> Result<()> {
    let text: Vec<String> = records.iter().map(Value::to_string).collect();
    Ok(solar_model::output::write_file(path, (text.join("\n") + "\n").as_bytes(), true)?)
}

pub fn init_base(dir: &Path, cfg: &LlamaConfig, seed: u64) -> Result<()> {
    init_model_dir(cfg, dir, &InitOptions { seed, overwrite: true, ..Default::default() })?;
    Ok(())
}

/// The model in `dir`, on the recipe's device.
pub fn load(r: &Recipe, dir: &Path) -> Result<Llama> {
    Ok(Llama::load(dir)?.to_device(r.device)?)
}

fn run_opts(r: &Recipe, out: &Path, from: &Path) -> RunOptions {
    let name = out.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
    RunOptions {
        device: r.device,
        out: out.to_path_buf(),
        overwrite: true,
        save_dtype: Some(SafeDType::F32),
        copy_from: Some(from.to_path_buf()),
        label: name,
        ..Default::default()
    }
}

/// Pretrains `from` on `data` into `out`.
pub fn pretrain(r: &Recipe, from: &Path, data: &Path, out: &Path, steps: usize, seed: u64) -> Result<()> {
    let cfg = r.train_config(steps, 3e-3, seed);
    pipeline::pretrain(&StageInput::quiet(from, data), &cfg, &run_opts(r, out, from))?;
    Ok(())
}

/// SOLAR's depth up-scaling with m = n/4.
pub fn upscale_base(from: &Path, out: &Path, n: usize) -> Result<usize> {
    let m = (n / 4).max(1);
    let opts = WriteOptions { overwrite: true, ..Default::default() };
    upscale(from, out, &LayerSpec::Remove(m), &opts)?;
    Ok(2 * (n - m))
}

/// Instruction tuning on prompt-completion data (packed).
pub fn sft(r: &Recipe, from: &Path, data: &Path, out: &Path, seed: u64) -> Result<()> {
    let cfg = r.train_config(r.sft_steps, r.sft_lr, seed);
    let input = StageInput::quiet(from, data);
    pipeline::sft(&input, SftFormat::PromptCompletion, true, &cfg, &run_opts(r, out, from))?;
    Ok(())
}

/// DPO from `from` against itself as the reference.
pub fn dpo(r: &Recipe, from: &Path, data: &Path, out: &Path, seed: u64) -> Result<()> {
    let cfg = r.train_config(r.dpo_steps, r.dpo_lr, seed);
    let dcfg = DpoConfig { beta: DPO_BETA, ..Default::default() };
    pipeline::dpo(&StageInput::quiet(from, data), None, dcfg, &cfg, &run_opts(r, out, from))?;
    Ok(())
}

/// The per-step losses a run wrote to metrics.jsonl, as (step, loss).
pub fn loss_curve(out: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(out.join(crate::trainer::metrics::METRICS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            Some((v["step"].as_f64()?, v["loss"].as_f64()?))
        })
        .collect()
}

/// Folder of a named model inside the demo's OUT.
pub fn model_dir(out: &Path, name: &str) -> PathBuf {
    out.join("models").join(name)
}

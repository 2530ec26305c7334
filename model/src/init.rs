//! `solar-train init`: a randomly initialized model written as a complete HF folder (config,
//! weights, a byte-level tokenizer when the vocabulary has room for one, generation config), or
//! only its config.json for shapes too big to materialize here (SOLAR 10.7B, Mistral 7B).
//! The folder appears atomically, like every model Solar writes.

use crate::checkpoint::{write_synced, SafeDType, StagingDir, WriteOptions};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::llama::Llama;
use crate::tokenizer::{byte_level_config_json, byte_level_json, BYTE_LEVEL_SPECIALS};
use serde_json::{json, Value};
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    pub seed: u64,
    /// Write config.json alone.
    pub config_only: bool,
    pub overwrite: bool,
    /// Stored dtype of the weights (f32 by default).
    pub dtype: Option<SafeDType>,
}

/// What `init` wrote.
#[derive(Debug)]
pub struct InitReport {
    pub parameters: u64,
    pub tokenizer: bool,
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s.into_bytes()
}

/// Writes the side files (tokenizer, generation config) into `dir`; returns whether a tokenizer
/// was written (the byte-level one needs 3 special + 256 byte tokens).
fn write_side_files(cfg: &LlamaConfig, dir: &Path) -> Result<bool> {
    let gen = json!({"bos_token_id": cfg.bos_token_id, "eos_token_id": cfg.eos_token_ids.first(), "_from_model_config": true});
    write_synced(&dir.join("generation_config.json"), &pretty(&gen))?;
    if cfg.vocab_size < BYTE_LEVEL_SPECIALS.len() + 256 {
        return Ok(false);
    }
    write_synced(&dir.join("tokenizer.json"), &pretty(&byte_level_json()))?;
    write_synced(&dir.join("tokenizer_config.json"), &pretty(&byte_level_config_json()))?;
    Ok(true)
}

pub fn init_model_dir(cfg: &LlamaConfig, out: &Path, opts: &InitOptions) -> Result<InitReport> {
    let parameters = cfg.num_parameters();
    if opts.config_only {
        let stage = StagingDir::create(out, opts.overwrite)?;
        write_synced(&stage.path().join("config.json"), &pretty(&cfg.to_json()))?;
        let tokenizer = write_side_files(cfg, stage.path())?;
        stage.commit()?;
        return Ok(InitReport { parameters, tokenizer });
    }
    // Weights in f32 take 4 bytes a parameter; refuse what this machine cannot hold.
    if parameters > 4_000_000_000 {
        return Err(ModelError::Msg(format!(
            "{parameters} parameters are too many to initialize on the CPU; use --config-only"
        )));
    }
    let model = Llama::init(cfg.clone(), opts.seed)?;
    // The side files go straight into the staging folder, beside the weights: nothing is
    // written anywhere else, so a killed init leaves nothing the next one cannot reclaim.
    let stage = StagingDir::create(out, opts.overwrite)?;
    let tokenizer = write_side_files(cfg, stage.path())?;
    let w = WriteOptions {
        dtype: opts.dtype,
        max_shard_size: None,
        overwrite: opts.overwrite,
        ..Default::default()
    };
    model.save_into(stage.path(), out, &w, None)?;
    stage.commit()?;
    Ok(InitReport { parameters, tokenizer })
}

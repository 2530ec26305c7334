//! Where a training run writes, so that OUT always holds either what it held before the run or
//! the complete result, never a mix and never nothing, including when OUT is the input model
//! (`--out` equal to `--model`).
//!
//! A run into an empty or missing OUT (or a `--resume`) works in OUT itself: metrics.jsonl and
//! checkpoints/ appear there as the run goes, and a kill leaves a resumable run. A run that
//! replaces an occupied OUT (`--overwrite`) works in a hidden `.OUT.run-PID-SEQ` beside it and
//! leaves OUT untouched until the end. Either way the final folder is built beside OUT (hard
//! links to the run's metrics and checkpoints, and when training in place to everything the old
//! folder had besides its weights: tokenizer files, chat template, README), the model written
//! into it, and the whole folder swapped in by one atomic exchange (solar_model::output).

use super::checkpoint::checkpoints_dir;
use super::metrics::METRICS_FILE;
use super::RunOptions;
use crate::error::{Result, TrainError};
use solar_model::checkpoint::{SafeDType, StagingDir, WriteOptions, COPY_THROUGH};
use solar_model::lora::peft_io::{save_adapter_into, ADAPTER_CONFIG};
use solar_model::output::fs_step;
use solar_model::output::place::{link_tree, reclaim, reclaim_in, temp_path};
use solar_model::Llama;
use std::path::{Path, PathBuf};

pub struct RunPlace {
    pub out: PathBuf,
    /// Where metrics and checkpoints go while the run lasts: OUT, or a hidden working folder.
    pub work: PathBuf,
    /// `work` is a temporary working folder, removed when the run ends without a result.
    temp: bool,
    /// OUT is the input model: the result keeps the old folder's other files.
    in_place: bool,
}

/// Weights and the config: what a new model replaces rather than keeps.
fn is_model_file(name: &str) -> bool {
    name == "config.json"
        || name == ADAPTER_CONFIG
        || [".safetensors", ".safetensors.index.json", ".bin", ".pt", ".pth", ".gguf"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

fn same_folder(a: &Path, b: &Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

impl RunPlace {
    /// Chooses where the run works, after reclaiming what dead runs left beside OUT and in its
    /// checkpoints. Refuses an occupied OUT unless overwrite or resume.
    pub fn prepare(run: &RunOptions) -> Result<RunPlace> {
        let out = run.out.clone();
        reclaim(&out)?;
        let in_place = run.copy_from.as_deref().is_some_and(|m| same_folder(m, &out));
        if in_place && run.lora.is_some() {
            return Err(TrainError::file(
                &out,
                "is the base model: a LoRA run writes only an adapter, which would replace the base it needs; choose another --out",
            ));
        }
        let occupied = std::fs::read_dir(&out).map(|mut d| d.next().is_some()).unwrap_or(false);
        let temp = occupied && !run.resume;
        if temp && !run.overwrite {
            return Err(TrainError::file(
                &out,
                "holds another run or model; pass --overwrite to replace it or --resume to continue",
            ));
        }
        let work = if temp { temp_path(&out, "run")? } else { out.clone() };
        std::fs::create_dir_all(&work).map_err(|e| TrainError::file(&work, format!("cannot create: {e}")))?;
        reclaim_in(&checkpoints_dir(&work))?;
        Ok(RunPlace { out, work, temp, in_place })
    }

    /// Builds the finished folder beside OUT and swaps it in (see the file header).
    pub fn save_final(&mut self, model: &Llama, run: &RunOptions) -> Result<()> {
        let stage = StagingDir::create(&self.out, true)?;
        // Tokenizer files come fresh from the input model (copy-through), never linked.
        let replaced = |n: &str| is_model_file(n) || COPY_THROUGH.contains(&n);
        if self.in_place && self.temp {
            let old_run = |n: &str| n == METRICS_FILE || n == "checkpoints";
            link_tree(&self.out, stage.path(), &|n| replaced(n) || old_run(n))?;
        }
        link_tree(&self.work, stage.path(), &replaced)?;
        match model.lora() {
            Some(lora) => {
                let base = run.copy_from.as_deref().map_or(String::new(), |p| p.display().to_string());
                let dtype = run.save_dtype.unwrap_or(SafeDType::F32);
                save_adapter_into(lora, stage.path(), &self.out, &base, dtype, run.copy_from.as_deref())?;
            }
            None => {
                let opts = WriteOptions {
                    dtype: run.save_dtype,
                    max_shard_size: None,
                    overwrite: true,
                    ..Default::default()
                };
                model.save_into(stage.path(), &self.out, &opts, run.copy_from.as_deref())?;
            }
        }
        stage.commit()?;
        if self.temp {
            self.temp = false;
            fs_step("remove the working folder", &self.work);
            if let Err(e) = std::fs::remove_dir_all(&self.work) {
                eprintln!(
                    "warning: {}: model in place; cannot remove the working folder: {e}",
                    self.work.display()
                );
            }
        }
        Ok(())
    }
}

impl Drop for RunPlace {
    /// A run that ends without a result (error, interrupt) leaves OUT as it was: its temporary
    /// working folder goes. (A run working in OUT itself keeps its checkpoints, for --resume.)
    fn drop(&mut self) {
        if self.temp {
            let _ = std::fs::remove_dir_all(&self.work);
        }
    }
}

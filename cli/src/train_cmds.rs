//! The training subcommands: `pretrain` (continued pretraining on packed text), `sft`
//! (instruction tuning with the loss on responses only) and `dpo` (preference alignment). They
//! share the trainer flags (`TrainFlags`), check what only a command line can get wrong, and
//! call the stage's one implementation in solar_train::pipeline, which the demo calls too.

use crate::common::{parse_save_dtype, CliError, Common};
use clap::Args;
use serde_json::json;
use solar_engine::Device;
use solar_model::checkpoint::{Checkpoint, SafeDType};
use solar_model::lora::peft_io::ADAPTER_CONFIG;
use solar_model::lora::{parse_targets, LoraSpec, DEFAULT_TARGETS};
use solar_model::names::EMBED;
use solar_model::{Llama, LlamaConfig};
use solar_train::dpo::DpoConfig;
use solar_train::pipeline::{self, StageInput};
use solar_train::trainer::config::TrainConfig;
use solar_train::trainer::memory::{self, Plan};
use solar_train::trainer::{RunOptions, RunReport};
use std::path::{Path, PathBuf};

/// Flags every trainer takes.
#[derive(Args, Debug, Clone)]
pub struct TrainFlags {
    /// The starting model (HF folder).
    #[arg(long)]
    pub model: PathBuf,
    /// Training data.
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder: the finished model, metrics.jsonl and checkpoints/.
    #[arg(long)]
    pub out: PathBuf,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-4)]
    pub lr: f64,
    /// Learning rate at the end of the decay.
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f64,
    /// Warmup steps (linear from lr/warmup to lr).
    #[arg(long, default_value_t = 0)]
    pub warmup: usize,
    /// constant, linear or cosine decay after warmup.
    #[arg(long, default_value = "cosine", value_parser = ["constant", "linear", "cosine"])]
    pub schedule: String,
    /// Decoupled weight decay (matrices and embeddings only, not norms).
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    #[arg(long, default_value_t = 0.95)]
    pub beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f64,
    /// Global gradient-norm clipping; 0 turns it off.
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Optimizer steps [default: one epoch].
    #[arg(long, conflicts_with = "epochs")]
    pub steps: Option<usize>,
    /// Passes over the data (fractions allowed).
    #[arg(long)]
    pub epochs: Option<f64>,
    /// Micro-batch rows.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Tokens per row.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Rows in file order instead of a seeded shuffle.
    #[arg(long)]
    pub no_shuffle: bool,
    #[arg(long, default_value_t = 1)]
    pub log_every: usize,
    /// Held-out data (same format) for eval_loss records.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Write a resumable checkpoint every N steps (0: never).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Checkpoints to keep.
    #[arg(long, default_value_t = 3)]
    pub keep: usize,
    /// Continue from the newest complete checkpoint in OUT.
    #[arg(long)]
    pub resume: bool,
    /// Replace whatever OUT holds.
    #[arg(long)]
    pub overwrite: bool,
    /// Stop after this many NaN/Inf steps in a row.
    #[arg(long, default_value_t = 5)]
    pub max_bad_steps: usize,
    /// Stored dtype of the finished model [default: the input's].
    #[arg(long, value_parser = parse_save_dtype)]
    pub save_dtype: Option<SafeDType>,
    /// Skip (and count) malformed data lines instead of stopping.
    #[arg(long)]
    pub skip_bad_lines: bool,
    /// Train LoRA adapters of this rank on the frozen model (PEFT's LoRA); OUT then holds
    /// adapter_config.json and adapter_model.safetensors in PEFT's format, not a model.
    #[arg(long, value_name = "R")]
    pub lora_r: Option<usize>,
    /// LoRA's alpha: the adapters are scaled by alpha / r (alpha / sqrt(r) with --rslora) [default: 8, as PEFT].
    #[arg(long, value_name = "ALPHA")]
    pub lora_alpha: Option<f64>,
    /// Dropout on the adapters' input while training, in [0, 1) [default: 0].
    #[arg(long, value_name = "P")]
    pub lora_dropout: Option<f64>,
    /// Adapted projections, as PEFT's target_modules: a comma-separated list of q_proj, k_proj,
    /// v_proj, o_proj, gate_proj, up_proj, down_proj, or all-linear [default: q_proj,v_proj, as PEFT].
    #[arg(long, value_name = "MODULES")]
    pub lora_targets: Option<String>,
    /// Rank-stabilized LoRA: scale by alpha / sqrt(r).
    #[arg(long)]
    pub rslora: bool,
    /// Activation recompute: each decoder layer keeps only its input and reruns the rest
    /// during backward (the same gradients, bitwise; less memory; one more forward).
    #[arg(long)]
    pub recompute: bool,
    /// ZeRO stage when launched as several ranks (torchrun, mpirun, srun): 0 replicates the
    /// optimizer (DDP), 1 shards the master weights and AdamW moments, 2 the gradients too
    /// [default: 1 with more than one rank].
    #[arg(long, value_name = "0|1|2", value_parser = clap::value_parser!(u8).range(0..=2))]
    pub zero: Option<u8>,
    /// Gradients travel between ranks in buckets of up to this many MiB, each reduced as soon
    /// as the backward completes it (on a GPU, on its own stream, overlapped with the rest of
    /// the backward). Smaller buckets start sooner and, with ZeRO-2, free gradients sooner.
    #[arg(long, value_name = "MIB", default_value_t = 25.0, value_parser = positive_mib)]
    pub bucket_mb: f64,
    /// Print the predicted peak memory of a training step and exit, without reading the data,
    /// training or creating OUT.
    #[arg(long)]
    pub dry_run: bool,
}

impl TrainFlags {
    pub fn config(&self, seed: u64) -> TrainConfig {
        TrainConfig {
            lr: self.lr,
            min_lr: self.min_lr,
            warmup: self.warmup,
            schedule: self.schedule.clone(),
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            clip: self.clip,
            steps: self.steps,
            epochs: self.epochs,
            batch: self.batch,
            grad_accum: self.grad_accum,
            seq_len: self.seq_len,
            seed,
            shuffle: !self.no_shuffle,
            log_every: self.log_every,
            eval_every: self.eval_every,
            save_every: self.save_every,
            keep: self.keep,
            max_bad_steps: self.max_bad_steps,
        }
    }

    /// The LoRA spec of --lora-* (None without --lora-r); the message names the flag.
    pub fn lora_spec(&self) -> Result<Option<LoraSpec>, String> {
        let Some(r) = self.lora_r else {
            let given = self.lora_alpha.is_some()
                || self.lora_dropout.is_some()
                || self.lora_targets.is_some()
                || self.rslora;
            if given {
                return Err("--lora-alpha, --lora-dropout, --lora-targets and --rslora need --lora-r".into());
            }
            return Ok(None);
        };
        let targets = match &self.lora_targets {
            Some(t) => parse_targets(t)?,
            None => DEFAULT_TARGETS.to_vec(),
        };
        let spec = LoraSpec {
            r,
            alpha: self.lora_alpha.unwrap_or(8.0),
            dropout: self.lora_dropout.unwrap_or(0.0),
            targets,
            rslora: self.rslora,
        };
        spec.validate()?;
        if self.recompute && spec.dropout > 0.0 {
            // A recomputed layer runs twice and would draw other dropout masks the second time.
            return Err("--recompute cannot be combined with --lora-dropout above 0".into());
        }
        Ok(Some(spec))
    }

    fn run_options(&self, device: Device, label: &str) -> Result<RunOptions, CliError> {
        // The finished model keeps the input's dtype unless told otherwise.
        let input_dtype = Checkpoint::open(&self.model)?.dtype_of(EMBED)?;
        Ok(RunOptions {
            out: self.out.clone(),
            resume: self.resume,
            overwrite: self.overwrite,
            save_dtype: Some(self.save_dtype.unwrap_or(input_dtype)),
            copy_from: Some(self.model.clone()),
            device,
            label: label.to_string(),
            lora: self.lora_spec().map_err(CliError)?,
            recompute: self.recompute,
            dist: crate::launch::dist(self.zero, self.bucket_mb),
        })
    }

    /// What the run's memory depends on beyond model and batch: recompute, and with LoRA only
    /// the adapters train.
    fn plan(&self, cfg: &LlamaConfig) -> Result<Plan, CliError> {
        Ok(Plan::of_run(self.recompute, self.lora_spec().map_err(CliError)?.as_ref(), cfg))
    }

    /// `--dry-run`: prints the predicted peak of a step of `rows` rows (DPO: two per pair) and
    /// touches nothing. stdout: one line, `predicted_peak_bytes N`, after the breakdown on stderr.
    fn dry_run(&self, stage: &str, rows: usize, device: Device) -> Result<(), CliError> {
        let cfg = Llama::load_config(&self.model)?;
        let m = memory::estimate_plan(&cfg, rows, self.seq_len, device, self.plan(&cfg)?)
            .map_err(|e| CliError(format!("{}: cannot size a training step: {e}", self.model.display())))?;
        eprintln!(
            "{stage} --dry-run: a step of {rows} rows x {} tokens on {device}{} needs about {}",
            self.seq_len,
            if self.recompute { " with --recompute" } else { "" },
            m.describe()
        );
        println!("predicted_peak_bytes {}", m.total());
        Ok(())
    }
}

/// What every stage reads, from the flags.
fn input(f: &TrainFlags) -> StageInput {
    StageInput {
        model: f.model.clone(),
        data: f.data.clone(),
        eval_data: f.eval_data.clone(),
        skip_bad_lines: f.skip_bad_lines,
        announce: true,
        ref_adapter: None,
    }
}

/// Says where the model (or a LoRA run's adapter) went.
fn done(stage: &str, report: &RunReport, out: &Path) {
    let what = if out.join(ADAPTER_CONFIG).is_file() { "LoRA adapter (PEFT's format)" } else { "model" };
    eprintln!(
        "{stage}: {} steps, last loss {:.4}; {what} written to {}",
        report.steps,
        report.last_loss,
        out.display()
    );
}

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  solar-train pretrain --model runs/demo/models/base --data runs/demo/data/pretrain.jsonl --out pt --steps 100 --seq-len 128"
)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub train: TrainFlags,
}

pub fn pretrain(args: &PretrainArgs, common: &Common) -> Result<(), CliError> {
    let f = &args.train;
    if f.dry_run {
        return f.dry_run("pretrain", f.batch, common.run_on);
    }
    let report =
        pipeline::pretrain(&input(f), &f.config(common.seed), &f.run_options(common.run_on, "pretrain")?)?;
    done("pretrain", &report, &f.out);
    Ok(())
}

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  solar-train sft --model pt --data runs/demo/data/sft_both.jsonl --format prompt-completion --packing --out sft --steps 100"
)]
pub struct SftArgs {
    #[command(flatten)]
    pub train: TrainFlags,
    /// alpaca, openorca, prompt-completion or messages.
    #[arg(long, default_value = "alpaca", value_parser = ["alpaca", "openorca", "prompt-completion", "messages"])]
    pub format: String,
    /// Pack several examples into a row (best fit; they never attend to each other).
    #[arg(long)]
    pub packing: bool,
}

pub fn sft(args: &SftArgs, common: &Common) -> Result<(), CliError> {
    let f = &args.train;
    let format = args.format.parse().map_err(CliError)?;
    if f.dry_run {
        return f.dry_run("sft", f.batch, common.run_on);
    }
    let run = f.run_options(common.run_on, "sft")?;
    let report = pipeline::sft(&input(f), format, args.packing, &f.config(common.seed), &run)?;
    done("sft", &report, &f.out);
    Ok(())
}

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  solar-train dpo --model sft --data runs/demo/data/pairs.jsonl --beta 0.1 --out dpo --steps 40"
)]
pub struct DpoArgs {
    #[command(flatten)]
    pub train: TrainFlags,
    /// The reference model [default: the starting model]. Its log-probs are computed once,
    /// before training, so only the policy is held while training.
    #[arg(long = "ref", value_name = "DIR")]
    pub reference: Option<PathBuf>,
    /// A LoRA adapter folder (PEFT's format, PEFT's or Solar's) applied to the reference
    /// (--ref, or else the starting model). Without it, a LoRA run's reference is the starting
    /// model with the adapters being trained switched off.
    #[arg(long, value_name = "DIR")]
    pub ref_adapter: Option<PathBuf>,
    /// Strength of the KL penalty (TRL's beta).
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// sigmoid (DPO), ipo or hinge.
    #[arg(long, default_value = "sigmoid", value_parser = ["sigmoid", "ipo", "hinge"])]
    pub loss: String,
    /// Conservative DPO's label smoothing (sigmoid loss only).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
}

pub fn dpo_config(beta: f64, loss: &str, label_smoothing: f64) -> Result<DpoConfig, CliError> {
    let cfg = DpoConfig { beta, loss: loss.parse()?, label_smoothing };
    cfg.validate()?;
    Ok(cfg)
}

/// The reference scores the policy's token ids, so both must share the vocabulary and the
/// tokenizer's token table; checked before any work (sizes and depths may differ).
fn check_reference(model: &Path, reference: &Path) -> Result<(), CliError> {
    let (policy, refc) = (Llama::load_config(model)?, Llama::load_config(reference)?);
    if policy.vocab_size != refc.vocab_size {
        return Err(CliError(format!(
            "--ref {}: vocabulary of {} tokens, but --model {} has {} (the reference must share the policy's vocabulary)",
            reference.display(),
            refc.vocab_size,
            model.display(),
            policy.vocab_size
        )));
    }
    let table = |d: &Path| -> Option<serde_json::Value> {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("tokenizer.json")).ok()?).ok()?;
        Some(json!([v["model"], v["added_tokens"]]))
    };
    if let (Some(a), Some(b)) = (table(model), table(reference)) {
        if a != b {
            return Err(CliError(format!(
                "--ref {}: tokenizer.json maps tokens differently from --model {} (the reference would score other tokens)",
                reference.display(),
                model.display()
            )));
        }
    }
    Ok(())
}

pub fn dpo(args: &DpoArgs, common: &Common) -> Result<(), CliError> {
    let f = &args.train;
    let dcfg = dpo_config(args.beta, &args.loss, args.label_smoothing)?;
    if let Some(reference) = &args.reference {
        check_reference(&f.model, reference)?;
    }
    if f.dry_run {
        return f.dry_run("dpo", f.batch.saturating_mul(2), common.run_on);
    }
    let run = f.run_options(common.run_on, "dpo")?;
    let input = StageInput { ref_adapter: args.ref_adapter.clone(), ..input(f) };
    let report = pipeline::dpo(&input, args.reference.as_deref(), dcfg, &f.config(common.seed), &run)?;
    done("dpo", &report, &f.out);
    Ok(())
}

/// A bucket size in MiB: a positive number (fractions allowed, for small models and tests).
fn positive_mib(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number of MiB")),
    }
}

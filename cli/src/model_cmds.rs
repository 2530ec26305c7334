//! The model subcommands: `init` (a random model as an HF folder), `upscale` (depth
//! up-scaling), `eval` (loss and perplexity, DPO metrics, exact match of greedy answers,
//! multiple-choice accuracy, layer similarity) and `generate` (KV-cache sampling).
//! Each parses its flags and calls solar_model / solar_train; nothing else lives here.

use crate::common::{load_adapted, parse_save_dtype, parse_size, CliError, Common};
use clap::builder::PossibleValuesParser;
use clap::{ArgGroup, Args};
use solar_engine::Device;
use solar_model::checkpoint::{SafeDType, WriteOptions};
use solar_model::dus::{upscale, LayerSpec};
use solar_model::init::{init_model_dir, InitOptions};
use solar_model::output::file::canonical_target;
use solar_model::output::{check_file_target, write_file, Input};
use solar_model::presets::{preset, PRESETS};
use solar_model::tokenizer::Tokenizer;
use solar_model::{Llama, LlamaConfig};
use solar_train::byte_bar::ByteBar;
use solar_train::data::lm::read_token_sequences;
use solar_train::data::pairs::load_pairs;
use solar_train::data::sft::SftFormat;
use solar_train::eval::choice::{eval_choice, load_choice_examples};
use solar_train::eval::dpo::eval_dpo;
use solar_train::eval::generate::{eval_generate, load_generate_examples};
use solar_train::eval::heatmap::{default_cell, write_heatmap};
use solar_train::eval::layers::{adjacent, format_table, layer_similarity};
use solar_train::eval::lm::eval_lm;
use std::path::{Path, PathBuf};

fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("shape").required(true).args(["preset", "model_config"])))]
#[command(after_help = "Example:\n  solar-train init --preset tiny --out tiny-model")]
pub struct InitArgs {
    /// A named shape: tiny, tiny-mistral, small (demo), mistral-7b, solar-10.7b.
    #[arg(long, value_parser = PossibleValuesParser::new(preset_names()))]
    pub preset: Option<String>,
    /// A config.json to initialize (also accepted as `--config config.json`).
    #[arg(long, value_name = "config.json")]
    pub model_config: Option<PathBuf>,
    /// The output folder (must not exist unless --overwrite).
    #[arg(long)]
    pub out: PathBuf,
    /// Write config.json (and tokenizer files) only, no weights.
    #[arg(long)]
    pub config_only: bool,
    /// Stored dtype of the weights.
    #[arg(long, value_parser = parse_save_dtype, default_value = "f32")]
    pub dtype: SafeDType,
    /// Replace an existing output folder.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn init(args: &InitArgs, common: &Common) -> Result<(), CliError> {
    let cfg = match (&args.preset, &args.model_config) {
        (Some(name), _) => preset(name).ok_or_else(|| CliError(format!("unknown preset {name}")))?,
        (None, Some(path)) => LlamaConfig::from_file(path)?,
        (None, None) => return Err(CliError("give --preset NAME or --config config.json".into())),
    };
    let opts = InitOptions {
        seed: common.seed,
        config_only: args.config_only,
        overwrite: args.overwrite,
        dtype: Some(args.dtype),
    };
    let report = init_model_dir(&cfg, &args.out, &opts)?;
    let what = if args.config_only { "config" } else { "model" };
    let tok = if report.tokenizer {
        "with a byte-level tokenizer"
    } else {
        "without a tokenizer (vocab too small)"
    };
    eprintln!("wrote {what} to {} ({} parameters, {tok})", args.out.display(), report.parameters);
    Ok(())
}

#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("layers").required(true).args(["remove", "slices"])))]
#[command(
    after_help = "Example:\n  solar-train upscale --model runs/demo/models/base --remove 2 --out upscaled"
)]
pub struct UpscaleArgs {
    /// The base model folder (HF layout).
    #[arg(long)]
    pub model: PathBuf,
    /// The output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// SOLAR's depth up-scaling: base layers [0, n-M) then [M, n) (n=32, M=8 gives 48).
    #[arg(long, value_name = "M")]
    pub remove: Option<usize>,
    /// Half-open layer ranges stacked in order, e.g. 0:24,8:32 (mergekit passthrough).
    #[arg(long, value_name = "a:b,c:d")]
    pub slices: Option<String>,
    /// Shard the output into files of at most this size (e.g. 5GB).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_shard_size: Option<u64>,
    /// Stored dtype of the output [default: the input's].
    #[arg(long, value_parser = parse_save_dtype)]
    pub dtype: Option<SafeDType>,
    /// Replace an existing output folder.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn upscale_cmd(args: &UpscaleArgs) -> Result<(), CliError> {
    let spec = match (&args.remove, &args.slices) {
        (Some(m), _) => LayerSpec::Remove(*m),
        (None, Some(s)) => LayerSpec::parse_slices(s)?,
        (None, None) => return Err(CliError("give --remove M or --slices a:b,c:d".into())),
    };
    let bar = ByteBar::new("upscale");
    let opts = WriteOptions {
        dtype: args.dtype,
        max_shard_size: args.max_shard_size,
        overwrite: args.overwrite,
        on_bytes: bar.on_bytes(),
    };
    let r = upscale(&args.model, &args.out, &spec, &opts)?;
    eprintln!(
        "upscaled {} layers to {} ({} parameters) into {} ({})",
        r.base_layers,
        r.new_layers,
        r.num_parameters,
        args.out.display(),
        bar.finish()
    );
    Ok(())
}

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  solar-train eval --model runs/demo/models/sft_both --task generate --data runs/demo/data/add_heldout.jsonl --json"
)]
pub struct EvalArgs {
    /// The model folder (HF layout).
    #[arg(long)]
    pub model: PathBuf,
    /// A LoRA adapter folder (PEFT's adapter_config.json + adapter_model.safetensors) applied
    /// to --model, whoever wrote it (Solar or PEFT).
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// JSONL with {"text": ...} or {"input_ids": [...]} per line, or a .txt file (lm, layers);
    /// preference pairs (dpo); SFT data in --format (generate); {"context", "choices": [...],
    /// "answer": index} per line (choice).
    #[arg(long)]
    pub data: PathBuf,
    /// What to measure: lm = mean next-token loss and perplexity; dpo = DPO loss and TRL's
    /// reward metrics of --model against --ref on preference pairs; generate = exact match of
    /// greedy answers; choice = multiple-choice acc and acc_norm by log-likelihood
    /// (lm-evaluation-harness); layers = mean cosine similarity between every pair of layers'
    /// hidden states (the paper's layer distance).
    #[arg(long, default_value = "lm",
          value_parser = PossibleValuesParser::new(["lm", "dpo", "generate", "choice", "layers"]))]
    pub task: String,
    /// The data's SFT format (--task generate).
    #[arg(long, default_value = "alpaca", value_parser = PossibleValuesParser::new(SftFormat::NAMES))]
    pub format: String,
    /// Longest answer in tokens (--task generate).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_new_tokens: u64,
    /// Text between the context and each choice (--task choice; lm-evaluation-harness's
    /// target_delimiter).
    #[arg(long, default_value = " ", allow_hyphen_values = true)]
    pub target_delimiter: String,
    /// Write details: per-example JSONL (generate, choice) or the similarity matrix as JSON
    /// (layers).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Draw the similarity matrix as a PNG heatmap (--task layers).
    #[arg(long, value_name = "FILE.png")]
    pub image: Option<PathBuf>,
    /// Replace an existing --out or --image file (never one of the command's inputs).
    #[arg(long)]
    pub overwrite: bool,
    /// The reference model for --task dpo.
    #[arg(long = "ref", value_name = "DIR", required_if_eq("task", "dpo"))]
    pub reference: Option<PathBuf>,
    /// A LoRA adapter folder (PEFT's format) applied to --ref.
    #[arg(long, value_name = "DIR", requires = "reference")]
    pub ref_adapter: Option<PathBuf>,
    /// DPO's beta (--task dpo).
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// DPO loss (--task dpo): sigmoid, ipo or hinge.
    #[arg(long, default_value = "sigmoid", value_parser = ["sigmoid", "ipo", "hinge"])]
    pub loss: String,
    /// Pairs per forward pass (--task dpo).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Context length; longer sequences are scored in windows [default: the model's maximum].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub seq_len: Option<u64>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

impl EvalArgs {
    /// `--seq-len`, or the model's maximum context.
    fn context(&self, model: &Llama) -> usize {
        self.seq_len.map_or(model.config.max_position_embeddings, |n| n as usize)
    }
}

/// Refuses, before any work, an --out or --image that exists (without --overwrite), that is
/// the data or a file of a model folder read (even with --overwrite), or that is given twice.
fn check_eval_outputs(args: &EvalArgs) -> Result<(), CliError> {
    let mut inputs = vec![Input::File(&args.data), Input::Folder(&args.model)];
    if let Some(r) = &args.reference {
        inputs.push(Input::Folder(r));
    }
    if let (Some(out), Some(image)) = (&args.out, &args.image) {
        // Spelled alike they were refused as a usage error; spelled apart it takes the disk.
        if canonical_target(out).is_some_and(|o| canonical_target(image) == Some(o)) {
            return Err(CliError(format!("{}: given as both --out and --image", out.display())));
        }
    }
    for target in args.out.iter().chain(&args.image) {
        check_file_target(target, args.overwrite, &inputs)?;
    }
    Ok(())
}

pub fn eval(args: &EvalArgs, device: Device) -> Result<(), CliError> {
    check_eval_outputs(args)?;
    match args.task.as_str() {
        "dpo" => return eval_dpo_cmd(args, device),
        "generate" => return eval_generate_cmd(args, device),
        "choice" => return eval_choice_cmd(args, device),
        "layers" => return eval_layers_cmd(args, device),
        _ => {}
    }
    let model = load_adapted(&args.model, args.adapter.as_deref(), device)?;
    let tok = Tokenizer::from_model_dir_if_present(&args.model)?;
    let seqs = read_token_sequences(&args.data, tok.as_ref(), model.config.vocab_size)?;
    let seq_len = args.context(&model);
    let r = eval_lm(&model, &seqs, seq_len)?;
    if args.json {
        println!("{}", serde_json::json!({"loss": r.loss, "ppl": r.ppl, "tokens": r.tokens}));
    } else {
        println!("loss {:.6}  ppl {:.4}  tokens {}", r.loss, r.ppl, r.tokens);
    }
    Ok(())
}

fn eval_dpo_cmd(args: &EvalArgs, device: Device) -> Result<(), CliError> {
    let cfg = crate::train_cmds::dpo_config(args.beta, &args.loss, 0.0)?;
    let policy = load_adapted(&args.model, args.adapter.as_deref(), device)?;
    let ref_dir = args.reference.as_ref().ok_or_else(|| CliError("--task dpo needs --ref DIR".into()))?;
    let reference = load_adapted(ref_dir, args.ref_adapter.as_deref(), device)?;
    let tok = Tokenizer::from_model_dir(&args.model)?;
    let seq_len = args.context(&policy);
    let (pairs, _) = load_pairs(&args.data, &tok, &args.model, &policy.config, seq_len, false)?;
    let r = eval_dpo(&policy, &reference, &pairs, &cfg, args.batch as usize)?;
    if args.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| CliError(e.to_string()))?);
    } else {
        println!(
            "loss {:.6}  rewards/chosen {:.4}  rewards/rejected {:.4}  rewards/accuracies {:.4}  rewards/margins {:.4}  ({} pairs)",
            r.loss, r.rewards_chosen, r.rewards_rejected, r.rewards_accuracies, r.rewards_margins, r.pairs
        );
    }
    Ok(())
}

/// Writes one JSON value a line to `path`, atomically.
fn write_jsonl(path: &Path, lines: Vec<serde_json::Result<String>>, overwrite: bool) -> Result<(), CliError> {
    let mut text = String::new();
    for l in lines {
        text += &l.map_err(|e| CliError(e.to_string()))?;
        text.push('\n');
    }
    Ok(write_file(path, text.as_bytes(), overwrite)?)
}

fn eval_generate_cmd(args: &EvalArgs, device: Device) -> Result<(), CliError> {
    let format: SftFormat = args.format.parse().map_err(CliError)?;
    let model = load_adapted(&args.model, args.adapter.as_deref(), device)?;
    let tok = Tokenizer::from_model_dir(&args.model)?;
    let examples = load_generate_examples(&args.data, format, &tok, &args.model, &model)?;
    let r = eval_generate(&model, &tok, &examples, args.max_new_tokens as usize)?;
    if let Some(out) = &args.out {
        write_jsonl(out, r.outcomes.iter().map(serde_json::to_string).collect(), args.overwrite)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| CliError(e.to_string()))?);
        return Ok(());
    }
    println!("exact_match {:.4}  ({} of {} examples)", r.exact_match, r.correct, r.examples);
    Ok(())
}

fn eval_choice_cmd(args: &EvalArgs, device: Device) -> Result<(), CliError> {
    let model = load_adapted(&args.model, args.adapter.as_deref(), device)?;
    let tok = Tokenizer::from_model_dir(&args.model)?;
    let examples = load_choice_examples(&args.data)?;
    let seq_len = args.context(&model);
    let r = eval_choice(&model, &tok, &examples, &args.target_delimiter, seq_len, &args.data)?;
    if let Some(out) = &args.out {
        write_jsonl(out, r.outcomes.iter().map(serde_json::to_string).collect(), args.overwrite)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| CliError(e.to_string()))?);
        return Ok(());
    }
    println!("acc {:.4}  acc_norm {:.4}  ({} examples)", r.acc, r.acc_norm, r.examples);
    Ok(())
}

fn eval_layers_cmd(args: &EvalArgs, device: Device) -> Result<(), CliError> {
    let model = load_adapted(&args.model, args.adapter.as_deref(), device)?;
    let tok = Tokenizer::from_model_dir_if_present(&args.model)?;
    let seqs = read_token_sequences(&args.data, tok.as_ref(), model.config.vocab_size)?;
    let seq_len = args.context(&model);
    let r = layer_similarity(&model, &seqs, seq_len)?;
    if let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&r).map_err(|e| CliError(e.to_string()))?;
        write_file(out, (text + "\n").as_bytes(), args.overwrite)?;
    }
    if let Some(image) = &args.image {
        write_heatmap(image, &r.similarity, default_cell(r.layers), args.overwrite)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&r).map_err(|e| CliError(e.to_string()))?);
        return Ok(());
    }
    println!("mean cosine similarity between the outputs of layers i and j ({} tokens):", r.tokens);
    println!("{}", format_table(&r));
    let adj = adjacent(&r);
    if let Some((i, v)) = adj.iter().enumerate().min_by(|a, b| a.1.total_cmp(b.1)) {
        println!("least alike neighbours: layers {i} and {} ({v:.4})", i + 1);
    }
    Ok(())
}

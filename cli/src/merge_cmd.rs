//! `solar-train merge`: merge models with mergekit's methods, from flags or from a mergekit YAML
//! config (`--config merge.yml`, which main's argument normalizing turns into `--merge-config`,
//! so a TOML `--config` still supplies flags as for every other subcommand). The work is
//! solar_train::merge; this file only maps flags onto a `MergeSpec` and prints what was done.

use crate::common::{parse_save_dtype, parse_size, CliError, Common};
use clap::{ArgAction, Args};
use solar_model::checkpoint::{SafeDType, WriteOptions};
use solar_model::dus::LayerSpec;
use solar_model::lora::fold::fold_adapter;
use solar_train::byte_bar::ByteBar;
use solar_train::merge::{merge, CliMerge, MergeSpec};
use std::path::PathBuf;

/// The command line's spellings, and mergekit's.
const METHODS: [&str; 11] = [
    "lora",
    "linear",
    "slerp",
    "task-arithmetic",
    "ties",
    "dare-ties",
    "dare-linear",
    "passthrough",
    "task_arithmetic",
    "dare_ties",
    "dare_linear",
];

// `action = Set` on the list flags: a second --models or --weights (the user's, after a TOML
// config's) replaces the first rather than appending to it.

/// Flag-only options conflict with a YAML config, which says all of them itself.
const FLAG_ONLY: [&str; 9] =
    ["method", "models", "base", "weights", "t", "density", "lambda", "normalize", "slices"];

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  solar-train merge --method slerp --models runs/demo/models/sft_add runs/demo/models/sft_reverse --t 0.5 --out merged"
)]
pub struct MergeArgs {
    /// linear | slerp | task-arithmetic | ties | dare-ties | dare-linear | passthrough, or lora
    /// (fold --adapter into --base: W + scaling * B A, an ordinary model folder).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(METHODS), hide_possible_values = true,
          required_unless_present = "merge_config")]
    pub method: Option<String>,
    /// The model folders to merge (SLERP: exactly two, t = 0 gives the first).
    #[arg(long, num_args = 1.., action = ArgAction::Set, value_name = "DIR",
          required_unless_present_any = ["merge_config", "adapter"])]
    pub models: Vec<PathBuf>,
    /// The LoRA adapter folder (PEFT's format) that --method lora folds into --base.
    #[arg(long, value_name = "DIR", conflicts_with = "merge_config")]
    pub adapter: Option<PathBuf>,
    /// The base model: task vectors are theta_i - base; SLERP's t = 0 end. Its config and
    /// tokenizer are copied (else the first model's).
    #[arg(long, value_name = "DIR")]
    pub base: Option<PathBuf>,
    /// One weight per model in --models, comma separated [default: 1 each].
    #[arg(long, value_delimiter = ',', action = ArgAction::Set, value_name = "w1,w2,...", allow_negative_numbers = true)]
    pub weights: Option<Vec<f64>>,
    /// SLERP's interpolation position in [0, 1].
    #[arg(long, value_parser = parse_unit, value_name = "T")]
    pub t: Option<f64>,
    /// TIES / DARE: the fraction of each task vector kept, in (0, 1] [default: 1].
    #[arg(long, value_parser = parse_density, value_name = "D")]
    pub density: Option<f64>,
    /// Task methods: scale of the merged task vector added to the base [default: 1].
    #[arg(long, value_name = "L", allow_negative_numbers = true)]
    pub lambda: Option<f64>,
    /// Divide by the sum of weights [default: true for linear and ties, false otherwise].
    #[arg(long, value_name = "true|false")]
    pub normalize: Option<bool>,
    /// Passthrough of one model: half-open layer ranges stacked in order, e.g. 0:24,8:32.
    #[arg(long, value_name = "a:b,c:d")]
    pub slices: Option<String>,
    /// A mergekit YAML config (`--config merge.yml` means this too).
    #[arg(long, value_name = "FILE.yml", conflicts_with_all = FLAG_ONLY)]
    pub merge_config: Option<PathBuf>,
    /// The output folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Stored dtype of the output [default: the YAML's dtype, else the base's].
    #[arg(long, value_parser = parse_save_dtype)]
    pub dtype: Option<SafeDType>,
    /// Shard the output into files of at most this size (e.g. 5GB).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub max_shard_size: Option<u64>,
    /// Replace an existing output folder.
    #[arg(long)]
    pub overwrite: bool,
}

fn parse_unit(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        Ok(x) => Err(format!("{x} is outside [0, 1] (0 gives the first model, 1 the second)")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

fn parse_density(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 1.0 => Ok(x),
        Ok(x) => Err(format!("{x} is outside (0, 1] (the fraction of each task vector kept)")),
        Err(_) => Err(format!("'{s}' is not a number")),
    }
}

/// How the merged (or folded) model is written, reporting its bytes to `bar`.
fn write_options(args: &MergeArgs, bar: &ByteBar) -> WriteOptions {
    WriteOptions {
        dtype: args.dtype,
        max_shard_size: args.max_shard_size,
        overwrite: args.overwrite,
        on_bytes: bar.on_bytes(),
    }
}

pub fn run(args: &MergeArgs, common: &Common) -> Result<(), CliError> {
    if let (Some(adapter), Some(base)) = (&args.adapter, &args.base) {
        let bar = ByteBar::new("fold");
        let r = fold_adapter(base, adapter, &args.out, &write_options(args, &bar))?;
        let moved = bar.finish();
        eprintln!(
            "folded the adapter {} into {}: {} tensors written to {} ({}, {moved})",
            adapter.display(),
            base.display(),
            r.tensors,
            args.out.display(),
            r.dtype.torch_name()
        );
        return Ok(());
    }
    let spec = match &args.merge_config {
        Some(path) => MergeSpec::from_yaml(path, common.seed)?,
        None => {
            let slices = match &args.slices {
                None => None,
                Some(text) => match LayerSpec::parse_slices(text)? {
                    LayerSpec::Slices(r) => Some(r),
                    LayerSpec::Remove(_) => None,
                },
            };
            MergeSpec::from_cli(&CliMerge {
                method: args.method.clone().unwrap_or_default(),
                models: args.models.clone(),
                base: args.base.clone(),
                weights: args.weights.clone(),
                t: args.t,
                density: args.density,
                lambda: args.lambda,
                normalize: args.normalize,
                slices,
                seed: common.seed,
                dtype: None,
            })?
        }
    };
    let bar = ByteBar::new("merge");
    let r = merge(&spec, &args.out, &write_options(args, &bar))?;
    let moved = bar.finish();
    for note in &r.notes {
        eprintln!("note: {note}");
    }
    let models =
        if r.models.len() == 1 { "1 model".to_string() } else { format!("{} models", r.models.len()) };
    eprintln!(
        "merged {models} ({}) into {}: {} layers, {} parameters, {} ({moved})",
        r.method,
        args.out.display(),
        r.layers,
        r.num_parameters,
        r.dtype.torch_name()
    );
    Ok(())
}

//! One place per training stage: pretrain, SFT and DPO are each set up here (memory check,
//! tokenizer, data, reference log-probs, objective, resume identity) and handed to the
//! trainer; merge is `merge::merge` on a `MergeSpec`. The CLI subcommands and the demo both
//! call these, so a stage changes in one place and a run started by either resumes under the
//! same identity.

use crate::data::pairs::load_pairs;
use crate::data::pretrain::load_pretrain;
use crate::data::records::DataStats;
use crate::data::sft::{load_sft, SftFormat};
use crate::dpo::{reference_logps_on, DpoConfig};
use crate::error::{Result, TrainError};
use crate::trainer::config::TrainConfig;
use crate::trainer::objective::Objective;
use crate::trainer::{adapters, memory, train, RunOptions, RunReport};
use serde_json::{json, Map, Value};
use solar_engine::Device;
use solar_model::tokenizer::Tokenizer;
use solar_model::{Llama, LlamaConfig};
use std::path::{Path, PathBuf};

/// What every stage reads: the starting model, the data, optional held-out data.
#[derive(Clone, Debug)]
pub struct StageInput {
    pub model: PathBuf,
    pub data: PathBuf,
    pub eval_data: Option<PathBuf>,
    pub skip_bad_lines: bool,
    /// Print what was read (examples, rows, tokens) on stderr, as the subcommands do.
    pub announce: bool,
    /// DPO: a LoRA adapter folder (PEFT's format) applied to the reference model.
    pub ref_adapter: Option<PathBuf>,
}

impl StageInput {
    /// `model` and `data`, no held-out data, quiet (the demo's way).
    pub fn quiet(model: &Path, data: &Path) -> StageInput {
        StageInput {
            model: model.to_path_buf(),
            data: data.to_path_buf(),
            eval_data: None,
            skip_bad_lines: false,
            announce: false,
            ref_adapter: None,
        }
    }

    fn say(&self, what: &str, path: &Path, s: &DataStats) {
        if self.announce {
            eprintln!(
                "{what} {}: {} examples -> {} rows, {} tokens ({} scored); {} truncated, {} bad lines skipped",
                path.display(),
                s.examples,
                s.rows,
                s.tokens,
                s.scored_tokens,
                s.truncated,
                s.skipped_lines
            );
        }
    }

    /// The held-out data loaded with `load`, when there is any.
    fn eval<T>(&self, load: impl Fn(&Path) -> Result<(T, DataStats)>) -> Result<Option<T>> {
        self.eval_data.as_deref().map(|p| Ok(load(p)?.0)).transpose()
    }
}

/// Refuses, before the data is read or the model loaded, a run whose step cannot fit in the
/// memory the device has (`rows`: rows per micro-batch; DPO's pairs are two rows each).
fn check_memory(
    input: &StageInput,
    cfg: &LlamaConfig,
    rows: usize,
    seq_len: usize,
    device: Device,
    plan: memory::Plan,
) -> Result<()> {
    let avail = memory::available(device, |_| None);
    memory::check_fits(cfg, rows, seq_len, device, plan, avail)
        .map(|_| ())
        .map_err(|e| TrainError::file(&input.model, e))
}

fn load_model(dir: &Path, device: Device) -> Result<Llama> {
    Ok(crate::byte_bar::load_llama(dir)?.to_device(device)?)
}

/// The model to train: the starting model, with fresh LoRA adapters when the run has a spec.
fn load_policy(input: &StageInput, cfg: &TrainConfig, run: &RunOptions) -> Result<Llama> {
    adapters::attach(load_model(&input.model, run.device)?, run.lora.as_ref(), cfg.seed)
}

fn identity(stage: &str, extra: impl IntoIterator<Item = (&'static str, Value)>) -> Map<String, Value> {
    let mut m = Map::from_iter([("stage".to_string(), json!(stage))]);
    m.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
    m
}

/// Continued pretraining on packed text (JSONL with "text", or plain text).
pub fn pretrain(input: &StageInput, cfg: &TrainConfig, run: &RunOptions) -> Result<RunReport> {
    let mc = Llama::load_config(&input.model)?;
    adapters::check_rank(run.lora.as_ref(), &mc, &input.model)?;
    check_memory(input, &mc, cfg.batch, cfg.seq_len, run.device, run.plan(&mc))?;
    let tok = Tokenizer::from_model_dir_if_present(&input.model)?;
    let load = |p: &Path| load_pretrain(p, tok.as_ref(), &mc, cfg.seq_len, input.skip_bad_lines);
    let (rows, stats) = load(&input.data)?;
    input.say("data", &input.data, &stats);
    let eval = input.eval(load)?;
    let model = load_policy(input, cfg, run)?;
    train(model, &Objective::Lm { rows, eval }, cfg, run, identity("pretrain", []))
}

/// Instruction tuning with the loss on responses only, packed or one example a row.
pub fn sft(
    input: &StageInput,
    format: SftFormat,
    packing: bool,
    cfg: &TrainConfig,
    run: &RunOptions,
) -> Result<RunReport> {
    let mc = Llama::load_config(&input.model)?;
    adapters::check_rank(run.lora.as_ref(), &mc, &input.model)?;
    check_memory(input, &mc, cfg.batch, cfg.seq_len, run.device, run.plan(&mc))?;
    let tok = Tokenizer::from_model_dir(&input.model)?;
    let load =
        |p: &Path| load_sft(p, format, &tok, &input.model, &mc, cfg.seq_len, packing, input.skip_bad_lines);
    let (rows, stats) = load(&input.data)?;
    input.say("data", &input.data, &stats);
    let eval = input.eval(load)?;
    let model = load_policy(input, cfg, run)?;
    let id = identity("sft", [("format", json!(format.name())), ("packing", json!(packing))]);
    train(model, &Objective::Lm { rows, eval }, cfg, run, id)
}

/// DPO against `reference` (None: the starting model), whose log-probs are computed once,
/// before training, so only the policy is held while training. With LoRA and no `reference`,
/// the reference is the policy with its adapters switched off (TRL with PEFT does the same):
/// one model in memory. An explicit `reference` is used as given, LoRA or not, with
/// `input.ref_adapter` applied to it (or to the starting model) when there is one.
pub fn dpo(
    input: &StageInput,
    reference: Option<&Path>,
    dpo: DpoConfig,
    cfg: &TrainConfig,
    run: &RunOptions,
) -> Result<RunReport> {
    dpo.validate()?;
    let mc = Llama::load_config(&input.model)?;
    adapters::check_rank(run.lora.as_ref(), &mc, &input.model)?;
    check_memory(input, &mc, cfg.batch.saturating_mul(2), cfg.seq_len, run.device, run.plan(&mc))?;
    let tok = Tokenizer::from_model_dir(&input.model)?;
    let load = |p: &Path| load_pairs(p, &tok, &input.model, &mc, cfg.seq_len, input.skip_bad_lines);
    let (pairs, stats) = load(&input.data)?;
    input.say("pairs", &input.data, &stats);
    let eval_pairs = input.eval(load)?;
    let ref_dir = reference.unwrap_or(&input.model);
    let base_is_reference = reference.is_none() && input.ref_adapter.is_none() && run.lora.is_some();
    let (refs, eval, policy) = {
        let mut reference = if base_is_reference {
            let mut m = load_policy(input, cfg, run)?;
            m.lora_mut().expect("attached").set_enabled(false);
            m
        } else {
            let m = crate::byte_bar::load_llama(ref_dir)?;
            let m = match &input.ref_adapter {
                Some(a) => {
                    let lora = solar_model::lora::peft_io::load_adapter(a, &m.config)?;
                    m.with_lora(lora)?
                }
                None => m,
            };
            m.to_device(run.device)?
        };
        if input.announce {
            let what = match &input.ref_adapter {
                _ if base_is_reference => " (adapters off)".to_string(),
                Some(a) => format!(" with the adapter {}", a.display()),
                None => String::new(),
            };
            eprintln!("reference log-probs of {} pairs from {}{what}", pairs.len(), ref_dir.display());
        }
        let comm = run.dist.map(|d| d.comm);
        let refs = reference_logps_on(&reference, &pairs, cfg.batch, comm)?;
        let eval = match eval_pairs {
            Some(e) => {
                let r = reference_logps_on(&reference, &e, cfg.batch, comm)?;
                Some((e, r))
            }
            None => None,
        };
        let policy = base_is_reference.then(|| {
            reference.lora_mut().expect("attached").set_enabled(true);
            reference
        });
        (refs, eval, policy)
    };
    let model = match policy {
        Some(m) => m,
        None => load_policy(input, cfg, run)?,
    };
    let id = identity(
        "dpo",
        [
            ("beta", json!(dpo.beta)),
            ("loss", json!(dpo.loss.name())),
            ("label_smoothing", json!(dpo.label_smoothing)),
        ],
    );
    train(model, &Objective::Dpo { pairs, refs, cfg: dpo, eval }, cfg, run, id)
}

//! The trainer shared by pretrain, sft and dpo: AdamW with decoupled decay on matrices and
//! embeddings (not norms), a warmup + decay schedule, global-norm clipping, micro-batches with
//! gradient accumulation weighted by tokens, NaN/Inf steps skipped, metrics, atomic
//! checkpoints and exact resume, and the finished model written to OUT in HF layout.
//!
//! One optimizer step takes batch x grad_accum rows, the same rows however they are split, and
//! minimizes the summed loss over the step's counted tokens divided by their count: each
//! micro-batch's summed loss is scaled by 1/count before its backward, and the gradients add.
//! Row order is a seeded permutation per epoch (or file order), derived from the step number,
//! so a resumed run sees exactly the rows an uninterrupted one would.

pub mod adapters;
pub mod checkpoint;
pub mod config;
pub mod data_parallel;
pub mod dist_agree;
pub mod fault;
pub mod memory;
pub mod metrics;
pub mod mfu;
pub mod objective;
pub mod output;
pub mod plan;
pub mod progress;
pub mod schedule;

use crate::error::{Result, TrainError};
use checkpoint::{list_checkpoints, load_checkpoint, save_checkpoint, TrainState};
use config::{differences, TrainConfig};
use data_parallel::{DataParallel, Dist};
use dist_agree::{agree_on_resume, check_rows_per_step, stop_signal};
use metrics::MetricsLog;
use mfu::ModelFlops;
use objective::{Objective, StepLoss, StepSplit};
use output::RunPlace;
use progress::{Progress, StepView};
use serde_json::{json, Map, Value};
use solar_engine::optim::Moments;
use solar_engine::optim::{clip_grad_norm, global_grad_norm, AdamW, AdamWConfig};
use solar_engine::{Device, Grads, Rng};
use solar_model::checkpoint::SafeDType;
use solar_model::names::is_norm;
use solar_model::Llama;
use solar_model::LlamaConfig;
use solar_model::ModelError;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where and how a run writes.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub out: PathBuf,
    pub resume: bool,
    pub overwrite: bool,
    /// Stored dtype of the finished model (None: f32).
    pub save_dtype: Option<SafeDType>,
    /// Tokenizer and generation files are copied from here into OUT.
    pub copy_from: Option<PathBuf>,
    /// Where training runs; a resumed checkpoint (read on the host) is moved here.
    pub device: Device,
    /// The progress bar's label (the stage, or what is trained); empty: "train".
    pub label: String,
    /// Train LoRA adapters of this spec on a frozen base (pipeline.rs attaches them); OUT then
    /// gets PEFT's adapter folder instead of a model.
    pub lora: Option<solar_model::lora::LoraSpec>,
    /// Activation recompute (--recompute): same gradients, less memory, a second forward.
    pub recompute: bool,
    /// One rank of a data parallel job (data_parallel.rs); None: a single process.
    pub dist: Option<Dist>,
}

impl RunOptions {
    /// What the run's memory depends on beyond the model and batch (memory.rs): recompute, and
    /// with LoRA only the adapters are trained.
    pub fn plan(&self, cfg: &solar_model::LlamaConfig) -> memory::Plan {
        memory::Plan::of_run(self.recompute, self.lora.as_ref(), cfg)
    }
}

#[derive(Debug)]
pub struct RunReport {
    pub steps: usize,
    pub last_loss: f64,
    pub bad_steps: usize,
    pub resumed_from: Option<usize>,
}

/// Row indices of 0-based `step`: a seeded permutation per epoch, or file order.
pub struct RowOrder {
    rows: usize,
    per_step: usize,
    seed: u64,
    shuffle: bool,
    cached: Option<(usize, Vec<usize>)>,
}

impl RowOrder {
    pub fn new(rows: usize, per_step: usize, seed: u64, shuffle: bool) -> RowOrder {
        RowOrder { rows, per_step, seed, shuffle, cached: None }
    }
    fn epoch(&mut self, e: usize) -> &[usize] {
        if self.cached.as_ref().is_none_or(|(c, _)| *c != e) {
            let mut p: Vec<usize> = (0..self.rows).collect();
            if self.shuffle {
                Rng::new(self.seed ^ (e as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).shuffle(&mut p);
            }
            self.cached = Some((e, p));
        }
        &self.cached.as_ref().expect("just filled").1
    }
    pub fn step(&mut self, step: usize) -> Vec<usize> {
        (0..self.per_step)
            .map(|i| {
                let (g, n) = (step * self.per_step + i, self.rows);
                self.epoch(g / n)[g % n]
            })
            .collect()
    }
}

fn adamw_config(cfg: &TrainConfig) -> AdamWConfig {
    AdamWConfig { beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weight_decay: cfg.weight_decay }
}

/// Loads the newest complete checkpoint in `work` on resume (its identity must match), or
/// starts fresh.
fn start(
    model: Llama,
    cfg: &TrainConfig,
    run: &RunOptions,
    work: &Path,
    identity: &Map<String, Value>,
) -> Result<(Llama, AdamW, TrainState, Option<usize>)> {
    let fresh = |model| (model, AdamW::new(adamw_config(cfg)), TrainState::empty(identity.clone()), None);
    if !run.resume {
        return Ok(fresh(model));
    }
    let Some((step, dir)) = list_checkpoints(work).pop() else {
        eprintln!("note: --resume: no complete checkpoint in {}; starting from step 0", work.display());
        return Ok(fresh(model));
    };
    let (m, mut opt, state) = load_checkpoint(&dir, adamw_config(cfg), model)?;
    let m = m.to_device(run.device)?;
    for (_, p) in m.trainable_params() {
        if let Some(Moments { m: mut m1, v: mut v1 }) = opt.moments(p.id()).cloned() {
            m1.move_to(run.device)?;
            v1.move_to(run.device)?;
            opt.set_moments(p.id(), Moments { m: m1, v: v1 });
        }
    }
    let diff = differences(identity, &state.identity);
    if !diff.is_empty() {
        return Err(TrainError::file(&dir, format!("cannot resume: the run differs: {}", diff.join("; "))));
    }
    Ok((m, opt, state, Some(step)))
}

/// The model's shape as identity keys (`model.NAME`): a checkpoint of another model (another
/// vocabulary, width or depth) does not resume under this one. Checkpoints written before
/// these keys existed lack them, and a missing one is unknown, not a difference.
fn model_identity(c: &LlamaConfig) -> Map<String, Value> {
    [
        ("model.model_type", json!(c.model_type.name())),
        ("model.vocab_size", json!(c.vocab_size)),
        ("model.hidden_size", json!(c.hidden_size)),
        ("model.intermediate_size", json!(c.intermediate_size)),
        ("model.num_hidden_layers", json!(c.num_hidden_layers)),
        ("model.num_attention_heads", json!(c.num_attention_heads)),
        ("model.num_key_value_heads", json!(c.num_key_value_heads)),
        ("model.head_dim", json!(c.head_dim)),
        ("model.tie_word_embeddings", json!(c.tie_word_embeddings)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl TrainState {
    fn empty(identity: Map<String, Value>) -> TrainState {
        TrainState { step: 0, bad_steps: 0, bad_in_a_row: 0, tokens: 0, identity }
    }
}

/// Trains `model` on `objective`; see the file header.
pub fn train(
    model: Llama,
    objective: &Objective,
    cfg: &TrainConfig,
    run: &RunOptions,
    extra_identity: Map<String, Value>,
) -> Result<RunReport> {
    cfg.validate().map_err(TrainError::Msg)?;
    let rows = objective.rows();
    if rows == 0 {
        return Err(TrainError::Msg("no training rows".into()));
    }
    let total = cfg.total_steps(rows);
    let mut identity = cfg.identity();
    identity.insert("total_steps".into(), json!(total));
    identity.insert("data".into(), json!(objective.fingerprint()));
    identity.extend(model_identity(&model.config));
    identity.extend(adapters::identity(&model));
    identity.extend(extra_identity);

    let dist = run.dist;
    if let Some(d) = &dist {
        check_rows_per_step(cfg.rows_per_step(), d)?;
    }
    // Rank 0 alone writes: OUT, metrics, checkpoints and the final model.
    let leader = dist.is_none_or(|d| d.is_leader());
    let mut place = if leader { Some(RunPlace::prepare(run)?) } else { None };
    if let Some(d) = &dist {
        // Rank 0 has reclaimed what dead runs left before any rank reads a checkpoint.
        d.comm.barrier()?;
    }
    let work = place.as_ref().map_or(run.out.clone(), |p| p.work.clone());
    let (mut model, mut opt, mut state, resumed_from) = start(model, cfg, run, &work, &identity)?;
    if let Some(d) = &dist {
        agree_on_resume(d, resumed_from, &work)?;
    }
    let mut dp = dist.map(|d| DataParallel::new(d, &model, &mut opt)).transpose()?;
    model.set_recompute(run.recompute);
    // metrics.jsonl's peak_alloc_bytes: this run's high-water, from what it holds now.
    solar_engine::alloc_stats::on(run.device).reset_peak();
    let mut log = if leader { Some(MetricsLog::open(&work, state.step)?) } else { None };
    if let Some(s) = resumed_from {
        eprintln!("resuming from step {s} ({})", work.join("checkpoints").display());
    }
    let mut order = RowOrder::new(rows, cfg.rows_per_step(), cfg.seed, cfg.shuffle);
    let schedule = cfg.schedule();
    let ids: Vec<_> = model.trainable_params().iter().map(|(_, p)| p.id()).collect();
    let began = Instant::now();
    let first_step = state.step;
    let mut last_loss = f64::NAN;
    let label = if run.label.is_empty() { "train" } else { run.label.as_str() };
    let progress = Progress::new(label, total, state.step, cfg.log_every, objective.scored_unit());
    // MFU only where a real GPU's peak is known (mfu.rs): on the CPU and the emulator, none.
    let flops = ModelFlops::new(&model.config);
    let peak = mfu::device_peak(run.device);
    // A step's FLOPs ran on every rank's device: MFU is per device.
    let devices = dist.map_or(1.0, |d| d.size() as f64);
    if let Some((_, source)) = &peak {
        progress.println(&format!("MFU against {source}"));
    }
    while state.step < total {
        let step = state.step;
        let lr = schedule.lr(step, total, cfg.lr, cfg.min_lr, cfg.warmup);
        let t0 = Instant::now();
        let picked = order.step(step);
        let step_flops = flops.step(objective.row_lens(&picked));
        let mut grads = Grads::default();
        adapters::set_dropout_step(&model, cfg.seed, Some(step));
        let stepped = match dp.as_mut() {
            None => {
                StepSplit::alone(picked.len(), |s| objective.step(&model, &picked, cfg.batch, &mut grads, s))
            }
            Some(dp) => dp.step(objective, &model, &picked, cfg.batch, &mut grads),
        };
        adapters::set_dropout_step(&model, cfg.seed, None);
        let StepLoss { loss, count, processed, extra } = stepped?;
        let reduced = dp.as_mut().map(|dp| dp.reduce_gradients(&mut grads)).transpose()?;
        let norm = match (&dp, &reduced) {
            (Some(dp), Some(r)) => dp.grad_norm(&model, r)?,
            _ if cfg.clip > 0.0 => clip_grad_norm(&mut grads, &ids, cfg.clip)?,
            _ => global_grad_norm(&grads, &ids)?,
        };
        let bad = !loss.is_finite() || !norm.is_finite() || count == 0;
        if bad {
            state.bad_steps += 1;
            state.bad_in_a_row += 1;
            progress.println(&format!(
                "warning: step {}: loss {loss}, grad norm {norm}: skipped ({} in a row)",
                step + 1,
                state.bad_in_a_row
            ));
            if state.bad_in_a_row >= cfg.max_bad_steps.max(1) {
                let last = list_checkpoints(&work)
                    .pop()
                    .map_or("none".to_string(), |(_, d)| d.display().to_string());
                return Err(TrainError::Msg(format!(
                    "stopped: {} bad steps (NaN/Inf) in a row at step {}; last good checkpoint: {last}",
                    state.bad_in_a_row,
                    step + 1
                )));
            }
        } else {
            state.bad_in_a_row = 0;
            match (dp.as_mut(), reduced) {
                (Some(dp), Some(r)) => dp.update(&mut model, &mut opt, r, norm, cfg.clip, lr)?,
                _ => {
                    opt.begin_step();
                    for (name, p) in model.trainable_params_mut() {
                        if let Some(g) = grads.get_id(p.id()) {
                            opt.update(p, g, !is_norm(name), lr)?;
                        }
                    }
                }
            }
            state.tokens += count as u64;
            last_loss = loss;
        }
        state.step += 1;
        let dt = t0.elapsed().as_secs_f64().max(1e-9);
        let (tok_s, scored_s) = (processed as f64 / dt, count as f64 / dt);
        let mut rec = json!({"step": state.step, "loss": loss, "lr": lr, "grad_norm": norm,
                             "tokens": processed, "tokens_per_s": tok_s,
                             "scored": count, "scored_per_s": scored_s, "scored_unit": objective.scored_unit(),
                             "skipped": bad});
        let mfu = peak.as_ref().map(|(p, _)| step_flops / dt / (p * devices));
        if let (Value::Object(r), Value::Object(e)) = (&mut rec, extra) {
            r.extend(e);
        }
        if let (Value::Object(r), Some(m)) = (&mut rec, mfu) {
            r.insert("mfu".into(), json!(m));
        }
        if let (Value::Object(r), Value::Object(m)) = (&mut rec, metrics::memory_fields(run.device)) {
            r.extend(m);
        }
        if let Some(log) = log.as_mut() {
            log.record(&rec)?;
        }
        let done = (state.step - first_step) as f64;
        let eta_s = began.elapsed().as_secs_f64() / done * (total - state.step) as f64;
        progress.step(&StepView {
            step: state.step,
            total,
            loss,
            lr,
            grad_norm: norm,
            tok_s,
            scored_s,
            mfu,
            eta_s,
        });
        if let (Some(log), true) =
            (log.as_mut(), cfg.eval_every > 0 && (state.step % cfg.eval_every == 0 || state.step == total))
        {
            if let Some(eval_loss) = objective.eval(&model, cfg.batch)? {
                log.record(&json!({"step": state.step, "eval_loss": eval_loss}))?;
                progress.println(&format!("step {}: eval loss {eval_loss:.4}", state.step));
            }
        }
        fault::maybe_abort("after-step", state.step);
        if cfg.save_every > 0 && state.step % cfg.save_every == 0 && state.step < total {
            // ZeRO: every rank sends its shard of the moments; rank 0 writes them whole.
            let gathered = dp.as_ref().map(|dp| dp.gathered_optimizer(&model, &opt)).transpose()?.flatten();
            if leader {
                save_checkpoint(&work, &model, gathered.as_ref().unwrap_or(&opt), &state, cfg.keep)?;
            }
        }
        if let Some(sig) = stop_signal(dist.as_ref())? {
            if let Some(place) = &place {
                stopped_early(place, state.step, total);
            }
            return Err(ModelError::Interrupted(sig).into());
        }
    }
    progress.finish();
    if let Some(place) = place.as_mut() {
        place.save_final(&model, run)?;
    }
    if let Some(d) = &dist {
        // The job ends when the model is in place (or with rank 0's error, which aborts it).
        d.comm.barrier()?;
    }
    Ok(RunReport { steps: state.step, last_loss, bad_steps: state.bad_steps, resumed_from })
}

/// Says what an interrupted run leaves: a resumable run in OUT, or OUT as it was.
fn stopped_early(place: &RunPlace, step: usize, total: usize) {
    let kept = match list_checkpoints(&place.work).pop() {
        Some((s, _)) if place.work == place.out => format!("resume from step {s} with --resume"),
        _ if place.work == place.out => "no checkpoint was written yet".to_string(),
        _ => format!("{} is unchanged", place.out.display()),
    };
    eprintln!("stopping after step {step} of {total}: {kept}");
}

/// Whether OUT holds a finished model.
pub fn has_model(out: &Path) -> bool {
    out.join("config.json").is_file()
}

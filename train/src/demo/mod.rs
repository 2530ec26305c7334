//! `solar-train demo`: the SOLAR recipe end to end, offline, in miniature. It generates its
//! data (data.rs), runs every stage through the library code of the real subcommands
//! (stages.rs), evaluates every model on every task on held-out data, checks the paper's
//! claims against the numbers, and writes OUT/report.md, OUT/report.json and the images
//! (report.rs, plot.rs). Default OUT: runs/demo. `quick` shrinks the model and the steps.
//! OUT is built whole in a staging folder beside it and swapped in at the end (StagingDir), so
//! it is always the previous complete demo (or whatever it held) or the new one, and an
//! existing OUT is replaced only with `overwrite`.

pub mod claims;
pub mod data;
pub mod plot;
pub mod report;
pub mod stages;

use crate::data::lm::read_token_sequences;
use crate::data::pairs::load_pairs;
use crate::data::sft::SftFormat;
use crate::dpo::{reference_logps, DpoConfig};
use crate::error::{Result, TrainError};
use crate::eval::choice::{eval_choice, load_choice_examples};
use crate::eval::dpo::eval_dpo;
use crate::eval::generate::{eval_generate, load_generate_examples};
use crate::eval::heatmap_svg::write_heatmap_svg;
use crate::eval::layers::{adjacent, layer_similarity};
use crate::eval::lm::eval_lm;
use crate::merge::{merge, CliMerge, MergeSpec};
use claims::{accuracy_interval, check_claims};
use data::{choice_records, sum_distractors, sum_pairs, word_distractors, DemoData};
use report::Row;
use serde_json::json;
use solar_model::checkpoint::{StagingDir, WriteOptions};
use solar_model::tokenizer::Tokenizer;
use stages::{model_dir, write_jsonl, Recipe};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The up-scaled model's layer heatmap, in OUT.
pub const LAYERS_SVG: &str = "layers_upscaled.svg";

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub out: PathBuf,
    /// Replace an existing OUT (at the end, when the new one is complete).
    pub overwrite: bool,
    pub quick: bool,
    pub seed: u64,
    pub device: solar_engine::Device,
}

/// The data files a run writes under OUT/data.
struct Files {
    pretrain: PathBuf,
    heldout: PathBuf,
    sft_add: PathBuf,
    sft_rev: PathBuf,
    sft_both: PathBuf,
    pairs: PathBuf,
    pairs_test: PathBuf,
    add_test: PathBuf,
    rev_test: PathBuf,
    add_choice: PathBuf,
    rev_choice: PathBuf,
}

fn write_data(dir: &Path, d: &DemoData, quick: bool, seed: u64) -> Result<Files> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::file(dir, format!("cannot create: {e}")))?;
    let f = |n: &str| dir.join(n);
    let files = Files {
        pretrain: f("pretrain.jsonl"),
        heldout: f("heldout.jsonl"),
        sft_add: f("sft_add.jsonl"),
        sft_rev: f("sft_reverse.jsonl"),
        sft_both: f("sft_both.jsonl"),
        pairs: f("pairs.jsonl"),
        pairs_test: f("pairs_heldout.jsonl"),
        add_test: f("add_heldout.jsonl"),
        rev_test: f("reverse_heldout.jsonl"),
        add_choice: f("add_choice.jsonl"),
        rev_choice: f("reverse_choice.jsonl"),
    };
    let docs = if quick { 200 } else { 1500 };
    write_jsonl(&files.pretrain, &d.pretrain_text(false, docs, seed))?;
    write_jsonl(&files.heldout, &d.pretrain_text(true, data::HELD_OUT, seed + 1))?;
    write_jsonl(&files.sft_add, &data::sft_records(&d.add_train))?;
    write_jsonl(&files.sft_rev, &data::sft_records(&d.rev_train))?;
    let both: Vec<_> = d.add_train.iter().chain(&d.rev_train).cloned().collect();
    write_jsonl(&files.sft_both, &data::sft_records(&both))?;
    write_jsonl(&files.pairs, &sum_pairs(&d.add_train, seed + 2))?;
    write_jsonl(&files.pairs_test, &sum_pairs(&d.add_test, seed + 3))?;
    write_jsonl(&files.add_test, &data::sft_records(&d.add_test))?;
    write_jsonl(&files.rev_test, &data::sft_records(&d.rev_test))?;
    write_jsonl(&files.add_choice, &choice_records(&d.add_test, sum_distractors, seed + 4))?;
    write_jsonl(&files.rev_choice, &choice_records(&d.rev_test, word_distractors, seed + 5))?;
    Ok(files)
}

/// Every task's score of the model in `dir`, as the row `name` of the report.
fn evaluate(r: &Recipe, name: &str, dir: &Path, files: &Files, seq_len: usize) -> Result<Row> {
    let model = stages::load(r, dir)?;
    let tok = Tokenizer::from_model_dir(dir)?;
    let (mut m, mut counts) = (BTreeMap::new(), BTreeMap::new());
    let seqs = read_token_sequences(&files.heldout, Some(&tok), model.config.vocab_size)?;
    // Each document on its own (for the paired loss claim); the held-out loss is their
    // token-weighted mean, which is what one pass over all of them gives.
    let per_doc: Vec<_> =
        seqs.iter().map(|s| eval_lm(&model, std::slice::from_ref(s), seq_len)).collect::<Result<_>>()?;
    let tokens: usize = per_doc.iter().map(|e| e.tokens).sum();
    let summed: f64 = per_doc.iter().map(|e| e.loss * e.tokens as f64).sum();
    m.insert("heldout_loss".into(), summed / tokens.max(1) as f64);
    let doc_losses = per_doc.iter().map(|e| e.loss).collect();
    for (key, path) in [("add_em", &files.add_test), ("reverse_em", &files.rev_test)] {
        let ex = load_generate_examples(path, SftFormat::PromptCompletion, &tok, dir, &model)?;
        let got = eval_generate(&model, &tok, &ex, 6)?;
        m.insert(key.to_string(), got.exact_match);
        counts.insert(key.to_string(), got.examples);
    }
    for (key, path) in [("add_choice_acc", &files.add_choice), ("reverse_choice_acc", &files.rev_choice)] {
        let ex = load_choice_examples(path)?;
        let got = eval_choice(&model, &tok, &ex, "", seq_len, path)?;
        m.insert(key.to_string(), got.acc);
        counts.insert(key.to_string(), got.examples);
    }
    let (pairs, _) = load_pairs(&files.pairs_test, &tok, dir, &model.config, seq_len, false)?;
    let lps = reference_logps(&model, &pairs, 16)?;
    let prefer = lps.iter().filter(|r| r.chosen > r.rejected).count();
    m.insert("pair_pref_acc".into(), prefer as f64 / lps.len().max(1) as f64);
    counts.insert("pair_pref_acc".into(), lps.len());
    Ok(Row { stage: name.to_string(), model: format!("models/{name}"), metrics: m, counts, doc_losses })
}

/// Runs the demo; `progress` gets one line per stage.
pub fn run_demo(opts: &DemoOptions, mut progress: impl FnMut(&str)) -> Result<Vec<Row>> {
    let began = Instant::now();
    let r = Recipe { device: opts.device, ..Recipe::new(opts.quick) };
    let stage = StagingDir::create(&opts.out, opts.overwrite)?;
    let out = &stage.path().to_path_buf();
    let seed = opts.seed;
    let mut say = |s: &str| progress(&format!("[{:>5.1}s] {s}", began.elapsed().as_secs_f64()));
    let d = DemoData::generate(seed);
    let files = write_data(&out.join("data"), &d, opts.quick, seed)?;
    let m = |name: &str| model_dir(out, name);

    say("1/7 base: init and pretrain a small Llama");
    let base_cfg = r.base_config();
    stages::init_base(&m("init"), &base_cfg, seed)?;
    stages::pretrain(&r, &m("init"), &files.pretrain, &m("base"), r.base_steps, seed)?;

    let n = base_cfg.num_hidden_layers;
    say(&format!("2/7 upscale: depth up-scaling, {n} layers, remove m = n/4"));
    let layers = stages::upscale_base(&m("base"), &m("upscaled"), n)?;
    let up = stages::load(&r, &m("upscaled"))?;
    let tok = Tokenizer::from_model_dir(&m("upscaled"))?;
    let seqs = read_token_sequences(&files.heldout, Some(&tok), up.config.vocab_size)?;
    let sim = layer_similarity(&up, &seqs, r.seq_len)?;
    let title = format!("Layer similarity of the up-scaled model ({layers} layers)");
    write_heatmap_svg(&out.join(LAYERS_SVG), &sim.similarity, &title, Some(layers / 2))?;
    drop(up);

    say(&format!(
        "3/7 pretrain: continue the up-scaled model ({layers} layers) and the base, {} steps each",
        r.extra_steps
    ));
    stages::pretrain(
        &r,
        &m("upscaled"),
        &files.pretrain,
        &m("upscaled_pretrained"),
        r.extra_steps,
        seed + 10,
    )?;
    stages::pretrain(&r, &m("base"), &files.pretrain, &m("base_pretrained"), r.extra_steps, seed + 10)?;

    // The specialists share an ancestor, as the paper's merged candidates did: each continues
    // the model tuned on both tasks on one task only, so they differ in strengths.
    say("4/7 sft: one model on both tasks, then an add specialist and a reverse specialist from it");
    stages::sft(&r, &m("upscaled_pretrained"), &files.sft_both, &m("sft_both"), seed + 22)?;
    stages::sft(&r, &m("sft_both"), &files.sft_add, &m("sft_add"), seed + 20)?;
    stages::sft(&r, &m("sft_both"), &files.sft_rev, &m("sft_reverse"), seed + 21)?;

    say("5/7 dpo: on the model tuned on both tasks, preferring right sums to wrong ones");
    stages::dpo(&r, &m("sft_both"), &files.pairs, &m("dpo"), seed + 30)?;

    say("6/7 merge: average and SLERP of the two specialists");
    let specialists = vec![m("sft_add"), m("sft_reverse")];
    let overwrite = WriteOptions { overwrite: true, ..Default::default() };
    let linear = CliMerge {
        method: "linear".into(),
        models: specialists.clone(),
        weights: Some(vec![0.5, 0.5]),
        seed,
        ..Default::default()
    };
    merge(&MergeSpec::from_cli(&linear)?, &m("merge_average"), &overwrite)?;
    let slerp =
        CliMerge { method: "slerp".into(), models: specialists, t: Some(0.5), seed, ..Default::default() };
    merge(&MergeSpec::from_cli(&slerp)?, &m("merge_slerp"), &overwrite)?;

    say("7/7 eval: every model on every task (held-out data)");
    let order = [
        "base",
        "base_pretrained",
        "upscaled",
        "upscaled_pretrained",
        "sft_add",
        "sft_reverse",
        "sft_both",
        "dpo",
        "merge_average",
        "merge_slerp",
    ];
    let mut rows = Vec::new();
    for name in order {
        rows.push(evaluate(&r, name, &m(name), &files, r.seq_len)?);
    }
    // TRL's reward accuracy of the DPO model against its SFT reference, on held-out pairs.
    let dpo_held_out = {
        let (policy, reference) = (stages::load(&r, &m("dpo"))?, stages::load(&r, &m("sft_both"))?);
        let (pairs, _) = load_pairs(&files.pairs_test, &tok, &m("dpo"), &policy.config, r.seq_len, false)?;
        let cfg = DpoConfig { beta: stages::DPO_BETA, ..Default::default() };
        eval_dpo(&policy, &reference, &pairs, &cfg, 16)?
    };
    say("writing the report");
    let claims = check_claims(&rows, &dpo_held_out);
    let sections = images(out, &sim, &r)?;
    report::write_markdown(&out.join("report.md"), &rows, &claims, &sections)?;
    let run = json!({"quick": opts.quick, "seed": seed, "seconds": began.elapsed().as_secs_f64(),
                     "dpo_heldout_vs_sft": dpo_held_out,
                     "dpo_rewards_accuracies_interval": accuracy_interval(dpo_held_out.rewards_accuracies, dpo_held_out.pairs),
                     "base_layers": n, "upscaled_layers": layers, "adjacent_layer_similarity": adjacent(&sim)});
    report::write_json(&out.join("report.json"), &rows, &claims, run)?;
    stage.commit()?;
    Ok(rows)
}

/// (step, loss) of the run in `dir`, its steps shifted by `offset` (where its stage began).
fn curve(dir: &Path, offset: usize) -> Vec<(f64, f64)> {
    stages::loss_curve(dir).into_iter().map(|(x, y)| (x + offset as f64, y)).collect()
}

/// Loss curves and the heatmap, as Markdown sections that show the images. Each chart follows
/// one line of descent, so a stage that continues another starts where its parent ended.
fn images(out: &Path, sim: &crate::eval::layers::LayerSimilarity, r: &Recipe) -> Result<Vec<String>> {
    let m = |name: &str| model_dir(out, name);
    let series = |label: &str, name: &str, offset: usize, color: usize| plot::Series {
        label: label.into(),
        points: curve(&m(name), offset),
        color,
    };
    let marker = |step: usize, label: &str| plot::Marker { step: step as f64, label: label.into() };
    let charts = [
        (
            "loss_pretrain.svg",
            "Pretraining: the base, then up-scaled vs base trained as long",
            vec![
                series("base", "base", 0, 0),
                series("up-scaled, continued", "upscaled_pretrained", r.base_steps, 1),
                series("base, continued", "base_pretrained", r.base_steps, 2),
            ],
            vec![marker(0, "pretrain base"), marker(r.base_steps, "up-scale + continue")],
        ),
        // The same continuation on its own scale: beside the base's first steps (loss ~6) the
        // gap between up-scaled and base (hundredths) would be a single line.
        (
            "loss_continued.svg",
            "Continued pretraining: up-scaled vs base (zoomed)",
            vec![
                series("up-scaled, continued", "upscaled_pretrained", r.base_steps, 1),
                series("base, continued", "base_pretrained", r.base_steps, 2),
            ],
            vec![],
        ),
        (
            "loss_sft.svg",
            "SFT: both tasks, then one specialist per task",
            vec![
                series("both tasks", "sft_both", 0, 0),
                series("add specialist", "sft_add", r.sft_steps, 1),
                series("reverse specialist", "sft_reverse", r.sft_steps, 2),
            ],
            vec![marker(0, "SFT on both"), marker(r.sft_steps, "specialists")],
        ),
        (
            "loss_dpo.svg",
            "DPO from the model tuned on both tasks",
            vec![series("dpo (sigmoid loss)", "dpo", 0, 0)],
            vec![marker(0, "DPO")],
        ),
    ];
    let mut sections = Vec::new();
    for (file, title, series, markers) in charts {
        let got = plot::write_loss_chart(&out.join(file), title, &series, &markers)?;
        let (x0, x1) = got.steps;
        let (y0, y1) = got.loss;
        sections.push(format!(
            "## {title}\n\n![{title}]({file})\n\nSteps {x0:.0} to {x1:.0}, loss {y0:.3} to {y1:.3}. Dots are the loss of each step, lines a centred moving average; dashed lines mark where each stage began.\n"
        ));
    }
    let adj: Vec<String> = adjacent(sim).iter().map(|v| format!("{v:.3}")).collect();
    sections.push(format!(
        "## Layer distance of the up-scaled model\n\n![layer similarity]({LAYERS_SVG})\n\nMean cosine similarity between the hidden states after each pair of its {} layers (bright = similar), on the held-out text at {} tokens. Neighbours: {}. The red lines mark the seam, where the second copy of the base's layers begins.\n",
        sim.layers,
        r.seq_len,
        adj.join(", ")
    ));
    Ok(sections)
}

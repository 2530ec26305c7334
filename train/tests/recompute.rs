//! Activation recompute (`--recompute`) changes memory, never results: with it, every
//! parameter's gradient is bitwise the one without it, for the next-token loss (packed rows
//! with document masks, tied and untied heads) and for DPO's per-sequence log-probs, on the CPU
//! and on the CUDA backend (the emulator without a GPU); and a training run ends with bitwise
//! the same weights and losses. (What it saves is measured in memory_measured.rs.)

use serde_json::{Map, Value};
use solar_engine::{ops, Device, Grads, Rng, Tape, Tensor};
use solar_model::llama::next_token_targets;
use solar_model::lora::{Lora, LoraSpec, ALL_TARGETS};
use solar_model::presets::preset;
use solar_model::{Llama, LlamaConfig, ModelInput};
use solar_train::data::rows::LmRow;
use solar_train::trainer::config::TrainConfig;
use solar_train::trainer::objective::Objective;
use solar_train::trainer::{train, RunOptions};
use std::path::{Path, PathBuf};

/// Two packed documents per row (positions restart, attention stays inside a document).
fn packed(b: usize, t: usize, vocab: u32, seed: u64) -> (ModelInput, Tensor) {
    let mut rng = Rng::new(seed);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(vocab as u64) as u32).collect();
    let cut = t / 3;
    let pos: Vec<u32> = (0..b * t).map(|i| if i % t < cut { i % t } else { i % t - cut } as u32).collect();
    let doc: Vec<u32> = (0..b * t).map(|i| u32::from(i % t >= cut)).collect();
    let input = ModelInput {
        ids: Tensor::from_vec(ids.clone(), [b, t]).unwrap(),
        positions: Tensor::from_vec(pos, [b, t]).unwrap(),
        doc_ids: Some(Tensor::from_vec(doc, [b, t]).unwrap()),
    };
    (input, Tensor::from_vec(next_token_targets(&ids, b, t), [b, t]).unwrap())
}

/// (ops on the tape, [loss bits, every parameter's gradient bits]) of the model's loss, or of
/// a weighted sum of its per-sequence log-probs (`logps`), with recompute on or off.
fn grads(
    m: &mut Llama,
    recompute: bool,
    logps: bool,
    input: &ModelInput,
    targets: &Tensor,
) -> (usize, Vec<Vec<u64>>) {
    m.set_recompute(recompute);
    let tape = Tape::new();
    let loss = if logps {
        let lp = m.sequence_logprobs(Some(&tape), input, targets).unwrap().logps; // [B], on the CPU
        let w = Tensor::from_vec(
            (0..lp.elem_count()).map(|i| 0.5 - i as f32).collect::<Vec<_>>(),
            [lp.elem_count()],
        )
        .unwrap();
        ops::sum(&ops::mul(&lp, &w).unwrap()).unwrap()
    } else {
        m.loss(Some(&tape), input, targets).unwrap().loss_sum
    };
    let recorded = tape.len();
    let g: Grads = tape.backward(&loss).unwrap();
    let bits = |t: &Tensor| t.to_vec_f64().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut out = vec![bits(&loss)];
    for (name, p) in m.trainable_params() {
        out.push(bits(g.get(p).unwrap_or_else(|| panic!("{name}: no gradient (recompute {recompute})"))));
    }
    (recorded, out)
}

fn assert_same_grads(what: &str, m: &mut Llama, input: &ModelInput, targets: &Tensor) {
    for logps in [false, true] {
        let (ops_plain, plain) = grads(m, false, logps, input, targets);
        let (ops_re, re) = grads(m, true, logps, input, targets);
        // One node per layer instead of its dozens of ops: the recompute path really ran.
        let layers = m.config.num_hidden_layers;
        assert!(
            ops_re + 10 * layers <= ops_plain,
            "{what}: {ops_re} ops with recompute, {ops_plain} without"
        );
        let names: Vec<String> = std::iter::once("loss".to_string())
            .chain(m.trainable_params().iter().map(|(n, _)| n.to_string()))
            .collect();
        for ((a, b), name) in plain.iter().zip(&re).zip(&names) {
            assert!(a == b, "{what} (logps {logps}): {name} differs with recompute");
        }
    }
}

#[test]
fn recompute_leaves_cpu_gradients_bitwise_unchanged() {
    for tied in [false, true] {
        let mut cfg = preset("tiny").unwrap();
        cfg.tie_word_embeddings = tied;
        let mut m = Llama::init(cfg, 5).unwrap();
        let (input, targets) = packed(2, 24, m.config.vocab_size as u32, 6);
        assert_same_grads(&format!("cpu tied {tied}"), &mut m, &input, &targets);
    }
}

/// With LoRA the recomputed layer carries its adapters: the adapters' gradients (B made
/// nonzero, so A's are too) are bitwise the same, and the frozen base gets none either way.
#[test]
fn recompute_leaves_lora_gradients_bitwise_unchanged() {
    let m = Llama::init(preset("tiny").unwrap(), 5).unwrap();
    let spec = LoraSpec { r: 4, alpha: 8.0, dropout: 0.0, targets: ALL_TARGETS.to_vec(), rslora: false };
    let lora = Lora::init(spec, &m.config, 7).unwrap();
    let mut m = m.with_lora(lora).unwrap();
    let mut rng = Rng::new(11);
    for (name, p) in m.trainable_params_mut() {
        if name.contains("lora_B") {
            *p = Tensor::rand_uniform(p.dims().to_vec(), -0.3, 0.3, p.dtype(), &mut rng);
        }
    }
    let (input, targets) = packed(2, 24, m.config.vocab_size as u32, 6);
    assert_same_grads("cpu lora", &mut m, &input, &targets);
}

/// Head dim 64 (what the attention kernels take), GQA, two layers: small for the emulator.
fn cuda_config() -> LlamaConfig {
    let mut c = preset("tiny").unwrap();
    c.hidden_size = 128;
    c.num_attention_heads = 2;
    c.num_key_value_heads = 1;
    c.head_dim = 64;
    c.intermediate_size = 256;
    c.num_hidden_layers = 2;
    c.vocab_size = 160;
    c.tie_word_embeddings = false;
    c
}

#[test]
fn recompute_leaves_cuda_gradients_bitwise_unchanged() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let mut m = Llama::init(cuda_config(), 8).unwrap().to_device(Device::Cuda(0)).unwrap();
    let (input, targets) = packed(2, 16, 160, 9);
    assert_same_grads("cuda", &mut m, &input, &targets);
}

fn out(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("solar-recompute-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn rows(n: usize, len: usize, seed: u64) -> Vec<LmRow> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| LmRow::single((0..len).map(|_| 3 + rng.below(60) as u32).collect(), |t| t > 2)).collect()
}

fn run(o: &Path, model: Llama, c: &TrainConfig, recompute: bool) -> Vec<Value> {
    let obj = Objective::Lm { rows: rows(8, c.seq_len, 3), eval: None };
    let opts = RunOptions { out: o.to_path_buf(), recompute, ..Default::default() };
    train(model, &obj, c, &opts, Map::new()).unwrap();
    let text = std::fs::read_to_string(o.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn cfg(steps: usize, batch: usize, seq_len: usize) -> TrainConfig {
    TrainConfig {
        lr: 1e-2,
        warmup: 1,
        steps: Some(steps),
        batch,
        seq_len,
        log_every: 0,
        ..Default::default()
    }
}

#[test]
fn a_recompute_run_ends_with_bitwise_the_same_weights() {
    let c = cfg(3, 4, 24);
    let (a, b) = (out("plain"), out("re"));
    let model = || Llama::init(preset("tiny").unwrap(), 11).unwrap();
    let ma = run(&a, model(), &c, false);
    let mb = run(&b, model(), &c, true);
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(weights(&a) == weights(&b), "the finished models differ");
    for (x, y) in ma.iter().zip(&mb) {
        assert_eq!(x["loss"], y["loss"]);
        assert_eq!(x["grad_norm"], y["grad_norm"]);
        for key in ["peak_alloc_bytes", "peak_rss_bytes"] {
            assert!(x[key].as_u64().is_some_and(|v| v > 0), "metrics line without {key}: {x}");
        }
    }
    let _ = (std::fs::remove_dir_all(&a), std::fs::remove_dir_all(&b));
}

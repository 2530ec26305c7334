//! The trainer's contract on a tiny model: batch 8 x accumulation 1 and batch 1 x accumulation 8
//! give the same update on masked rows of varied lengths (token-weighted, up to float
//! rounding); resuming from a mid-run checkpoint ends bitwise where an uninterrupted run ends;
//! a resume with other settings is refused naming what differs; an occupied OUT is refused;
//! the same seed gives bitwise the same weights; and training lowers the loss.

use serde_json::Map;
use solar_engine::Rng;
use solar_model::presets::preset;
use solar_model::Llama;
use solar_train::data::rows::LmRow;
use solar_train::trainer::config::TrainConfig;
use solar_train::trainer::objective::Objective;
use solar_train::trainer::{train, RunOptions};
use std::path::{Path, PathBuf};

fn out(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("solar-trainer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// SFT-like rows: a prompt (unscored) then a response, lengths 5..=20, from a seeded stream.
fn rows(n: usize, seed: u64) -> Vec<LmRow> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let len = 5 + rng.below(16) as usize;
            let prompt = 1 + rng.below(len as u64 - 2) as usize;
            let ids: Vec<u32> = (0..len).map(|_| 3 + rng.below(60) as u32).collect();
            LmRow::single(ids, |t| t > prompt)
        })
        .collect()
}

fn model() -> Llama {
    Llama::init(preset("tiny").unwrap(), 11).unwrap()
}

fn weights(dir: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    let m = Llama::load(dir).unwrap();
    m.named_params().map(|(n, t)| (n.to_string(), t.to_vec::<f32>().unwrap())).collect()
}

fn cfg(steps: usize, batch: usize, accum: usize) -> TrainConfig {
    TrainConfig {
        lr: 1e-2,
        warmup: 1,
        steps: Some(steps),
        batch,
        grad_accum: accum,
        seq_len: 32,
        log_every: 0,
        ..Default::default()
    }
}

fn run(
    o: &Path,
    c: &TrainConfig,
    data: Vec<LmRow>,
    resume: bool,
) -> solar_train::error::Result<solar_train::trainer::RunReport> {
    let obj = Objective::Lm { rows: data, eval: None };
    train(model(), &obj, c, &RunOptions { out: o.to_path_buf(), resume, ..Default::default() }, Map::new())
}

#[test]
fn accumulation_split_does_not_change_the_update() {
    let data = rows(16, 3);
    let (a, b) = (out("acc-8x1"), out("acc-1x8"));
    run(&a, &cfg(2, 8, 1), data.clone(), false).unwrap();
    run(&b, &cfg(2, 1, 8), data, false).unwrap();
    let (wa, wb) = (weights(&a), weights(&b));
    let mut worst: f32 = 0.0;
    for ((name, x), (_, y)) in wa.iter().zip(&wb) {
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs());
            assert!((p - q).abs() <= 1e-5 + 1e-4 * q.abs(), "{name}: {p} vs {q}");
        }
    }
    eprintln!("batch 8 x 1 vs 1 x 8: largest weight difference {worst:e}");
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn resuming_from_a_checkpoint_is_bitwise_exact_and_checks_settings() {
    let data = rows(24, 4);
    let c = TrainConfig { save_every: 2, keep: 5, ..cfg(6, 2, 2) };
    let (whole, resumed) = (out("whole"), out("resumed"));
    let report = run(&whole, &c, data.clone(), false).unwrap();
    assert_eq!(report.steps, 6);
    // The same run again, then pretend it died after step 4: drop the finished model and the
    // later checkpoints, and resume.
    run(&resumed, &c, data.clone(), false).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::remove_file(resumed.join(f)).unwrap();
    }
    let r = run(&resumed, &c, data.clone(), true).unwrap();
    assert_eq!(r.resumed_from, Some(4));
    for ((name, x), (_, y)) in weights(&whole).iter().zip(&weights(&resumed)) {
        assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()), "{name} differs after resume");
    }
    let lines = std::fs::read_to_string(resumed.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6, "metrics hold one record per step after resume");
    // Other settings, or other data, are refused, naming the difference.
    let e =
        run(&resumed, &TrainConfig { lr: 2e-2, ..c.clone() }, data.clone(), true).unwrap_err().to_string();
    assert!(e.contains("lr") && e.contains("cannot resume"), "{e}");
    let e = run(&resumed, &c, rows(24, 5), true).unwrap_err().to_string();
    assert!(e.contains("data"), "{e}");
    // Without --resume or --overwrite an occupied OUT is refused.
    let e = run(&resumed, &c, data, false).unwrap_err().to_string();
    assert!(e.contains("--overwrite"), "{e}");
    for d in [whole, resumed] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn same_seed_same_weights_and_the_loss_falls() {
    let data = rows(8, 6);
    let (a, b) = (out("seed-a"), out("seed-b"));
    let c = TrainConfig { lr: 3e-2, ..cfg(30, 4, 1) };
    run(&a, &c, data.clone(), false).unwrap();
    run(&b, &c, data, false).unwrap();
    assert_eq!(weights(&a), weights(&b));
    let losses: Vec<f64> = std::fs::read_to_string(a.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect();
    assert!(losses[29] < 0.5 * losses[0], "loss {} -> {}", losses[0], losses[29]);
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

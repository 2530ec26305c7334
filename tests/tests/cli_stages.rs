//! SFT and DPO through the command line on a tiny model: an Alpaca SFT run lowers its loss; DPO
//! against the starting model begins at loss ln 2 with zero rewards (`eval --task dpo` of a
//! model against itself), and a short DPO run on pairs whose rejected answer is wrong raises
//! rewards/accuracies on them; `eval --task dpo --json` prints exactly TRL's keys.

use serde_json::Value;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("cli_stages_{name}"))
}

/// Every record of OUT/metrics.jsonl.
fn metrics(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect()
}

fn losses(out: &Path) -> Vec<f64> {
    metrics(out).iter().filter_map(|r| r["loss"].as_f64()).collect()
}

fn base(d: &Path) -> PathBuf {
    let b = d.join("base");
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&b), "--seed", "9"]));
    b
}

#[test]
fn sft_on_alpaca_lowers_the_loss() {
    let d = scratch("sft");
    let b = base(&d);
    let data = d.join("alpaca.jsonl");
    let lines: Vec<String> = (0..12)
        .map(|i| serde_json::json!({"instruction": format!("Add {i} and 2."), "input": "", "output": format!("{}", i + 2)}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let out = d.join("out");
    ok(&solar_train(&[
        "sft",
        "--model",
        s(&b),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--format",
        "alpaca",
        "--steps",
        "40",
        "--batch",
        "4",
        "--seq-len",
        "256",
        "--lr",
        "3e-3",
        "--warmup",
        "4",
        "--packing",
        "--eval-data",
        s(&data),
        "--eval-every",
        "20",
        "--save-every",
        "5",
        "--keep",
        "2",
    ]));
    let l = losses(&out);
    assert_eq!(l.len(), 40);
    let evals: Vec<Value> = metrics(&out).into_iter().filter(|v| v.get("eval_loss").is_some()).collect();
    assert_eq!(evals.iter().map(|v| v["step"].as_u64().unwrap()).collect::<Vec<_>>(), [20, 40]);
    let kept: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 2, "--keep 2 keeps the newest two: {kept:?}");
    assert!(kept.contains(&"step-000035".to_string()), "{kept:?}");
    assert!(l[39] < 0.5 * l[0], "sft loss {} -> {}", l[0], l[39]);
    assert!(out.join("tokenizer.json").exists() && out.join("model.safetensors").exists());
}

fn dpo_eval(policy: &Path, reference: &Path, data: &Path) -> Value {
    let run = solar_train(&[
        "eval",
        "--task",
        "dpo",
        "--model",
        s(policy),
        "--ref",
        s(reference),
        "--data",
        s(data),
        "--json",
    ]);
    ok(&run);
    serde_json::from_str(run.stdout.trim()).unwrap()
}

#[test]
fn dpo_starts_at_ln2_and_learns_its_pairs() {
    let d = scratch("dpo");
    let b = base(&d);
    let data = d.join("pairs.jsonl");
    let lines: Vec<String> = (0..8)
        .map(|i| {
            serde_json::json!({"prompt": format!("{i}+{i}="), "chosen": format!("{}", 2 * i), "rejected": format!("{}", 2 * i + 7)})
                .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let same = dpo_eval(&b, &b, &data);
    let keys: Vec<&str> = same.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{same}");
    for k in ["loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins"] {
        assert!(same[k].is_number(), "missing {k}: {same}");
    }
    assert!((same["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6, "{same}");
    assert!(same["rewards/chosen"].as_f64().unwrap().abs() < 1e-9, "{same}");
    let out = d.join("out");
    ok(&solar_train(&[
        "dpo",
        "--model",
        s(&b),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--steps",
        "25",
        "--batch",
        "4",
        "--seq-len",
        "64",
        "--lr",
        "5e-3",
        "--beta",
        "0.5",
    ]));
    let after = dpo_eval(&out, &b, &data);
    assert!(after["rewards/accuracies"].as_f64().unwrap() >= 0.75, "{after}");
    assert!(after["loss"].as_f64().unwrap() < std::f64::consts::LN_2, "{after}");
    let first = metrics(&out).remove(0);
    for k in [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    ] {
        assert!(first[k].is_number(), "metrics lack {k}: {first}");
    }
}

//! `solar-train eval --task generate|choice|layers` as a user runs them on a tiny model: each
//! prints exactly one JSON object with --json, writes its --out (and --image) files, agrees
//! with `generate` run by hand, and bad data exits 1 naming FILE:LINE. `lm` keeps working.

use serde_json::Value;
use solar_tests::cli::{path_str as s, scratch_dir, solar_train, Run};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("cli_eval_tasks_{name}"))
}

fn json(run: &Run) -> Value {
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", run.stdout))
}

fn fails_with(run: &Run, parts: &[&str]) {
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    for p in parts {
        assert!(run.stderr.contains(p), "expected {p:?} in: {}", run.stderr);
    }
}

/// A tiny random model with the byte-level tokenizer, made by `init`.
fn tiny(d: &Path, preset: &str) -> PathBuf {
    let model = d.join(format!("model-{preset}"));
    json_ok(&solar_train(&["init", "--preset", preset, "--out", s(&model), "--seed", "1"]));
    model
}

fn json_ok(run: &Run) {
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
}

fn eval(model: &Path, task: &str, data: &Path, more: &[&str]) -> Run {
    let mut args = vec!["eval", "--task", task, "--model", s(model), "--data", s(data)];
    args.extend_from_slice(more);
    solar_train(&args)
}

#[test]
fn generate_counts_the_models_own_answer() {
    let d = scratch("generate");
    let model = tiny(&d, "tiny");
    let prompt = "Q: name a colour\nA:";
    let by_hand = json(&solar_train(&[
        "generate",
        "--model",
        s(&model),
        "--prompt",
        prompt,
        "--max-new-tokens",
        "5",
        "--json",
    ]));
    let answer = by_hand["text"].as_str().unwrap();
    let data = d.join("pc.jsonl");
    let lines = [
        serde_json::json!({"prompt": prompt, "completion": answer}),
        serde_json::json!({"prompt": prompt, "completion": "wrong"}),
    ];
    std::fs::write(&data, lines.map(|l| l.to_string()).join("\n")).unwrap();
    let out = d.join("predictions.jsonl");
    let more = ["--format", "prompt-completion", "--max-new-tokens", "5", "--out", s(&out), "--json"];
    let r = json(&eval(&model, "generate", &data, &more));
    assert_eq!(r, serde_json::json!({"exact_match": 0.5, "correct": 1, "examples": 2}));
    let written: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(written.len(), 2);
    assert_eq!(written[0]["prediction"], answer);
    assert_eq!((written[0]["correct"].as_bool(), written[1]["line"].as_u64()), (Some(true), Some(2)));
    let text = eval(&model, "generate", &data, &["--format", "prompt-completion", "--max-new-tokens", "5"]);
    assert!(text.stdout.contains("exact_match 0.5000"), "{}", text.stdout);

    std::fs::write(&data, "{\"prompt\": \"x\", \"completion\": \"y\"}\n{\"prompt\": \"x\"}\n").unwrap();
    fails_with(
        &eval(&model, "generate", &data, &["--format", "prompt-completion", "--json"]),
        &["pc.jsonl:2", "missing field `completion`"],
    );
}

#[test]
fn choice_prints_acc_and_rejects_bad_answers() {
    let d = scratch("choice");
    let model = tiny(&d, "tiny");
    let data = d.join("mc.jsonl");
    std::fs::write(
        &data,
        "{\"context\": \"The sky is\", \"choices\": [\"blue\", \"green\"], \"answer\": 0}\n\
         {\"context\": \"1 + 1 =\", \"choices\": [\"2\", \"3\", \"eleven\"], \"answer\": 2}\n",
    )
    .unwrap();
    let out = d.join("scores.jsonl");
    let r = json(&eval(&model, "choice", &data, &["--json", "--out", s(&out)]));
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["acc", "acc_norm", "examples"]);
    assert_eq!(r["examples"], 2);
    let scores: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let hits = scores.iter().filter(|x| x["pred"] == x["answer"]).count();
    assert_eq!(r["acc"].as_f64().unwrap(), hits as f64 / 2.0);
    assert_eq!(scores[1]["logliks"].as_array().unwrap().len(), 3);

    std::fs::write(&data, "{\"context\": \"c\", \"choices\": [\"a\", \"b\"], \"answer\": 2}\n").unwrap();
    fails_with(&eval(&model, "choice", &data, &["--json"]), &["mc.jsonl:1", "`answer`"]);
    std::fs::write(&data, "\n{\"choices\": [\"a\"], \"answer\": 0}\n").unwrap();
    fails_with(&eval(&model, "choice", &data, &["--json"]), &["mc.jsonl:2", "missing field `context`"]);
}

#[test]
fn layers_prints_the_matrix_and_draws_it() {
    let d = scratch("layers");
    let base = tiny(&d, "small");
    let up = d.join("up");
    json_ok(&solar_train(&["upscale", "--model", s(&base), "--out", s(&up), "--remove", "2"]));
    let data = d.join("text.jsonl");
    std::fs::write(&data, "{\"text\": \"depth up-scaling\"}\n{\"input_ids\": [1, 40, 41, 42]}\n").unwrap();
    let (out, image) = (d.join("layers.json"), d.join("layers.png"));
    let r = json(&eval(&up, "layers", &data, &["--json", "--out", s(&out), "--image", s(&image)]));
    assert_eq!(r["layers"], 12);
    let m = r["similarity"].as_array().unwrap();
    assert_eq!(m.len(), 12);
    for (i, row) in m.iter().enumerate() {
        assert_eq!(row.as_array().unwrap().len(), 12);
        assert_eq!(row[i], 1.0);
        assert_eq!(row[0], m[0][i]);
    }
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(written, r);
    assert!(std::fs::read(&image).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));

    let table = eval(&up, "layers", &data, &[]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert_eq!(table.stdout.lines().filter(|l| l.trim_start().starts_with("11 ")).count(), 1);
    assert!(table.stdout.contains("least alike neighbours"), "{}", table.stdout);

    std::fs::write(&data, "{\"text\": \"ok\"}\n{\"txt\": \"typo\"}\n").unwrap();
    fails_with(&eval(&up, "layers", &data, &["--json"]), &["text.jsonl:2"]);
}

#[test]
fn lm_still_prints_loss() {
    let d = scratch("lm");
    let model = tiny(&d, "tiny");
    let data = d.join("text.jsonl");
    std::fs::write(&data, "{\"text\": \"hello there\"}\n").unwrap();
    let r = json(&eval(&model, "lm", &data, &["--json"]));
    assert!(r["loss"].as_f64().unwrap() > 0.0 && r["tokens"] == 11);
}

//! PEFT's adapters from the command line, against the fixture PEFT wrote
//! (tests/fixtures/hf/lora/: an adapter on llama_f32, PeftModel's logits, merge_and_unload's
//! logits). `eval --adapter` scores with PEFT's model: its loss equals the mean next-token NLL
//! computed here from PeftModel's logits. `merge --method lora` folds the adapter into an
//! ordinary HF folder whose loss equals the NLL of merge_and_unload's logits and which other
//! commands take (a linear merge, generate). `generate --adapter` gives the folded model's tokens.

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf").join(name)
}

fn reference(name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(fixture("lora/reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let values = match t.dtype() {
        Dtype::F32 => t.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        Dtype::I32 => t.data().chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        other => panic!("unexpected dtype {other:?}"),
    };
    (t.shape().to_vec(), values)
}

/// Mean NLL of every next token of every row under `logits` [B, T, V], in f64.
fn mean_nll(ids: &[f64], b: usize, t: usize, logits: &[f64]) -> f64 {
    let v = logits.len() / (b * t);
    let (mut sum, mut n) = (0.0, 0);
    for row in 0..b {
        for pos in 0..t - 1 {
            let l = &logits[(row * t + pos) * v..(row * t + pos + 1) * v];
            let max = l.iter().cloned().fold(f64::MIN, f64::max);
            let lse = max + l.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            sum += lse - l[ids[row * t + pos + 1] as usize];
            n += 1;
        }
    }
    sum / n as f64
}

/// The llama_f32 fixture with the fixture tokenizer beside it (generate needs one).
fn base(d: &Path) -> PathBuf {
    let base = d.join("base");
    std::fs::create_dir_all(&base).unwrap();
    for f in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(fixture("llama_f32/model").join(f), base.join(f)).unwrap();
    }
    std::fs::copy(fixture("tokenizer/tokenizer.json"), base.join("tokenizer.json")).unwrap();
    base
}

fn eval_loss(args: &[&str]) -> f64 {
    let r = solar_train(args);
    ok(&r);
    let v: Value = serde_json::from_str(r.stdout.trim()).unwrap();
    v["loss"].as_f64().unwrap()
}

fn generated(args: &[&str]) -> Value {
    let r = solar_train(args);
    ok(&r);
    serde_json::from_str::<Value>(r.stdout.trim()).unwrap()["output_ids"].clone()
}

#[test]
fn peft_adapters_evaluate_generate_and_fold_as_peft_does() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "cli_lora_peft");
    let base = base(&d);
    let adapter = fixture("lora/adapter");
    let (shape, ids) = reference("input_ids");
    let (b, t) = (shape[0], shape[1]);
    let data = d.join("rows.jsonl");
    let rows: Vec<String> = (0..b)
        .map(|r| serde_json::json!({"input_ids": ids[r * t..(r + 1) * t].iter().map(|&x| x as u32).collect::<Vec<_>>()}).to_string())
        .collect();
    std::fs::write(&data, rows.join("\n")).unwrap();

    let want = mean_nll(&ids, b, t, &reference("logits").1);
    let got =
        eval_loss(&["eval", "--model", s(&base), "--adapter", s(&adapter), "--data", s(&data), "--json"]);
    assert!((got - want).abs() < 1e-4, "eval --adapter: loss {got}, PeftModel's {want}");
    let plain = eval_loss(&["eval", "--model", s(&base), "--data", s(&data), "--json"]);
    assert!((plain - want).abs() > 1e-3, "the adapter must change the loss ({plain} vs {want})");

    let folded = d.join("folded");
    let r = solar_train(&[
        "merge",
        "--method",
        "lora",
        "--base",
        s(&base),
        "--adapter",
        s(&adapter),
        "--out",
        s(&folded),
    ]);
    ok(&r);
    assert!(folded.join("config.json").is_file() && folded.join("model.safetensors").is_file());
    assert!(folded.join("tokenizer.json").is_file(), "the tokenizer travels with the folded model");
    let want = mean_nll(&ids, b, t, &reference("merged_logits").1);
    let got = eval_loss(&["eval", "--model", s(&folded), "--data", s(&data), "--json"]);
    assert!((got - want).abs() < 1e-4, "folded model: loss {got}, merge_and_unload's {want}");

    // The folded model is an ordinary model: a merge takes it, and generate gives the adapted
    // model's tokens.
    let linear = d.join("linear");
    ok(&solar_train(&["merge", "--method", "linear", "--models", s(&folded), s(&base), "--out", s(&linear)]));
    let gen = |model: &Path, extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--model",
            s(model),
            "--prompt",
            "abc",
            "--max-new-tokens",
            "8",
            "--ignore-eos",
            "--json",
        ];
        a.extend_from_slice(extra);
        generated(&a)
    };
    assert_eq!(
        gen(&base, &["--adapter", s(&adapter)]),
        gen(&folded, &[]),
        "generate --adapter vs the folded model"
    );
}

#[test]
fn merge_lora_needs_base_and_adapter_and_adapter_needs_lora() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "cli_lora_peft_usage");
    let (x, out) = (d.join("x"), d.join("out"));
    let cases: [Vec<&str>; 3] = [
        vec!["merge", "--method", "lora", "--adapter", s(&x), "--out", s(&out)],
        vec!["merge", "--method", "lora", "--base", s(&x), "--out", s(&out)],
        vec!["merge", "--method", "linear", "--models", s(&x), s(&x), "--adapter", s(&x), "--out", s(&out)],
    ];
    for a in cases {
        let r = solar_train(&a);
        assert_eq!(r.code, Some(2), "{a:?}: {}", r.stderr);
        // Without --adapter, clap itself asks for --models (the other methods' input).
        assert!(r.stderr.contains("--adapter") || r.stderr.contains("--models"), "{a:?}: {}", r.stderr);
        assert!(!out.exists());
    }
}

fn pairs(d: &Path) -> PathBuf {
    let data = d.join("pairs.jsonl");
    let lines: Vec<String> = (0..6u32)
        .map(|i| {
            serde_json::json!({"prompt": format!("Q: {i}+1=\nA: "), "chosen": format!("{}", i + 1),
                               "rejected": format!("{}", i + 3)})
            .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    data
}

/// The reference of `eval --task dpo` and `dpo` can be a base with a PEFT adapter: with the
/// folded model as the policy, policy and reference are the same function, so every reward is
/// 0 and the sigmoid loss is ln 2; without the adapter they are not.
#[test]
fn a_reference_with_a_peft_adapter_equals_its_folded_model() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "cli_lora_peft_ref");
    let base = base(&d);
    let adapter = fixture("lora/adapter");
    let data = pairs(&d);
    let folded = d.join("folded");
    ok(&solar_train(&[
        "merge",
        "--method",
        "lora",
        "--base",
        s(&base),
        "--adapter",
        s(&adapter),
        "--out",
        s(&folded),
    ]));
    let eval = |extra: &[&str]| -> Value {
        let mut a = vec![
            "eval",
            "--task",
            "dpo",
            "--model",
            s(&folded),
            "--ref",
            s(&base),
            "--data",
            s(&data),
            "--json",
        ];
        a.extend_from_slice(extra);
        let r = solar_train(&a);
        ok(&r);
        serde_json::from_str(r.stdout.trim()).unwrap()
    };
    let with = eval(&["--ref-adapter", s(&adapter)]);
    for k in ["rewards/chosen", "rewards/rejected", "rewards/margins"] {
        assert!(with[k].as_f64().unwrap().abs() < 1e-4, "{k}: {with}");
    }
    assert!((with["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-4, "{with}");
    let without = eval(&[]);
    assert!(without["rewards/chosen"].as_f64().unwrap().abs() > 1e-3, "{without}");

    let out = d.join("dpo");
    let r = solar_train(&[
        "dpo",
        "--model",
        s(&folded),
        "--ref",
        s(&base),
        "--ref-adapter",
        s(&adapter),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--steps",
        "1",
        "--batch",
        "6",
        "--seq-len",
        "32",
    ]);
    ok(&r);
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().next().unwrap(),
    )
    .unwrap();
    assert!((first["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-4, "{first}");
}

/// Adapters that do not fit are runtime errors (exit 1) naming the folder, file or tensor.
#[test]
fn adapters_in_the_wrong_place_or_for_another_model_are_refused_naming_them() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "cli_lora_peft_bad");
    let base = base(&d);
    let adapter = fixture("lora/adapter");
    let data = d.join("rows.jsonl");
    std::fs::write(&data, "{\"input_ids\": [3, 4, 5, 6]}\n").unwrap();
    let tiny = d.join("tiny");
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&tiny), "--seed", "1"]));
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["--model", s(&adapter)], "holds a LoRA adapter"),
        (vec!["--model", s(&base), "--adapter", s(&base)], "adapter_config.json"),
        (
            vec!["--model", s(&tiny), "--adapter", s(&adapter)],
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
        ),
    ];
    for (extra, says) in cases {
        let mut a = vec!["eval", "--data", s(&data), "--json"];
        a.extend(extra.iter().copied());
        let r = solar_train(&a);
        assert_eq!(r.code, Some(1), "{a:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{a:?}: {}", r.stderr);
        assert!(r.stdout.is_empty());
    }
}

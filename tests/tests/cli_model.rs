//! The model subcommands as a user runs them: init -> upscale -> eval -> generate on a tiny
//! preset; eval and upscale against transformers' numbers (the HF fixtures); `--config` for
//! these commands; and bad input, each ending with exit 1 (2 for bad flags), a message naming
//! the file and the tensor, field or line, and no output folder left behind.

use serde_json::Value;
use solar_model::Llama;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train, Run};
use std::path::{Path, PathBuf};

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("cli_model_{name}"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf").join(name)
}

fn json(run: &Run) -> Value {
    ok(run);
    serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {}", run.stdout))
}

/// Exit 1 with every `parts` in the message, and `out` (if given) not created.
fn fails_with(run: &Run, parts: &[&str], out: Option<&Path>) {
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert!(run.stderr.lines().any(|l| l.starts_with("error: ")), "{}", run.stderr);
    for p in parts {
        assert!(run.stderr.contains(p), "expected {p:?} in: {}", run.stderr);
    }
    if let Some(out) = out {
        assert!(!out.exists(), "{} was left behind", out.display());
        let parent = out.parent().unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(parent)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary folders left: {leftovers:?}");
    }
}

#[test]
fn init_upscale_eval_generate_pipeline() {
    let d = scratch("pipeline");
    let (base, up) = (d.join("base"), d.join("up"));
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&base), "--seed", "1"]));
    ok(&solar_train(&["upscale", "--model", s(&base), "--out", s(&up), "--slices", "0:2,1:2"]));
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(up.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["num_hidden_layers"], 3);
    assert!(up.join("tokenizer.json").exists(), "the tokenizer travels with the model");
    let data = d.join("data.jsonl");
    std::fs::write(&data, "{\"text\": \"depth up-scaling\"}\n\n{\"input_ids\": [1, 70, 71, 72]}\n").unwrap();
    let r = json(&solar_train(&["eval", "--model", s(&up), "--data", s(&data), "--json"]));
    // "depth up-scaling" is 16 bytes + BOS: 16 predicted; the ids line predicts 3.
    assert_eq!(r["tokens"], 19);
    let loss = r["loss"].as_f64().unwrap();
    assert!((r["ppl"].as_f64().unwrap() - loss.exp()).abs() < 1e-9 * loss.exp());
    let gen = |seed: &str| {
        json(&solar_train(&[
            "generate",
            "--model",
            s(&up),
            "--prompt",
            "SOLAR",
            "--max-new-tokens",
            "6",
            "--temperature",
            "1.0",
            "--ignore-eos",
            "--json",
            "--seed",
            seed,
        ]))
    };
    let (a, b) = (gen("7"), gen("7"));
    assert_eq!(a, b, "same seed, same sample");
    assert_eq!(a["output_ids"].as_array().unwrap().len(), 6);
    let greedy = json(&solar_train(&[
        "generate",
        "--model",
        s(&up),
        "--prompt",
        "SOLAR",
        "--max-new-tokens",
        "4",
        "--json",
    ]));
    assert!(greedy["output_ids"].as_array().unwrap().len() <= 4);
}

#[test]
fn eval_matches_transformers_mean_loss() {
    for case in ["llama_f32", "llama_gqa_sharded", "llama_tied_bf16", "mistral_window"] {
        let d = scratch(&format!("eval_{case}"));
        let refs: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(case).join("reference.json")).unwrap())
                .unwrap();
        let ids = reference_ids(&fixture(case));
        let data = d.join("ids.jsonl");
        let lines: Vec<String> =
            ids.iter().map(|row| serde_json::json!({ "input_ids": row }).to_string()).collect();
        std::fs::write(&data, lines.join("\n")).unwrap();
        let r = json(&solar_train(&[
            "eval",
            "--model",
            s(&fixture(case).join("model")),
            "--data",
            s(&data),
            "--json",
        ]));
        let want = refs["eval_loss"].as_f64().unwrap();
        let got = r["loss"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-5 * want, "{case}: eval loss {got} vs transformers {want}");
        assert_eq!(r["tokens"].as_u64().unwrap() as usize, ids.iter().map(|r| r.len() - 1).sum::<usize>());
    }
}

/// The two rows of input_ids the fixture was made with (stored as i32 in reference.safetensors).
fn reference_ids(dir: &Path) -> Vec<Vec<u32>> {
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header["input_ids"];
    let (rows, cols) = (t["shape"][0].as_u64().unwrap() as usize, t["shape"][1].as_u64().unwrap() as usize);
    let start = 8 + n + t["data_offsets"][0].as_u64().unwrap() as usize;
    let vals: Vec<u32> = bytes[start..start + rows * cols * 4]
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    vals.chunks(cols).map(|c| c.to_vec()).collect()
}

#[test]
fn upscale_matches_transformers_sliced_state_dict() {
    let d = scratch("upscale_hf");
    let out = d.join("up");
    ok(&solar_train(&[
        "upscale",
        "--model",
        s(&fixture("upscale").join("base")),
        "--out",
        s(&out),
        "--remove",
        "1",
    ]));
    let (got, want) =
        (Llama::load(&out).unwrap(), Llama::load(&fixture("upscale").join("expected")).unwrap());
    assert_eq!(got.config.num_hidden_layers, 6);
    for ((name, a), (_, b)) in got.named_params().zip(want.named_params()) {
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), "{name}");
    }
}

#[test]
fn a_config_file_supplies_flags_and_flags_win() {
    let d = scratch("config");
    let toml = d.join("init.toml");
    std::fs::write(
        &toml,
        format!("preset = \"tiny\"\nout = \"{}\"\nseed = 4\nconfig_only = true\n", s(&d.join("a"))),
    )
    .unwrap();
    ok(&solar_train(&["init", "--config", s(&toml)]));
    assert!(d.join("a/config.json").exists() && !d.join("a/model.safetensors").exists());
    ok(&solar_train(&["init", "--config", s(&toml), "--out", s(&d.join("b")), "--preset", "tiny-mistral"]));
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("b/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "mistral");
    // `init --config config.json` means the model's config.
    ok(&solar_train(&[
        "init",
        "--config",
        s(&d.join("b/config.json")),
        "--out",
        s(&d.join("c")),
        "--config-only",
    ]));
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "preset = \"tiny\"\nout = \"x\"\nlayers = 3\n").unwrap();
    fails_with(&solar_train(&["init", "--config", s(&bad)]), &[s(&bad), "'layers'"], None);
}

#[test]
fn bad_checkpoints_name_the_file_and_leave_nothing() {
    let d = scratch("bad_ckpt");
    let base = d.join("base");
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&base)]));
    let data = d.join("d.jsonl");
    std::fs::write(&data, "{\"input_ids\": [1, 2, 3]}\n").unwrap();
    let out = d.join("out");
    // A missing model folder.
    let missing = d.join("nope");
    fails_with(&solar_train(&["eval", "--model", s(&missing), "--data", s(&data)]), &[s(&missing)], None);
    // A truncated safetensors file.
    let broken = d.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(base.join(f), broken.join(f)).unwrap();
    }
    let bytes = std::fs::read(base.join("model.safetensors")).unwrap();
    std::fs::write(broken.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        &solar_train(&["eval", "--model", s(&broken), "--data", s(&data)]),
        &["model.safetensors"],
        None,
    );
    fails_with(
        &solar_train(&["upscale", "--model", s(&broken), "--out", s(&out), "--remove", "1"]),
        &["model.safetensors"],
        Some(&out),
    );
    // config.json that is not JSON, or names an unknown model type.
    std::fs::write(broken.join("config.json"), "{not json").unwrap();
    fails_with(
        &solar_train(&["eval", "--model", s(&broken), "--data", s(&data)]),
        &["config.json", "JSON"],
        None,
    );
    std::fs::write(broken.join("config.json"), "{\"model_type\": \"gpt2\"}").unwrap();
    fails_with(
        &solar_train(&["eval", "--model", s(&broken), "--data", s(&data)]),
        &["config.json", "model_type", "gpt2"],
        None,
    );
    let cfg = d.join("c.json");
    std::fs::write(&cfg, "{\"model_type\": \"llama\", \"vocab_size\": 300, \"hidden_size\": 64, \"intermediate_size\": 8, \"num_hidden_layers\": 1, \"num_attention_heads\": 5}").unwrap();
    fails_with(
        &solar_train(&["init", "--config", s(&cfg), "--out", s(&out)]),
        &["c.json", "num_attention_heads"],
        Some(&out),
    );
    // Layer plans out of range.
    fails_with(
        &solar_train(&["upscale", "--model", s(&base), "--out", s(&out), "--remove", "2"]),
        &["--remove 2"],
        Some(&out),
    );
    fails_with(
        &solar_train(&["upscale", "--model", s(&base), "--out", s(&out), "--slices", "0:1,1:9"]),
        &["1:9"],
        Some(&out),
    );
}

#[test]
fn bad_data_files_name_file_and_line() {
    let d = scratch("bad_data");
    let base = d.join("base");
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&base)]));
    let eval = |data: &Path| solar_train(&["eval", "--model", s(&base), "--data", s(data)]);
    let f = d.join("a.jsonl");
    std::fs::write(&f, "{\"text\": \"fine\"}\n{\"text\": oops}\n").unwrap();
    fails_with(&eval(&f), &[&format!("{}:2", s(&f)), "not valid JSON"], None);
    std::fs::write(&f, "{\"text\": \"fine\"}\n\n{\"prompt\": \"x\"}\n").unwrap();
    fails_with(&eval(&f), &[&format!("{}:3", s(&f)), "`text`"], None);
    std::fs::write(&f, "{\"input_ids\": [1, 99999]}\n").unwrap();
    fails_with(&eval(&f), &[&format!("{}:1", s(&f)), "99999"], None);
    std::fs::write(&f, "").unwrap();
    fails_with(&eval(&f), &[s(&f), "empty"], None);
}

#[test]
fn bad_flags_are_usage_errors() {
    for args in [
        vec!["upscale", "--model", "m", "--out", "o"],
        vec!["upscale", "--model", "m", "--out", "o", "--remove", "1", "--slices", "0:1"],
        vec!["upscale", "--model", "m", "--out", "o", "--remove", "1", "--max-shard-size", "5XB"],
        vec!["init", "--preset", "gigantic", "--out", "o"],
        vec!["eval", "--model", "m", "--data", "d", "--task", "mmlu"],
        vec!["generate", "--model", "m"],
        vec!["pretrain", "--model", "m", "--data", "d", "--out", "o", "--zero", "3"],
        vec!["pretrain", "--model", "m", "--data", "d", "--out", "o", "--bucket-mb", "0"],
        vec!["sft", "--model", "m", "--data", "d", "--out", "o", "--bucket-mb", "lots"],
    ] {
        let run = solar_train(&args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
    }
}

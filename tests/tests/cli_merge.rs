//! `solar-train merge` as a user runs it: flags (linear, slerp, ties, passthrough --slices),
//! a mergekit YAML through `--config merge.yml` (SOLAR's passthrough), a TOML `--config` of
//! flags, and bad input: mismatched vocabularies or shapes, a model missing from a YAML config,
//! unknown methods or parameters, weights that do not match the models, t outside [0, 1]. Each
//! failure exits 1 (2 for a bad flag), names the model, tensor or key, and leaves no output.

use solar_model::checkpoint::Checkpoint;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train, Run};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("cli_merge_{name}"))
}

/// Exit `code` with every one of `parts` in stderr, and `out` not created (nor a temporary).
fn fails(run: &Run, code: i32, parts: &[&str], out: &Path) {
    assert_eq!(run.code, Some(code), "stderr: {}", run.stderr);
    for p in parts {
        assert!(run.stderr.contains(p), "expected {p:?} in: {}", run.stderr);
    }
    assert!(!out.exists(), "{} was left behind", out.display());
    let parent = out.parent().unwrap();
    let tmp = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(".tmp-"));
    assert!(!tmp, "a temporary folder was left in {}", parent.display());
}

fn init(d: &Path, name: &str, seed: &str) -> PathBuf {
    let out = d.join(name);
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&out), "--seed", seed]));
    out
}

/// A tiny model with one config.json field changed (a different vocabulary or width).
fn init_with(d: &Path, name: &str, from: &Path, field: &str, value: u64) -> PathBuf {
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("config.json")).unwrap()).unwrap();
    cfg[field] = value.into();
    let path = d.join(format!("{name}.json"));
    std::fs::write(&path, cfg.to_string()).unwrap();
    let out = d.join(name);
    ok(&solar_train(&["init", "--config", s(&path), "--out", s(&out)]));
    out
}

fn load(dir: &Path, name: &str) -> Vec<f32> {
    Checkpoint::open(dir).unwrap().load(name).unwrap().to_vec::<f32>().unwrap()
}

#[test]
fn flags_merge_and_copy_the_tokenizer() {
    let d = scratch("flags");
    let (a, b, base) = (init(&d, "a", "1"), init(&d, "b", "2"), init(&d, "base", "3"));
    let avg = d.join("avg");
    ok(&solar_train(&["merge", "--method", "linear", "--models", s(&a), s(&b), "--out", s(&avg)]));
    let name = "model.layers.1.mlp.down_proj.weight";
    let (x, y, z) = (load(&a, name), load(&b, name), load(&avg, name));
    for i in 0..x.len() {
        assert!((z[i] - (x[i] + y[i]) / 2.0).abs() < 1e-6, "{name}[{i}]");
    }
    for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(avg.join(f).is_file(), "{f} was not copied");
    }
    let sl = d.join("slerp");
    ok(&solar_train(&["merge", "--method", "slerp", "--models", s(&a), s(&b), "--t", "0", "--out", s(&sl)]));
    assert_eq!(load(&sl, name), x, "t = 0 gives the first model");
    let ties = d.join("ties");
    let args =
        ["merge", "--method", "ties", "--models", s(&a), s(&b), "--base", s(&base), "--density", "0.5"];
    ok(&solar_train(&[&args[..], &["--weights", "1,0.5", "--lambda", "1", "--out", s(&ties)]].concat()));
    let pt = d.join("pt");
    ok(&solar_train(&[
        "merge",
        "--method",
        "passthrough",
        "--models",
        s(&a),
        "--slices",
        "0:2,1:2",
        "--out",
        s(&pt),
    ]));
    assert_eq!(
        load(&pt, "model.layers.2.self_attn.q_proj.weight"),
        load(&a, "model.layers.1.self_attn.q_proj.weight")
    );
}

#[test]
fn mergekit_yaml_and_toml_configs() {
    let d = scratch("configs");
    let (a, b) = (init(&d, "a", "1"), init(&d, "b", "2"));
    // SOLAR's recipe on a 2-layer model: layers [0, 2) then [1, 2), stored in bf16.
    let yml = d.join("solar.yml");
    let text = format!(
        "slices:\n  - sources:\n      - model: {a}\n        layer_range: [0, 2]\n  - sources:\n      - model: {a}\n        layer_range: [1, 2]\nmerge_method: passthrough\ndtype: bfloat16\n",
        a = a.display()
    );
    std::fs::write(&yml, text).unwrap();
    let up = d.join("up");
    ok(&solar_train(&["merge", "--config", s(&yml), "--out", s(&up)]));
    let cfg = std::fs::read_to_string(up.join("config.json")).unwrap();
    assert!(cfg.contains("\"num_hidden_layers\": 3") && cfg.contains("bfloat16"), "{cfg}");
    // A TOML file of flags still works for merge, and flags given on the line win.
    let toml = d.join("merge.toml");
    let text = format!(
        "method = \"linear\"\nmodels = [\"{}\", \"{}\"]\nweights = \"3,1\"\n",
        a.display(),
        b.display()
    );
    std::fs::write(&toml, text).unwrap();
    let lin = d.join("lin");
    ok(&solar_train(&["merge", "--config", s(&toml), "--weights", "1,1", "--out", s(&lin)]));
    let name = "model.norm.weight";
    let (x, y, z) = (load(&a, name), load(&b, name), load(&lin, name));
    assert!((z[0] - (x[0] + y[0]) / 2.0).abs() < 1e-6);
}

#[test]
fn bad_input_exits_with_a_message_and_no_output() {
    let d = scratch("bad");
    let (a, b) = (init(&d, "a", "1"), init(&d, "b", "2"));
    let wide_vocab = init_with(&d, "vocab", &a, "vocab_size", 400);
    let wide = init_with(&d, "wide", &a, "intermediate_size", 200);
    let out = d.join("out");
    let merge = |extra: &[&str]| solar_train(&[&["merge"], extra, &["--out", s(&out)]].concat());

    let r = merge(&["--method", "linear", "--models", s(&a), s(&wide_vocab)]);
    fails(&r, 1, &["vocab", "model.embed_tokens.weight", "vocabulary"], &out);
    let r = merge(&["--method", "linear", "--models", s(&a), s(&wide)]);
    fails(&r, 1, &["wide", "model.layers.0.mlp.gate_proj.weight", "[200, 64]", "intermediate_size"], &out);
    let r = merge(&["--method", "linear", "--models", s(&a), s(&b), "--weights", "1,2,3"]);
    fails(&r, 1, &["--weights has 3 values for 2 models"], &out);
    let r = merge(&["--method", "slerp", "--models", s(&a), s(&b), "--t", "1.5"]);
    fails(&r, 2, &["outside [0, 1]"], &out);
    let r = merge(&["--method", "frankenmerge", "--models", s(&a), s(&b)]);
    fails(&r, 2, &["frankenmerge"], &out);
    let r = merge(&["--method", "ties", "--models", s(&a), s(&b)]);
    fails(&r, 1, &["needs --base"], &out);
    let r = merge(&["--method", "linear", "--models", s(&a), s(&d.join("absent"))]);
    fails(&r, 1, &["absent"], &out);

    let yaml = |name: &str, text: String| {
        let p = d.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let missing = yaml(
        "missing.yml",
        format!("models:\n  - model: {}\n  - model: gone/model\nmerge_method: linear\n", a.display()),
    );
    fails(&merge(&["--config", s(&missing)]), 1, &["missing.yml", "models[1].model", "gone/model"], &out);
    let unknown =
        yaml("unknown.yaml", format!("models:\n  - model: {}\nmerge_method: slerp_ties\n", a.display()));
    fails(&merge(&["--config", s(&unknown)]), 1, &["unknown.yaml", "slerp_ties"], &out);
    let param = yaml(
        "param.yml",
        format!("models:\n  - model: {}\n    parameters: {{weight: 1, densty: 0.5}}\nmerge_method: ties\nbase_model: {}\n", b.display(), a.display()),
    );
    fails(&merge(&["--config", s(&param)]), 1, &["param.yml", "unknown parameter `densty`"], &out);
}

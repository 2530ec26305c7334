//! mergekit YAML configs through `MergeSpec::from_yaml` and `merge`: SOLAR's passthrough
//! (slices [0, 24] + [8, 32] of a 32-layer model, bfloat16), the common SLERP config with
//! per-filter gradient `t`, `models:` with per-model `{filter, value}` and gradient weights over
//! global defaults, TIES with a base that is not listed; and configs that must be refused, each
//! naming the file and what is wrong, with no output left.

mod merge_common;

use merge_common::*;
use solar_model::checkpoint::{decode_f32, encode_f32, SafeDType, WriteOptions};
use solar_model::names::{layer_name, LAYER_SUFFIXES};
use solar_train::merge::{merge, MergeSpec};
use std::path::Path;

fn write_yaml(d: &Path, text: &str) -> std::path::PathBuf {
    let p = d.join("merge.yml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run_yaml(d: &Path, text: &str, out: &str) -> std::path::PathBuf {
    let spec = MergeSpec::from_yaml(&write_yaml(d, text), 0).unwrap_or_else(|e| panic!("{e}"));
    merge(&spec, &d.join(out), &WriteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    d.join(out)
}

#[test]
fn solar_passthrough_stacks_24_plus_24_layers_in_bf16() {
    let d = scratch("yaml_solar");
    let m = model(&d, "m", &tiny(32), 7);
    let text = format!(
        "slices:\n  - sources:\n      - model: {m}\n        layer_range: [0, 24]\n  - sources:\n      - model: {m}\n        layer_range: [8, 32]\nmerge_method: passthrough\ndtype: bfloat16\n",
        m = m.display()
    );
    let out = run_yaml(&d, &text, "solar");
    let (src, got) = (tensors(&m), tensors(&out));
    let cfg = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(
        cfg.contains("\"num_hidden_layers\": 48") && cfg.contains("\"torch_dtype\": \"bfloat16\""),
        "{cfg}"
    );
    let bf16 = |v: &[f32]| {
        let (mut bytes, mut back) = (Vec::new(), Vec::new());
        encode_f32(v, SafeDType::BF16, &mut bytes);
        decode_f32(SafeDType::BF16, &bytes, &mut back);
        back
    };
    for new in 0..48 {
        let old = if new < 24 { new } else { new - 16 };
        for s in LAYER_SUFFIXES {
            assert_eq!(
                got[&layer_name(new, s)],
                bf16(&src[&layer_name(old, s)]),
                "layer {new} <- {old}: {s}"
            );
        }
    }
    for name in ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"] {
        assert_eq!(got[name], bf16(&src[name]), "{name}");
        assert_eq!(stored_dtype(&out, name), SafeDType::BF16);
    }
}

#[test]
fn slerp_with_per_filter_gradients() {
    let d = scratch("yaml_slerp");
    let cfg = tiny(5);
    let (a, b) = (model(&d, "a", &cfg, 1), model(&d, "b", &cfg, 2));
    // The config as users write it; base_model listed second to show it still means t = 0.
    let text = format!(
        "slices:
  - sources:
      - model: {b}
        layer_range: [0, 5]
      - model: {a}
        layer_range: [0, 5]
merge_method: slerp
base_model: {a}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: float32
",
        a = a.display(),
        b = b.display()
    );
    let out = run_yaml(&d, &text, "out");
    let (ta, tb, got) = (tensors(&a), tensors(&b), tensors(&out));
    for (name, x) in &ta {
        let pos = layer_t(name, 5);
        let t = if name.contains("self_attn") {
            interpolate(&[0.0, 0.5, 0.3, 0.7, 1.0], pos)
        } else if name.contains("mlp") {
            interpolate(&[1.0, 0.5, 0.7, 0.3, 0.0], pos)
        } else {
            0.5
        };
        close(name, &got[name], &slerp_ref(t, x, &tb[name]), 1e-6, 1e-5);
    }
    // Layer 0's attention is t = 0: exactly the base.
    let q0 = "model.layers.0.self_attn.q_proj.weight";
    assert_eq!(got[q0], ta[q0]);
}

#[test]
fn models_with_filtered_and_gradient_weights() {
    let d = scratch("yaml_models");
    let cfg = tiny(3);
    let (a, b) = (model(&d, "a", &cfg, 1), model(&d, "b", &cfg, 2));
    let text = format!(
        "models:
  - model: {a}
    parameters:
      weight:
        - filter: mlp
          value: [1.0, 3.0]
        - filter: embed
          value: 2.0
  - model: {b}
merge_method: linear
parameters:
  weight: 1.0
  normalize: false
",
        a = a.display(),
        b = b.display()
    );
    let out = run_yaml(&d, &text, "out");
    let (ta, tb, got) = (tensors(&a), tensors(&b), tensors(&out));
    for (name, x) in &ta {
        // Model a: mlp tensors follow the gradient; embeddings 2; everything else falls
        // through to the global weight 1. Model b always 1. No normalizing.
        let wa = if name.contains("mlp") {
            interpolate(&[1.0, 3.0], layer_t(name, 3))
        } else if name.contains("embed") {
            2.0
        } else {
            1.0
        };
        let want: Vec<f64> = x.iter().zip(&tb[name]).map(|(&p, &q)| wa * p as f64 + q as f64).collect();
        close(name, &got[name], &want, 1e-5, 1e-6);
    }
}

#[test]
fn ties_adds_an_unlisted_base_and_reads_per_model_density() {
    let d = scratch("yaml_ties");
    let cfg = tiny(2);
    let (a, b, base) = (model(&d, "a", &cfg, 1), model(&d, "b", &cfg, 2), model(&d, "base", &cfg, 3));
    let text = format!(
        "models:\n  - model: {a}\n    parameters: {{weight: 1.0, density: 1.0}}\n  - model: {b}\n    parameters: {{weight: 1.0, density: 1.0}}\nmerge_method: ties\nbase_model: {base}\n",
        a = a.display(),
        b = b.display(),
        base = base.display()
    );
    let out = run_yaml(&d, &text, "out");
    let (ta, tb, t0, got) = (tensors(&a), tensors(&b), tensors(&base), tensors(&out));
    for (name, z) in &t0 {
        let want: Vec<f64> = (0..z.len())
            .map(|i| {
                let (da, db) = ((ta[name][i] - z[i]) as f64, (tb[name][i] - z[i]) as f64);
                // Density 1 keeps everything; the elected sign picks the agreeing deltas.
                let sign = if da + db >= 0.0 { 1.0 } else { -1.0 };
                let agree: Vec<f64> =
                    [da, db].into_iter().filter(|x| *x != 0.0 && x.signum() == sign).collect();
                let avg = if agree.is_empty() { 0.0 } else { agree.iter().sum::<f64>() / agree.len() as f64 };
                z[i] as f64 + avg
            })
            .collect();
        close(name, &got[name], &want, 1e-5, 1e-5);
    }
}

#[test]
fn bad_configs_name_the_problem_and_write_nothing() {
    let d = scratch("yaml_bad");
    let cfg = tiny(2);
    let (a, b) = (model(&d, "a", &cfg, 1), model(&d, "b", &cfg, 2));
    let (a, b) = (a.display().to_string(), b.display().to_string());
    let two = |method: &str, params: &str| {
        format!("models:\n  - model: {a}\n  - model: {b}\nmerge_method: {method}\nbase_model: {a}\n{params}")
    };
    let cases = [
        (two("frankenmerge", ""), vec!["unknown method `frankenmerge`"]),
        (two("slerp", "parameters:\n  t: 1.5\n"), vec!["parameters.t", "[0, 1]"]),
        (two("slerp", "parameters:\n  t: 0.5\n  weight: 2\n"), vec!["unknown parameter `weight`", "slerp"]),
        (two("linear", "parameters:\n  weight: 1\n  tee: 3\n"), vec!["unknown parameter `tee`"]),
        (two("ties", "parameters:\n  weight: 1\n  density: 0\n"), vec!["density", "(0, 1]"]),
        (two("linear", "parameters:\n  weight: 1\ncolour: red\n"), vec!["unknown key `colour`"]),
        (format!("models:\n  - model: {a}\n  - model: {a}/nowhere\nmerge_method: linear\n"), vec!["models[1].model", "nowhere"]),
        (format!("models:\n  - model: {a}\nmerge_method: linear\n"), vec!["missing parameter `weight`", "model "]),
        (format!("slices:\n  - sources:\n      - model: {a}\n        layer_range: [0, 3]\nmerge_method: passthrough\n"), vec!["layer_range [0, 3]", "2 layers"]),
        (format!("slices:\n  - sources:\n      - model: {a}\n        layer_range: [0, 2]\n      - model: {b}\n        layer_range: [0, 1]\nmerge_method: slerp\nbase_model: {a}\nparameters: {{t: 0.5}}\n"), vec!["as many layers"]),
        (format!("slices:\n  - sources:\n      - model: {b}\n        layer_range: [0, 2]\nmerge_method: ties\nbase_model: {a}\n"), vec!["base model", "not among its sources"]),
        ("merge_method: linear\n".to_string(), vec!["exactly one of `models` or `slices`"]),
        ("models: [\n".to_string(), vec!["not valid YAML"]),
    ];
    for (text, parts) in cases {
        let path = write_yaml(&d, &text);
        let out = d.join("out");
        let result = MergeSpec::from_yaml(&path, 0).and_then(|s| merge(&s, &out, &WriteOptions::default()));
        let e = result.err().unwrap_or_else(|| panic!("accepted:\n{text}")).to_string();
        for p in parts {
            assert!(e.contains(p), "expected {p:?} in: {e}\nconfig:\n{text}");
        }
        assert!(!out.exists(), "output left behind for:\n{text}");
    }
}

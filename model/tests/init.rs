//! `init`: a preset becomes a complete HF folder that loads back (weights, config, tokenizer),
//! the same seed gives bitwise the same weights, norms start at 1 and matrices at the configured
//! spread; `--config-only` writes the config alone; an existing folder is refused.

use solar_model::init::{init_model_dir, InitOptions};
use solar_model::presets::preset;
use solar_model::tokenizer::Tokenizer;
use solar_model::{Llama, LlamaConfig};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("solar-init-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn init_writes_a_loadable_reproducible_model() {
    let cfg = preset("tiny").unwrap();
    let (a, b, c) = (tmp("a"), tmp("b"), tmp("c"));
    let opts = InitOptions { seed: 5, ..Default::default() };
    let report = init_model_dir(&cfg, &a, &opts).unwrap();
    assert!(report.tokenizer);
    init_model_dir(&cfg, &b, &opts).unwrap();
    init_model_dir(&cfg, &c, &InitOptions { seed: 6, ..Default::default() }).unwrap();
    let (ma, mb, mc) = (Llama::load(&a).unwrap(), Llama::load(&b).unwrap(), Llama::load(&c).unwrap());
    let mut differs = false;
    for ((name, ta), ((_, tb), (_, tc))) in ma.named_params().zip(mb.named_params().zip(mc.named_params())) {
        let (va, vb, vc) =
            (ta.to_vec::<f32>().unwrap(), tb.to_vec::<f32>().unwrap(), tc.to_vec::<f32>().unwrap());
        assert!(va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}: same seed, other bits");
        differs |= va != vc;
        if name.ends_with("norm.weight") {
            assert!(va.iter().all(|&x| x == 1.0), "{name} must start at 1");
        } else {
            let std = (va.iter().map(|x| (x * x) as f64).sum::<f64>() / va.len() as f64).sqrt();
            assert!((std - cfg.initializer_range).abs() < 0.25 * cfg.initializer_range, "{name}: std {std}");
        }
    }
    assert!(differs, "another seed must give other weights");
    assert_eq!(ma.config.num_parameters(), report.parameters);
    let tok = Tokenizer::from_model_dir(&a).unwrap();
    assert_eq!(tok.decode(&tok.encode("SOLAR", true).unwrap(), true).unwrap(), "SOLAR");
    let e = init_model_dir(&cfg, &a, &opts).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn config_only_writes_the_paper_shape() {
    let out = tmp("solar");
    let cfg = preset("solar-10.7b").unwrap();
    let report =
        init_model_dir(&cfg, &out, &InitOptions { config_only: true, ..Default::default() }).unwrap();
    assert_eq!(report.parameters, 10_731_524_096);
    let back = LlamaConfig::from_file(&out.join("config.json")).unwrap();
    assert_eq!(back.num_hidden_layers, 48);
    assert!(!out.join("model.safetensors").exists());
    let e = init_model_dir(&cfg, &tmp("big"), &InitOptions::default()).unwrap_err().to_string();
    assert!(e.contains("--config-only"), "{e}");
    assert!(!tmp("big").exists());
    std::fs::remove_dir_all(out).unwrap();
}

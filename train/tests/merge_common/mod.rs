//! What the merge tests share: small random models written as HF folders (their shapes chosen
//! per test), reading every tensor of a checkpoint back as f32, and closeness checks. The
//! expected values in the tests are computed here from the formulas, not through the merge
//! module, so a shared mistake cannot hide.
#![allow(dead_code)]

use solar_model::checkpoint::{Checkpoint, SafeDType, WriteOptions};
use solar_model::init::{init_model_dir, InitOptions};
use solar_model::presets::preset;
use solar_model::LlamaConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A tiny Llama: hidden 16, 2 heads (1 kv), FFN 32, vocab 40, `layers` layers.
pub fn tiny(layers: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 40,
        hidden_size: 16,
        intermediate_size: 32,
        num_hidden_layers: layers,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 8,
        // Large enough that random models differ by more than rounding.
        initializer_range: 0.5,
        ..preset("tiny").expect("the tiny preset")
    }
}

/// Writes a random model with `cfg` to `dir/name`; norms get random scales too, so every
/// tensor differs between models (init sets them to 1).
pub fn model(dir: &Path, name: &str, cfg: &LlamaConfig, seed: u64) -> PathBuf {
    let out = dir.join(name);
    let opts = InitOptions { seed, ..Default::default() };
    init_model_dir(cfg, &out, &opts).expect("init a test model");
    perturb_norms(&out, seed);
    out
}

/// Rewrites the norm weights with values in [0.5, 1.5), keeping everything else.
fn perturb_norms(dir: &Path, seed: u64) {
    let ckpt = Checkpoint::open(dir).unwrap();
    let mut tensors = Vec::new();
    let mut rng = solar_engine::Rng::new(seed + 1000);
    for name in ckpt.names() {
        let mut t = ckpt.load(name).unwrap().to_vec::<f32>().unwrap();
        if name.ends_with("norm.weight") {
            t.iter_mut().for_each(|x| *x = 0.5 + rng.uniform() as f32);
        }
        let shape = ckpt.info(name).unwrap().shape.clone();
        tensors.push((name.clone(), solar_engine::Tensor::from_vec(t, shape).unwrap()));
    }
    let config = ckpt.config().clone();
    drop(ckpt);
    let tmp = dir.with_extension("tmp");
    let opts = WriteOptions { overwrite: true, ..Default::default() };
    solar_model::checkpoint::save_model(&tmp, &config, &tensors, &opts, Some(dir)).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::rename(&tmp, dir).unwrap();
}

/// Every tensor of a checkpoint as f32, by name.
pub fn tensors(dir: &Path) -> BTreeMap<String, Vec<f32>> {
    let ckpt = Checkpoint::open(dir).unwrap_or_else(|e| panic!("{e}"));
    ckpt.names().iter().map(|n| (n.clone(), ckpt.load(n).unwrap().to_vec::<f32>().unwrap())).collect()
}

pub fn stored_dtype(dir: &Path, name: &str) -> SafeDType {
    Checkpoint::open(dir).unwrap().dtype_of(name).unwrap()
}

/// |got - want| <= atol + rtol |want| everywhere, naming the tensor and entry otherwise.
pub fn close(name: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = atol + rtol * w.abs();
        assert!((g as f64 - w).abs() <= tol, "{name}[{i}]: got {g}, want {w}");
    }
}

pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("merge_{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The layer index of a gradient position: layer i of n sits at i / (n - 1).
pub fn layer_t(name: &str, n: usize) -> f64 {
    match solar_model::names::parse_layer_name(name) {
        Some((i, _)) if n > 1 => i as f64 / (n - 1) as f64,
        Some(_) => 1.0,
        None => 0.0,
    }
}

/// A gradient list's value at t, written out from mergekit's definition.
pub fn interpolate(values: &[f64], t: f64) -> f64 {
    let pos = t * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(values.len() - 1);
    values[lo] + (pos - lo as f64) * (values[hi] - values[lo])
}

/// SLERP of two flat tensors as the formula reads (f64 throughout).
pub fn slerp_ref(t: f64, a: &[f32], b: &[f32]) -> Vec<f64> {
    let a: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    let b: Vec<f64> = b.iter().map(|&x| x as f64).collect();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    let cos = a.iter().zip(&b).map(|(x, y)| x * y).sum::<f64>() / (na * nb);
    if cos.abs() > 0.9995 {
        return a.iter().zip(&b).map(|(x, y)| (1.0 - t) * x + t * y).collect();
    }
    let omega = cos.acos();
    let (wa, wb) = (((1.0 - t) * omega).sin() / omega.sin(), (t * omega).sin() / omega.sin());
    a.iter().zip(&b).map(|(x, y)| wa * x + wb * y).collect()
}

//! Helpers shared by the checkpoint and upscale tests: small configs, deterministic random models,
//! hand-written safetensors bytes (for files our writer would never produce) and folder checks.
#![allow(dead_code)]

use solar_engine::{DType, Rng, Tensor};
use solar_model::checkpoint::{Checkpoint, WriteOptions};
use solar_model::names::parameter_shapes;
use solar_model::presets::preset;
use solar_model::LlamaConfig;
use std::path::{Path, PathBuf};

/// A tiny model (hidden 64, ffn 176, 4 heads of 16, 2 kv heads, vocab 256) with `layers`
/// layers. The sizes are pinned here, not taken from the preset, since tests name shapes.
pub fn tiny(layers: usize, tied: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 256,
        hidden_size: 64,
        intermediate_size: 176,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        tie_word_embeddings: tied,
        ..preset("tiny").expect("tiny preset")
    }
}

/// Every parameter of `cfg` filled with N(0, 1) draws; each tensor differs from every other,
/// so a tensor copied from the wrong place cannot pass a comparison.
pub fn random_model(cfg: &LlamaConfig, seed: u64, dtype: DType) -> Vec<(String, Tensor)> {
    let mut rng = Rng::new(seed);
    parameter_shapes(cfg)
        .into_iter()
        .map(|(name, shape)| (name, Tensor::randn(shape, 1.0, dtype, &mut rng)))
        .collect()
}

/// Files a tokenizer ships with, with recognisable contents.
pub fn write_tokenizer_files(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in [
        ("tokenizer.json", "{\"version\": \"1.0\", \"model\": {\"type\": \"BPE\"}}"),
        ("tokenizer_config.json", "{\"bos_token\": \"<s>\"}"),
        ("chat_template.jinja", "{% for m in messages %}{{ m.content }}{% endfor %}"),
        ("generation_config.json", "{\"bos_token_id\": 1, \"eos_token_id\": 2}"),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// A safetensors file from a header JSON text and the data bytes after it.
pub fn safetensors_bytes(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// The header JSON of a safetensors file.
pub fn read_header(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    serde_json::from_slice(&bytes[8..8 + n]).unwrap()
}

/// Writes config.json for `cfg` into `dir`.
pub fn write_config(dir: &Path, cfg: &LlamaConfig) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&cfg.to_json()).unwrap()).unwrap();
}

/// The names in `dir` other than the ones given: leftovers a failed write must not leave.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Saves `tensors` with `opts` into `dir` (a fresh path), returning the dir.
pub fn save(dir: PathBuf, cfg: &LlamaConfig, tensors: &[(String, Tensor)], opts: &WriteOptions) -> PathBuf {
    solar_model::checkpoint::save_model(&dir, cfg, tensors, opts, None).unwrap();
    dir
}

/// Asserts each tensor of `ckpt` named in `expected` holds exactly these f32 values (bitwise).
pub fn assert_same_f32(ckpt: &Checkpoint, expected: &[(String, Tensor)]) {
    for (name, t) in expected {
        let got = ckpt.load(name).unwrap();
        assert_eq!(got.dims(), t.dims(), "{name}");
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(got.to_vec::<f32>().unwrap()), bits(t.to_vec::<f32>().unwrap()), "{name}");
    }
}

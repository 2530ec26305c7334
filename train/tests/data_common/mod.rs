//! What the data tests share: a model folder with the byte-level tokenizer (<unk>=0, <s>=1
//! added by its post-processor, </s>=2, byte b = 3+b) and optionally a chat template, data
//! files written into it, the tiny random model, and per-document losses of packed rows.
#![allow(dead_code)]

use serde_json::Value;
use solar_model::presets::preset;
use solar_model::tokenizer::{byte_level_config_json, byte_level_json, Tokenizer};
use solar_model::{Llama, LlamaConfig};
use solar_train::data::rows::{collate, LmRow};
use std::path::{Path, PathBuf};

pub const BOS: u32 = 1;
pub const EOS: u32 = 2;

/// A Mistral-style template that writes BOS itself and closes each answer with EOS.
pub const INST_TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}\
{{ '[INST] ' + m['content'] + ' [/INST]' }}{% elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}\
{% else %}{{ raise_exception('roles must be user or assistant') }}{% endif %}{% endfor %}";

pub struct Model {
    pub dir: tempfile::TempDir,
    pub tok: Tokenizer,
    pub cfg: LlamaConfig,
}

impl Model {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Writes `text` to `name` in the model folder (data files live there too).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    /// A JSONL file of `lines`.
    pub fn jsonl(&self, name: &str, lines: &[Value]) -> PathBuf {
        let text: Vec<String> = lines.iter().map(|v| v.to_string()).collect();
        self.write(name, &(text.join("\n") + "\n"))
    }
}

/// A model folder: tokenizer.json and tokenizer_config.json (with `chat_template` if given).
pub fn model(chat_template: Option<&str>) -> Model {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), byte_level_json().to_string()).unwrap();
    let mut tc = byte_level_config_json();
    if let Some(t) = chat_template {
        tc["chat_template"] = Value::String(t.to_string());
    }
    std::fs::write(dir.path().join("tokenizer_config.json"), tc.to_string()).unwrap();
    let tok = Tokenizer::from_model_dir(dir.path()).unwrap();
    Model { dir, tok, cfg: preset("tiny").unwrap() }
}

/// The byte-level tokens of `s`.
pub fn bytes(s: &str) -> Vec<u32> {
    s.bytes().map(|b| 3 + b as u32).collect()
}

/// Concatenation of token lists.
pub fn cat(parts: &[&[u32]]) -> Vec<u32> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

/// The tokens a row scores, in order (its labels other than -100).
pub fn scored(row: &LmRow) -> Vec<u32> {
    row.labels.iter().filter(|&&l| l >= 0).map(|&l| l as u32).collect()
}

pub fn tiny_model(seed: u64) -> Llama {
    Llama::init(preset("tiny").unwrap(), seed).unwrap()
}

/// Summed loss of a row's scored tokens.
pub fn row_loss(model: &Llama, row: &LmRow) -> f64 {
    let batch = collate(&[row]).unwrap();
    model.loss(None, &batch.input, &batch.targets).unwrap().loss_sum.to_scalar().unwrap()
}

/// Document `doc` of a packed row: its own tokens as a row alone, and the packed row with
/// every other document's labels removed.
pub fn document(row: &LmRow, doc: u32) -> (LmRow, LmRow) {
    let at: Vec<usize> = (0..row.len()).filter(|&t| row.doc_ids[t] == doc).collect();
    let alone = LmRow {
        ids: at.iter().map(|&t| row.ids[t]).collect(),
        labels: at.iter().map(|&t| row.labels[t]).collect(),
        positions: at.iter().map(|&t| row.positions[t]).collect(),
        doc_ids: vec![0; at.len()],
    };
    let mut masked = row.clone();
    for t in 0..row.len() {
        if row.doc_ids[t] != doc {
            masked.labels[t] = -100;
        }
    }
    (alone, masked)
}

/// Checks that each document of each packed row scores the same packed as alone.
pub fn assert_packing_isolates(model: &Llama, rows: &[LmRow]) -> usize {
    let mut checked = 0;
    for row in rows {
        let docs = row.doc_ids.last().map_or(0, |d| d + 1);
        for d in 0..docs {
            let (alone, masked) = document(row, d);
            assert_eq!(alone.positions, (0..alone.len() as u32).collect::<Vec<_>>());
            let (a, p) = (row_loss(model, &alone), row_loss(model, &masked));
            assert!((a - p).abs() <= 1e-5 * a.abs().max(1.0), "document {d}: alone {a}, packed {p}");
            checked += usize::from(docs > 1);
        }
    }
    checked
}

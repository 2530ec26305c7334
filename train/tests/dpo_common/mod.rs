//! What the DPO tests share: the fixture folders scripts/make_fixtures.py wrote, its pairs as
//! PairRows (built directly, not through the JSONL loader), a tiny random model and closeness
//! checks with `atol + rtol*|want|`.
#![allow(dead_code)]

use serde_json::Value;
use solar_model::presets::preset;
use solar_model::Llama;
use solar_train::data::rows::{LmRow, PairRow};
use std::path::PathBuf;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf").join(name)
}

pub fn reference_json(name: &str) -> Value {
    let path = fixture(name).join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

pub fn ints(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

/// A row scoring the tokens where `mask` is 1 (the completion), as TRL's loss mask.
pub fn masked_row(ids: &[i64], mask: &[i64]) -> LmRow {
    LmRow::single(ids.iter().map(|&x| x as u32).collect(), |t| mask[t] == 1)
}

/// The fixture's (prompt, chosen, rejected) pairs.
pub fn fixture_pairs(r: &Value) -> Vec<PairRow> {
    let side = |p: &Value, s: &str| {
        masked_row(&ints(&p[format!("{s}_input_ids")]), &ints(&p[format!("{s}_completion_mask")]))
    };
    r["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PairRow { chosen: side(p, "chosen"), rejected: side(p, "rejected") })
        .collect()
}

/// A pair from a prompt and two completions (token ids).
pub fn pair(prompt: &[u32], chosen: &[u32], rejected: &[u32]) -> PairRow {
    let row = |c: &[u32]| {
        let ids: Vec<u32> = prompt.iter().chain(c).copied().collect();
        LmRow::single(ids, |t| t >= prompt.len())
    };
    PairRow { chosen: row(chosen), rejected: row(rejected) }
}

/// The "tiny" preset, smaller still: 1 layer, hidden 32, vocab 48.
/// Four pairs whose rejected answer has one token replaced by 47 (dpo_train, lora_dpo).
pub fn corrupted_pairs() -> Vec<PairRow> {
    // (prompt, answer, which answer token to corrupt): the corruption is a fixed token, so a
    // policy can learn both "say the answer" and "avoid token 47".
    let cases: [(&[u32], &[u32], usize); 4] = [
        (&[1, 3, 4], &[10, 11, 12], 1),
        (&[1, 5], &[20, 21, 22, 23], 2),
        (&[1, 6, 7, 8], &[30, 31], 0),
        (&[1, 9], &[40, 41, 42], 2),
    ];
    cases
        .iter()
        .map(|(prompt, answer, at)| {
            let mut bad = answer.to_vec();
            bad[*at] = 47;
            pair(prompt, answer, &bad)
        })
        .collect()
}

pub fn tiny_model(seed: u64) -> Llama {
    let mut cfg = preset("tiny").unwrap();
    cfg.vocab_size = 48;
    cfg.hidden_size = 32;
    cfg.head_dim = 8;
    cfg.intermediate_size = 64;
    cfg.num_hidden_layers = 1;
    cfg.initializer_range = 0.2;
    Llama::init(cfg, seed).unwrap()
}

pub fn assert_close(what: &str, got: f64, want: f64, atol: f64, rtol: f64) {
    assert!(
        (got - want).abs() <= atol + rtol * want.abs(),
        "{what}: got {got}, want {want} (diff {:.3e}, atol {atol}, rtol {rtol})",
        (got - want).abs()
    );
}

//! The small world most CLI tests start from: a tiny model made by `init`, a JSONL of token-id
//! documents of varied lengths, and the check that a run was refused the way the exit-code
//! rule says (the code, no panic, a message naming what is wrong).

use crate::cli::{assert_ok, path_str, solar_train, Run};
use std::path::{Path, PathBuf};

/// `init --preset tiny` into `dir/name` with `seed` (a byte-level tokenizer, vocab 320).
pub fn tiny_model(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let model = dir.join(name);
    let seed = seed.to_string();
    assert_ok(&solar_train(&["init", "--preset", "tiny", "--out", path_str(&model), "--seed", &seed]));
    model
}

/// Writes one JSON value a line.
pub fn write_jsonl(path: &Path, lines: impl IntoIterator<Item = serde_json::Value>) {
    let text: Vec<String> = lines.into_iter().map(|v| v.to_string()).collect();
    std::fs::write(path, text.join("\n")).expect("write a JSONL file");
}

/// 40 token-id documents of 5 to 27 tokens, ids inside the tiny vocabulary, in `path`.
pub fn token_docs(path: &Path) {
    write_jsonl(
        path,
        (0..40u32).map(|i| {
            let ids: Vec<u32> = (0..(5 + i % 23)).map(|j| 3 + (i * 7 + j * 13) % 200).collect();
            serde_json::json!({ "input_ids": ids })
        }),
    );
}

/// `dir/base` (tiny, seed 2) and `dir/docs.jsonl` (token_docs): what a pretraining test needs.
pub fn tiny_model_and_docs(dir: &Path) -> (PathBuf, PathBuf) {
    let base = tiny_model(dir, "base", 2);
    let data = dir.join("docs.jsonl");
    token_docs(&data);
    (base, data)
}

/// Asserts the run was refused with exit `code`, without a panic, its stderr naming each of
/// `names`; returns the stderr for further checks.
pub fn assert_refused(run: &Run, code: i32, names: &[&str]) -> String {
    assert_eq!(run.code, Some(code), "stderr: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "a refusal, not a panic: {}", run.stderr);
    for n in names {
        assert!(run.stderr.contains(n), "the message names {n:?}: {}", run.stderr);
    }
    run.stderr.clone()
}

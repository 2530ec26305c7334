//! Bad data for every loader: a line that is not JSON names FILE:LINE, a missing or mistyped
//! field names the field, an empty file is an error, skip_bad_lines skips and counts bad lines
//! (and still fails when nothing is left), and ids outside the vocabulary are caught.

mod data_common;

use data_common::*;
use serde_json::json;
use solar_train::data::pairs::load_pairs;
use solar_train::data::pretrain::load_pretrain;
use solar_train::data::records::DataStats;
use solar_train::data::sft::{load_sft, SftFormat};
use solar_train::error::Result;
use std::path::Path;

/// Each loader on one file, returning its stats.
fn run_all(m: &Model, path: &Path, skip: bool) -> Vec<Result<DataStats>> {
    vec![
        load_pretrain(path, Some(&m.tok), &m.cfg, 64, skip).map(|r| r.1),
        load_sft(path, SftFormat::Alpaca, &m.tok, m.path(), &m.cfg, 512, true, skip).map(|r| r.1),
        load_pairs(path, &m.tok, m.path(), &m.cfg, 64, skip).map(|r| r.1),
    ]
}

/// A line every loader accepts: text, an Alpaca example and a text pair at once.
fn good() -> String {
    json!({"text": "t", "instruction": "i", "output": "o", "prompt": "p", "chosen": "c", "rejected": "r"})
        .to_string()
}

#[test]
fn a_line_that_is_not_json_names_file_and_line() {
    let m = model(None);
    for bad in ["{\"text\": \"unterminated", "[1, 2]", "\"just a string\""] {
        let path = m.write("bad.jsonl", &format!("{}\n\n{bad}\n{}\n", good(), good()));
        for res in run_all(&m, &path, false) {
            let err = res.unwrap_err().to_string();
            assert!(err.starts_with(&format!("{}:3: ", path.display())), "{err}");
        }
    }
}

#[test]
fn missing_and_mistyped_fields_are_named() {
    let m = model(None);
    let cases: Vec<(serde_json::Value, &str, usize)> = vec![
        (json!({"txt": "a"}), "missing field `text`", 0),
        (json!({"text": 5}), "field `text` must be a string", 0),
        (json!({"input_ids": "1 2"}), "field `input_ids`: expected a list of token ids", 0),
        (json!({"input_ids": [1, -2]}), "field `input_ids`: position 1", 0),
        (json!({"input_ids": [1, 400]}), "outside the vocabulary of 320", 0),
        (json!({"instruction": "i"}), "missing field `output`", 1),
        (json!({"instruction": "i", "input": ["x"], "output": "o"}), "field `input` must be a string", 1),
        (json!({"prompt": "p", "chosen": "c", "rejected": null}), "field `rejected` must be a string", 2),
    ];
    for (line, want, loader) in cases {
        let path = m.write("bad.jsonl", &format!("{}\n{line}\n", good()));
        let err = run_all(&m, &path, false).remove(loader).unwrap_err().to_string();
        assert!(err.contains("bad.jsonl:2: ") && err.contains(want), "{err} (wanted {want})");
    }
    let path = m.write("bad.jsonl", &format!("{}\n", json!({"messages": "hi"})));
    let err = load_sft(&path, SftFormat::Messages, &m.tok, m.path(), &m.cfg, 64, true, false).unwrap_err();
    assert!(err.to_string().contains("bad.jsonl:1: field `messages` must be a list of messages"), "{err}");
}

#[test]
fn an_empty_file_is_an_error() {
    let m = model(None);
    for text in ["", "\n  \n"] {
        let path = m.write("empty.jsonl", text);
        for res in run_all(&m, &path, true) {
            let err = res.unwrap_err().to_string();
            assert!(err.contains("empty.jsonl") && err.contains("no examples"), "{err}");
        }
    }
    let path = m.write("empty.txt", "\n\n");
    let err = load_pretrain(&path, Some(&m.tok), &m.cfg, 64, false).unwrap_err().to_string();
    assert!(err.contains("empty.txt: no examples"), "{err}");
    let missing = m.path().join("nope.jsonl");
    assert!(run_all(&m, &missing, true)
        .into_iter()
        .all(|r| r.unwrap_err().to_string().contains("nope.jsonl")));
}

#[test]
fn skip_bad_lines_skips_and_counts_them() {
    let m = model(None);
    let text = format!("{}\nnot json\n{}\n{{}}\n[]\n{}\n", good(), good(), good());
    let path = m.write("mixed.jsonl", &text);
    for res in run_all(&m, &path, true) {
        let stats = res.unwrap();
        assert_eq!((stats.examples, stats.skipped_lines), (3, 3), "{stats:?}");
    }
    // Nothing but bad lines: still an error.
    let path = m.write("allbad.jsonl", "oops\n{}\n");
    for res in run_all(&m, &path, true) {
        let err = res.unwrap_err().to_string();
        assert!(err.contains("allbad.jsonl: no examples: 2 bad lines skipped"), "{err}");
    }
}

#[test]
fn invalid_utf8_is_a_bad_line_and_seq_len_must_hold_a_prediction() {
    let m = model(None);
    let path = m.dir.path().join("bytes.jsonl");
    std::fs::write(&path, [good().as_bytes(), b"\n\xff\xfe\n"].concat()).unwrap();
    let err = load_pretrain(&path, Some(&m.tok), &m.cfg, 64, false).unwrap_err().to_string();
    assert!(err.contains("bytes.jsonl:2: not valid UTF-8"), "{err}");
    assert_eq!(load_pretrain(&path, Some(&m.tok), &m.cfg, 64, true).unwrap().1.skipped_lines, 1);
    let ok = m.write("ok.jsonl", &good());
    for res in [
        load_pretrain(&ok, Some(&m.tok), &m.cfg, 1, false).map(|_| ()),
        load_sft(&ok, SftFormat::Alpaca, &m.tok, m.path(), &m.cfg, 0, false, false).map(|_| ()),
        load_pairs(&ok, &m.tok, m.path(), &m.cfg, 1, false).map(|_| ()),
    ] {
        assert!(res.unwrap_err().to_string().contains("seq_len must be at least 2"));
    }
}

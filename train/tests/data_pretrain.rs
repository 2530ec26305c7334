//! Pretraining data: text gets BOS from the tokenizer and EOS closing each document, input_ids
//! are used as given, .txt files read a document per line, long documents split into pieces,
//! packing is greedy in file order and deterministic, and a packed document's loss is the same
//! as alone.

mod data_common;

use data_common::*;
use serde_json::json;
use solar_train::data::pretrain::load_pretrain;

#[test]
fn text_documents_get_bos_and_eos_and_pack_with_restarting_positions() {
    let m = model(None);
    let path = m.jsonl("p.jsonl", &[json!({"text": "ab"}), json!({"text": "c"})]);
    let (rows, stats) = load_pretrain(&path, Some(&m.tok), &m.cfg, 16, false).unwrap();
    assert_eq!(rows.len(), 1);
    let (a, b, c) = (bytes("a")[0], bytes("b")[0], bytes("c")[0]);
    assert_eq!(rows[0].ids, vec![BOS, a, b, EOS, BOS, c, EOS]);
    assert_eq!(rows[0].positions, vec![0, 1, 2, 3, 0, 1, 2]);
    assert_eq!(rows[0].doc_ids, vec![0, 0, 0, 0, 1, 1, 1]);
    // Each document's last token (its EOS) predicts nothing: no document predicts the next.
    assert_eq!(rows[0].labels, vec![a as i32, b as i32, EOS as i32, -100, c as i32, EOS as i32, -100]);
    assert_eq!((stats.examples, stats.rows, stats.tokens, stats.scored_tokens), (2, 1, 7, 5));
    assert_eq!((stats.split, stats.truncated, stats.skipped_lines), (0, 0, 0));
}

#[test]
fn input_ids_are_used_exactly_as_given_without_a_tokenizer() {
    let m = model(None);
    let path = m.jsonl("p.jsonl", &[json!({"input_ids": [7, 8, 9]}), json!({"input_ids": [1, 10]})]);
    let (rows, stats) = load_pretrain(&path, None, &m.cfg, 8, false).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].ids, vec![7, 8, 9, 1, 10]);
    assert_eq!(rows[0].labels, vec![8, 9, -100, 10, -100]);
    assert_eq!(stats.examples, 2);
    // Text without a tokenizer is an error naming the file, whatever skip_bad_lines says.
    let text = m.jsonl("t.jsonl", &[json!({"text": "hello"})]);
    let err = load_pretrain(&text, None, &m.cfg, 8, true).unwrap_err().to_string();
    assert!(err.contains("t.jsonl") && err.contains("tokenizer"), "{err}");
}

#[test]
fn txt_files_hold_one_document_per_non_blank_line() {
    let m = model(None);
    let path = m.write("corpus.txt", "ab\n\ncd\r\n");
    let (rows, stats) = load_pretrain(&path, Some(&m.tok), &m.cfg, 64, false).unwrap();
    assert_eq!(rows[0].ids, cat(&[&[BOS], &bytes("ab"), &[EOS, BOS], &bytes("cd"), &[EOS]]));
    assert_eq!(stats.examples, 2);
}

#[test]
fn long_documents_split_into_pieces_and_rows_never_exceed_seq_len() {
    let m = model(None);
    let long: Vec<u32> = (10..20).collect();
    let path = m.jsonl(
        "p.jsonl",
        &[json!({"input_ids": [3, 4, 5]}), json!({"input_ids": long}), json!({"input_ids": [6, 7]})],
    );
    let (rows, stats) = load_pretrain(&path, None, &m.cfg, 4, false).unwrap();
    let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.ids.clone()).collect();
    // [3 4 5] does not fit beside a 4-token piece; the last piece (18 19) takes [6 7] in.
    assert_eq!(ids, vec![vec![3, 4, 5], vec![10, 11, 12, 13], vec![14, 15, 16, 17], vec![18, 19, 6, 7]]);
    assert_eq!(rows[3].positions, vec![0, 1, 0, 1]);
    assert_eq!(stats.split, 1);
    assert_eq!(stats.rows, 4);
    assert!(rows.iter().all(|r| r.len() <= 4));
}

#[test]
fn loading_is_deterministic() {
    let m = model(None);
    let lines: Vec<_> = (0..40).map(|i| json!({"text": "x".repeat(1 + (i * 7) % 13)})).collect();
    let path = m.jsonl("p.jsonl", &lines);
    let a = load_pretrain(&path, Some(&m.tok), &m.cfg, 24, false).unwrap();
    let b = load_pretrain(&path, Some(&m.tok), &m.cfg, 24, false).unwrap();
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert!(a.0.len() > 1 && a.0.iter().all(|r| r.len() <= 24));
}

#[test]
fn a_packed_document_has_the_same_loss_as_alone() {
    let m = model(None);
    let path = m.jsonl(
        "p.jsonl",
        &[json!({"text": "the cat sat"}), json!({"text": "on the mat!"}), json!({"text": "ok"})],
    );
    let (rows, _) = load_pretrain(&path, Some(&m.tok), &m.cfg, 40, false).unwrap();
    assert_eq!(rows.len(), 1, "all three documents share one row");
    assert_eq!(assert_packing_isolates(&tiny_model(3), &rows), 3);
}

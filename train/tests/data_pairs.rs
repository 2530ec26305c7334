//! DPO data: the prompt is encoded with the tokenizer's special tokens, completions without,
//! each closed by one EOS; labels score completion + EOS only, so a sequence's log-prob sums
//! exactly those; TRL's conversational forms (explicit and implicit prompt); truncation keeps
//! the prompt's end.

mod data_common;

use data_common::*;
use serde_json::{json, Value};
use solar_engine::ops;
use solar_train::data::pairs::load_pairs;
use solar_train::data::rows::{collate, PairRow};

fn pairs(m: &Model, lines: &[Value], seq_len: usize) -> Vec<PairRow> {
    let path = m.jsonl("dpo.jsonl", lines);
    load_pairs(&path, &m.tok, m.path(), &m.cfg, seq_len, false).unwrap().0
}

#[test]
fn text_pairs_score_the_completion_and_one_eos() {
    let m = model(None);
    let p =
        &pairs(&m, &[json!({"prompt": "Capital of France?", "chosen": " Paris", "rejected": " Rome!"})], 128)
            [0];
    let prompt = cat(&[&[BOS], &bytes("Capital of France?")]);
    assert_eq!(p.chosen.ids, cat(&[&prompt, &bytes(" Paris"), &[EOS]]));
    assert_eq!(p.rejected.ids, cat(&[&prompt, &bytes(" Rome!"), &[EOS]]));
    assert_eq!(scored(&p.chosen), cat(&[&bytes(" Paris"), &[EOS]]));
    assert_eq!(scored(&p.rejected), cat(&[&bytes(" Rome!"), &[EOS]]));
    // The first scored label is the prediction made at the prompt's last token.
    assert_eq!(p.chosen.labels.iter().position(|&l| l >= 0), Some(prompt.len() - 1));
    // A completion that already ends in </s> keeps one EOS.
    let p = &pairs(&m, &[json!({"prompt": "Q", "chosen": "A</s>", "rejected": "B"})], 128)[0];
    assert_eq!(p.chosen.ids, cat(&[&[BOS], &bytes("QA"), &[EOS]]));
}

#[test]
fn sequence_logprob_sums_the_completion_tokens() {
    let m = model(None);
    let p = &pairs(&m, &[json!({"prompt": "2+2=", "chosen": "4", "rejected": "five"})], 64)[0];
    let model = tiny_model(11);
    let batch = collate(&[&p.rejected]).unwrap();
    let logits = model.logits(None, &batch.input).unwrap(); // [1, T, V]
    let v = logits.dims()[2];
    let logp = ops::log_softmax(&logits).unwrap().to_vec::<f32>().unwrap();
    // By hand: log p(token | prefix) over "five" + EOS, predicted from positions 4..=8.
    let ids = &p.rejected.ids;
    let prompt_len = 1 + "2+2=".len();
    let by_hand: f64 = (prompt_len..ids.len()).map(|t| logp[(t - 1) * v + ids[t] as usize] as f64).sum();
    let ce = model.loss(None, &batch.input, &batch.targets).unwrap();
    assert_eq!(ce.count, "five".len() + 1);
    let from_labels = -ce.loss_sum.to_scalar().unwrap();
    assert!((by_hand - from_labels).abs() < 1e-4, "{by_hand} vs {from_labels}");
}

#[test]
fn conversational_pairs_with_an_explicit_or_implicit_prompt() {
    let m = model(Some(INST_TEMPLATE));
    let user = json!({"role": "user", "content": "hi"});
    let (good, bad) =
        (json!({"role": "assistant", "content": "hello"}), json!({"role": "assistant", "content": "go"}));
    let explicit = json!({"prompt": [user], "chosen": [good], "rejected": [bad]});
    let implicit = json!({"chosen": [user, good], "rejected": [user, bad]});
    let got = pairs(&m, &[explicit, implicit], 128);
    // The template writes <s>: one BOS. Its </s> after the answer is the one EOS.
    let prompt = cat(&[&[BOS], &bytes("[INST] hi [/INST]")]);
    assert_eq!(got[0].chosen.ids, cat(&[&prompt, &bytes("hello"), &[EOS]]));
    assert_eq!(got[0].rejected.ids, cat(&[&prompt, &bytes("go"), &[EOS]]));
    assert_eq!(scored(&got[0].chosen), cat(&[&bytes("hello"), &[EOS]]));
    assert_eq!(got[0], got[1], "the shared leading messages are the prompt");
    // Multi-turn: everything up to the last differing answer is prompt.
    let a1 = json!({"role": "assistant", "content": "a1"});
    let u2 = json!({"role": "user", "content": "more"});
    let got = pairs(&m, &[json!({"chosen": [user, a1, u2, good], "rejected": [user, a1, u2, bad]})], 128);
    let prompt = cat(&[&[BOS], &bytes("[INST] hi [/INST]a1"), &[EOS], &bytes("[INST] more [/INST]")]);
    assert_eq!(got[0].chosen.ids, cat(&[&prompt, &bytes("hello"), &[EOS]]));
    assert_eq!(scored(&got[0].rejected), cat(&[&bytes("go"), &[EOS]]));
}

#[test]
fn conversational_errors_name_line_and_field() {
    let m = model(Some(INST_TEMPLATE));
    let user = json!({"role": "user", "content": "hi"});
    let cases = [
        (
            json!({"chosen": [{"role": "user", "content": "x"}], "rejected": [user]}),
            "share no leading message",
        ),
        (json!({"chosen": [user], "rejected": [user]}), "nothing after the prompt"),
        (
            json!({"prompt": "hi", "chosen": [user], "rejected": [user]}),
            "field `prompt` must be a list of messages",
        ),
        (
            json!({"prompt": [user], "chosen": [{"role": "assistant"}], "rejected": [user]}),
            "`chosen[0].content`",
        ),
        (
            json!({"prompt": [user], "chosen": 3, "rejected": "x"}),
            "field `chosen` must be a string or a list",
        ),
        (json!({"prompt": "p", "chosen": "c"}), "missing field `rejected`"),
        (json!({"chosen": "c", "rejected": "r"}), "missing field `prompt`"),
    ];
    for (line, want) in cases {
        let path = m.jsonl("dpo.jsonl", &[line]);
        let err = load_pairs(&path, &m.tok, m.path(), &m.cfg, 64, false).unwrap_err().to_string();
        assert!(err.contains("dpo.jsonl:1:") && err.contains(want), "{err}");
    }
}

#[test]
fn truncation_keeps_the_prompt_end_and_cuts_completions() {
    let m = model(None);
    let lines = [
        json!({"prompt": "0123456789", "chosen": "abcdef", "rejected": "x"}),
        json!({"prompt": "p", "chosen": "c", "rejected": "r"}),
    ];
    let path = m.jsonl("dpo.jsonl", &lines);
    let (got, stats) = load_pairs(&path, &m.tok, m.path(), &m.cfg, 8, false).unwrap();
    // Prompt: BOS + its last 3 tokens (half the row); chosen cut to 4 tokens, rejected whole.
    let prompt = cat(&[&[BOS], &bytes("789")]);
    assert_eq!(got[0].chosen.ids, cat(&[&prompt, &bytes("abcd")]));
    assert_eq!(got[0].rejected.ids, cat(&[&prompt, &bytes("x"), &[EOS]]));
    assert_eq!(scored(&got[0].chosen), bytes("abcd"));
    assert_eq!((stats.examples, stats.truncated, stats.rows), (2, 1, 2));
    assert_eq!(stats.tokens, 8 + 6 + 4 + 4);
    assert_eq!(stats.scored_tokens, 4 + 2 + 2 + 2);
}

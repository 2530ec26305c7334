//! `eval --task choice` against log-likelihoods computed here from `Llama::logits` with a
//! hand-written log-softmax: acc and acc_norm follow from them, trailing context whitespace
//! moves into the continuation (lm-evaluation-harness), long inputs lose tokens from the left,
//! and bad lines (missing fields, an answer out of range) name FILE:LINE.
//!
//! The evaluator scores through the fused lm_head + log-prob op, which sums in f32, while the
//! reference here sums in f64 from the same f32 logits: each term's logsumexp carries about
//! 1e-7 relative rounding and the running sum adds |sum| * 6e-8 a step, so over at most ~30
//! tokens of |log p| < 10 they agree to 1e-5 of max(|loglik|, 1) (`close`).

use solar_model::presets::preset;
use solar_model::tokenizer::{byte_level_json, Tokenizer};
use solar_model::{Llama, ModelInput};
use solar_train::eval::choice::{eval_choice, load_choice_examples, ChoiceExample};
use std::path::Path;

fn setup(seed: u64) -> (Llama, Tokenizer) {
    let model = Llama::init(preset("tiny").unwrap(), seed).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tokenizer.json");
    std::fs::write(&path, byte_level_json().to_string()).unwrap();
    (model, Tokenizer::from_file(&path).unwrap())
}

/// log p(ids[k] | ids[first..k]) summed over k >= start, the model fed ids[first..n-1].
fn reference_loglik(model: &Llama, ids: &[u32], start: usize, first: usize) -> f64 {
    let input = &ids[first..ids.len() - 1];
    let logits = model.logits(None, &ModelInput::rows(input, 1, input.len()).unwrap()).unwrap();
    let logits = logits.to_vec::<f32>().unwrap();
    let v = model.config.vocab_size;
    (start..ids.len())
        .map(|k| {
            let row: Vec<f64> =
                logits[(k - 1 - first) * v..(k - first) * v].iter().map(|&x| x as f64).collect();
            let max = row.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = row.iter().map(|x| (x - max).exp()).sum();
            row[ids[k] as usize] - max - z.ln()
        })
        .sum()
}

/// The choice's log-likelihood after `context` + " ", from separately encoded texts.
fn loglik(model: &Llama, tok: &Tokenizer, context: &str, choice: &str) -> f64 {
    let ctx = tok.encode(context, true).unwrap();
    let whole = tok.encode(&format!("{context} {choice}"), true).unwrap();
    assert_eq!(&whole[..ctx.len()], &ctx[..], "byte-level: the context is a prefix");
    reference_loglik(model, &whole, ctx.len(), 0)
}

/// The f32-versus-f64 agreement explained in the header.
fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-5 * want.abs().max(1.0)
}

fn first_argmax(xs: &[f64]) -> usize {
    (0..xs.len()).fold(0, |best, i| if xs[i] > xs[best] { i } else { best })
}

fn example(line: usize, context: &str, choices: &[&str], answer: usize) -> ChoiceExample {
    ChoiceExample {
        line,
        context: context.into(),
        choices: choices.iter().map(|c| c.to_string()).collect(),
        answer,
    }
}

#[test]
fn acc_and_acc_norm_follow_the_log_likelihoods() {
    let (model, tok) = setup(11);
    let examples = vec![
        // A one-letter choice against a long one: the sum prefers the short one (fewer tokens
        // to pay for), the per-character mean the long one.
        example(1, "Pick one:", &["x", "xxxxxxxxxxxxxxxxxxxxxxxxx"], 1),
        example(2, "The sky is", &["blue", "green", "red"], 0),
        example(3, "2 + 2 =", &["4", "5"], 1),
    ];
    let r = eval_choice(&model, &tok, &examples, " ", 512, Path::new("mc.jsonl")).unwrap();
    let (mut acc, mut acc_norm) = (0.0, 0.0);
    for (ex, got) in examples.iter().zip(&r.outcomes) {
        let want: Vec<f64> = ex.choices.iter().map(|c| loglik(&model, &tok, &ex.context, c)).collect();
        for (g, w) in got.logliks.iter().zip(&want) {
            assert!(close(*g, *w), "{g} vs {w}");
        }
        let normed: Vec<f64> = want.iter().zip(&ex.choices).map(|(l, c)| l / c.len() as f64).collect();
        assert_eq!(got.pred, first_argmax(&want));
        assert_eq!(got.pred_norm, first_argmax(&normed));
        acc += (first_argmax(&want) == ex.answer) as u8 as f64 / 3.0;
        acc_norm += (first_argmax(&normed) == ex.answer) as u8 as f64 / 3.0;
    }
    assert_eq!((r.outcomes[0].pred, r.outcomes[0].pred_norm), (0, 1), "{:?}", r.outcomes[0]);
    assert!((r.acc - acc).abs() < 1e-12 && (r.acc_norm - acc_norm).abs() < 1e-12);
    assert_eq!(r.examples, 3);
}

#[test]
fn trailing_context_space_moves_into_the_continuation() {
    let (model, tok) = setup(2);
    let spaced = [example(1, "The sky is ", &["blue", "grey"], 0)];
    let plain = [example(1, "The sky is", &["blue", "grey"], 0)];
    let a = eval_choice(&model, &tok, &spaced, "", 512, Path::new("a")).unwrap();
    let b = eval_choice(&model, &tok, &plain, " ", 512, Path::new("b")).unwrap();
    assert_eq!(a.outcomes[0].logliks, b.outcomes[0].logliks);
}

#[test]
fn long_inputs_lose_tokens_from_the_left() {
    let (model, tok) = setup(4);
    let context = "a fairly long context that will not fit";
    let ex = [example(1, context, &["yes"], 0)];
    let seq_len = 8;
    let r = eval_choice(&model, &tok, &ex, " ", seq_len, Path::new("x")).unwrap();
    let ctx = tok.encode(context, true).unwrap();
    let whole = tok.encode(&format!("{context} yes"), true).unwrap();
    let first = whole.len() - 1 - seq_len;
    let want = reference_loglik(&model, &whole, ctx.len(), first);
    assert!(close(r.outcomes[0].logliks[0], want), "{} vs {want}", r.outcomes[0].logliks[0]);
    // A continuation that cannot fit is an error naming the line, not a silent cut.
    let e = eval_choice(&model, &tok, &ex, " ", 2, Path::new("x.jsonl")).unwrap_err().to_string();
    assert!(e.contains("x.jsonl:1") && e.contains("choice 0"), "{e}");
}

#[test]
fn bad_lines_name_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mc.jsonl");
    let good = r#"{"context": "c", "choices": ["a", "b"], "answer": 1}"#;
    let cases = [
        (r#"{"choices": ["a"], "answer": 0}"#, "missing field `context`"),
        (r#"{"context": "c", "answer": 0}"#, "missing field `choices`"),
        (r#"{"context": "c", "choices": ["a", "b"]}"#, "missing field `answer`"),
        (r#"{"context": "c", "choices": ["a", "b"], "answer": 2}"#, "field `answer` must be an index"),
        (r#"{"context": "c", "choices": ["a", "b"], "answer": -1}"#, "field `answer` must be an index"),
        (r#"{"context": "c", "choices": ["a", "b"], "answer": "a"}"#, "field `answer` must be an index"),
        (r#"{"context": "c", "choices": [], "answer": 0}"#, "field `choices` is an empty list"),
        (r#"{"context": "c", "choices": ["a", ""], "answer": 0}"#, "field `choices[1]` is empty"),
        (r#"{"context": "c", "choices": ["a", 3], "answer": 0}"#, "field `choices[1]` must be a string"),
        (r#"{"context": "c", "choices": "a", "answer": 0}"#, "field `choices` must be a list"),
    ];
    for (bad, want) in cases {
        std::fs::write(&path, format!("{good}\n\n{bad}\n")).unwrap();
        let e = load_choice_examples(&path).unwrap_err().to_string();
        assert!(e.contains("mc.jsonl:3: ") && e.contains(want), "{e}");
    }
    std::fs::write(&path, format!("{good}\n")).unwrap();
    let ok = load_choice_examples(&path).unwrap();
    assert_eq!(ok, vec![example(1, "c", &["a", "b"], 1)]);
}

//! `eval --task choice`: multiple-choice accuracy by log-likelihood, as lm-evaluation-harness
//! scores its `multiple_choice` tasks (HellaSwag, ARC, ...), on JSONL lines of
//! `{"context": str, "choices": [str, ...], "answer": index}`.
//!
//! The continuation of choice k is `target_delimiter + choices[k]` (the harness's default
//! delimiter is one space). As in the harness, whitespace ending the context moves to the
//! start of the continuation; the context is encoded, then context + continuation, and the
//! continuation's tokens are the latter's tokens past the former's count, so the tokenizer
//! sees the text joined exactly as the model would read it. Its log-likelihood is the sum of
//! log p(token | everything before) over those tokens. Unlike the harness's default
//! (add_bos_token=False) the context is encoded with the tokenizer's special tokens, because
//! Solar's models always train with a BOS first. A sequence longer than the context window
//! loses tokens from the left, as in the harness.
//!   acc      = mean over examples of [argmax_k loglik_k == answer]
//!   acc_norm = the same with loglik_k / chars(choices[k]) (characters, the harness's
//!              len(str); the delimiter not counted); ties go to the first choice (np.argmax).

use crate::data::jsonl::{str_field, Record};
use crate::data::records::{check_vocab, read_records, DataStats};
use crate::error::{Result, TrainError};
use serde::Serialize;
use serde_json::Value;
use solar_engine::Tensor;
use solar_model::tokenizer::Tokenizer;
use solar_model::{Llama, ModelInput};
use std::path::Path;

/// One question: the context, the choices and the index of the right one.
#[derive(Clone, Debug, PartialEq)]
pub struct ChoiceExample {
    pub line: usize,
    pub context: String,
    pub choices: Vec<String>,
    pub answer: usize,
}

/// The scores of one example (written by `--out` as one JSONL line).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChoiceOutcome {
    pub line: usize,
    pub logliks: Vec<f64>,
    pub pred: usize,
    pub pred_norm: usize,
    pub answer: usize,
}

/// What `eval --task choice --json` prints; `outcomes` is not printed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChoiceEval {
    pub acc: f64,
    pub acc_norm: f64,
    pub examples: usize,
    #[serde(skip)]
    pub outcomes: Vec<ChoiceOutcome>,
}

/// The examples of a data file; a missing or mistyped field, no choice, an empty choice or an
/// answer out of range is an error naming FILE:LINE.
pub fn load_choice_examples(path: &Path) -> Result<Vec<ChoiceExample>> {
    let mut stats = DataStats::default();
    read_records(path, false, &mut stats, |r| Ok(Some(parse_example(path, r)?)))
}

fn parse_example(path: &Path, r: &Record) -> Result<ChoiceExample> {
    let err = |m: String| TrainError::line(path, r.line, m);
    let context = str_field(path, r, "context")?.to_string();
    let choices: Vec<String> = match r.fields.get("choices") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                Value::String(_) => Err(err(format!("field `choices[{i}]` is empty"))),
                other => Err(err(format!("field `choices[{i}]` must be a string, got {other}"))),
            })
            .collect::<Result<_>>()?,
        Some(other) => return Err(err(format!("field `choices` must be a list of strings, got {other}"))),
        None => return Err(err("missing field `choices`".into())),
    };
    if choices.is_empty() {
        return Err(err("field `choices` is an empty list".into()));
    }
    let answer = match r.fields.get("answer") {
        Some(v) => match v.as_u64() {
            Some(a) if (a as usize) < choices.len() => a as usize,
            _ => {
                return Err(err(format!(
                    "field `answer` must be an index into `choices` (0..{}), got {v}",
                    choices.len() - 1
                )))
            }
        },
        None => return Err(err("missing field `answer`".into())),
    };
    Ok(ChoiceExample { line: r.line, context, choices, answer })
}

/// The tokens of context + continuation and where the continuation starts (the harness's
/// `_encode_pair`).
pub fn encode_pair(tok: &Tokenizer, context: &str, continuation: &str) -> Result<(Vec<u32>, usize)> {
    let kept = context.trim_end();
    let moved = format!("{}{continuation}", &context[kept.len()..]);
    let ctx = tok.encode(kept, true)?;
    let whole = tok.encode(&format!("{kept}{moved}"), true)?;
    let start = ctx.len().min(whole.len());
    Ok((whole, start))
}

/// Sum of log p(ids[k] | ids[..k]) for k in start..len, from the fused lm_head + log-prob op
/// (the logits [T, V] are never held; the sum is f32, as the model computes). At most
/// `seq_len` tokens are fed; earlier ones are dropped from the left.
pub fn continuation_loglik(model: &Llama, ids: &[u32], start: usize, seq_len: usize) -> Result<f64> {
    let n = ids.len();
    if start == 0 || start >= n {
        return Err(TrainError::Msg(
            "the continuation must follow at least one token and not be empty".into(),
        ));
    }
    if n - start > seq_len {
        return Err(TrainError::Msg(format!(
            "the continuation has {} tokens, more than the context window of {seq_len}",
            n - start
        )));
    }
    // Inputs are ids[first..n-1]; position p predicts ids[first + p + 1], scored from start on.
    let first = (n - 1).saturating_sub(seq_len);
    let input = &ids[first..n - 1];
    let t = input.len();
    let targets: Vec<i32> = (first + 1..n).map(|k| if k >= start { ids[k] as i32 } else { -100 }).collect();
    let targets = Tensor::from_vec(targets, [1, t])?;
    let lp = model.sequence_logprobs(None, &ModelInput::rows(input, 1, t)?, &targets)?; // [1]
    Ok(lp.logps.to_vec_f64()?[0])
}

/// The first index of the largest value (np.argmax's tie rule).
fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// acc and acc_norm of `model` on `examples`. `path` only names the data file in errors.
pub fn eval_choice(
    model: &Llama,
    tok: &Tokenizer,
    examples: &[ChoiceExample],
    target_delimiter: &str,
    seq_len: usize,
    path: &Path,
) -> Result<ChoiceEval> {
    if examples.is_empty() {
        return Err(TrainError::Msg("no example to evaluate".into()));
    }
    let mut outcomes = Vec::with_capacity(examples.len());
    for ex in examples {
        let line_err = |m: String| TrainError::line(path, ex.line, m);
        let mut logliks = Vec::with_capacity(ex.choices.len());
        for (k, choice) in ex.choices.iter().enumerate() {
            let (ids, start) = encode_pair(tok, &ex.context, &format!("{target_delimiter}{choice}"))?;
            check_vocab(path, ex.line, &ids, model.config.vocab_size)?;
            if start == 0 {
                return Err(line_err("the context encodes to no token (no BOS either)".into()));
            }
            if start >= ids.len() {
                return Err(line_err(format!("choice {k} adds no token to the context")));
            }
            let ll = continuation_loglik(model, &ids, start, seq_len)
                .map_err(|e| line_err(format!("choice {k}: {e}")))?;
            logliks.push(ll);
        }
        let normed: Vec<f64> =
            logliks.iter().zip(&ex.choices).map(|(ll, c)| ll / c.chars().count() as f64).collect();
        outcomes.push(ChoiceOutcome {
            line: ex.line,
            pred: argmax(&logliks),
            pred_norm: argmax(&normed),
            answer: ex.answer,
            logliks,
        });
    }
    let n = outcomes.len() as f64;
    let acc = outcomes.iter().filter(|o| o.pred == o.answer).count() as f64 / n;
    let acc_norm = outcomes.iter().filter(|o| o.pred_norm == o.answer).count() as f64 / n;
    Ok(ChoiceEval { acc, acc_norm, examples: outcomes.len(), outcomes })
}

#[cfg(test)]
mod tests {
    use super::argmax;

    #[test]
    fn argmax_takes_the_first_of_ties() {
        assert_eq!(argmax(&[-3.0, -1.0, -1.0]), 1);
        assert_eq!(argmax(&[-0.5]), 0);
        assert_eq!(argmax(&[-2.0, -4.0]), 0);
    }
}

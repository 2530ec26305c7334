//! `eval --task generate`: exact-match accuracy of greedy answers on instruction data.
//!
//! Each example's prompt is built exactly as SFT built it (template.rs: the Alpaca prompt, the
//! OpenOrca variant, a raw prompt, or the model's chat template up to the last assistant
//! message with the generation prompt), encoded with the same single BOS, and the model
//! answers greedily until EOS or `max_new_tokens`. The answer counts when its decoded text
//! (special tokens skipped), stripped of surrounding whitespace, equals the reference stripped
//! the same way. One strict metric on purpose: a lenient prefix match on a tiny model mostly
//! measures luck, and anything softer belongs to a task-specific scorer.

use crate::data::jsonl::{str_field, Record};
use crate::data::records::{check_vocab, optional_text_field, read_records, DataStats};
use crate::data::sft::SftFormat;
use crate::data::template::{alpaca_prompt, parse_messages, system_prompt, ChatTemplate, Specials};
use crate::error::{Result, TrainError};
use serde::Serialize;
use solar_model::generate::GenerateOptions;
use solar_model::tokenizer::Tokenizer;
use solar_model::Llama;
use std::path::Path;

/// One prompt to answer and the answer expected.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateExample {
    /// The 1-based line of the data file it came from.
    pub line: usize,
    pub prompt_ids: Vec<u32>,
    pub reference: String,
}

/// What the model answered to one example (written by `--out` as one JSONL line).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GenerateOutcome {
    pub line: usize,
    pub prediction: String,
    pub reference: String,
    pub correct: bool,
}

/// What `eval --task generate --json` prints; `outcomes` is not printed.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GenerateEval {
    pub exact_match: f64,
    pub correct: usize,
    pub examples: usize,
    #[serde(skip)]
    pub outcomes: Vec<GenerateOutcome>,
}

/// The metric: both texts stripped of surrounding whitespace, then equal.
pub fn exact_match(prediction: &str, reference: &str) -> bool {
    prediction.trim() == reference.trim()
}

/// Prompts and references of an SFT-format data file (every format `load_sft` reads).
pub fn load_generate_examples(
    path: &Path,
    format: SftFormat,
    tokenizer: &Tokenizer,
    model_dir: &Path,
    model: &Llama,
) -> Result<Vec<GenerateExample>> {
    let cfg = &model.config;
    let specials = Specials::load(tokenizer, model_dir, cfg)?;
    let template = match format {
        SftFormat::Messages => Some(ChatTemplate::load(model_dir, &specials)?),
        _ => None,
    };
    let mut stats = DataStats::default();
    read_records(path, false, &mut stats, |r| {
        let (prompt, reference) = match &template {
            Some(t) => chat_prompt(path, r, t)?,
            None => text_prompt(path, r, format)?,
        };
        let prompt_ids = specials.encode_start(tokenizer, &prompt)?;
        check_vocab(path, r.line, &prompt_ids, cfg.vocab_size)?;
        if prompt_ids.is_empty() {
            return Err(TrainError::line(path, r.line, "the prompt encodes to no token"));
        }
        if prompt_ids.len() >= cfg.max_position_embeddings {
            return Err(TrainError::line(
                path,
                r.line,
                format!(
                    "the prompt has {} tokens, no room left in the model's context of {}",
                    prompt_ids.len(),
                    cfg.max_position_embeddings
                ),
            ));
        }
        // A reference that carries the EOS text (as SFT data may) is compared without it.
        let reference = specials.split_eos(&reference).0.to_string();
        Ok(Some(GenerateExample { line: r.line, prompt_ids, reference }))
    })
}

/// (prompt text, reference) of a one-turn format.
fn text_prompt(path: &Path, r: &Record, format: SftFormat) -> Result<(String, String)> {
    Ok(match format {
        SftFormat::Alpaca => (
            alpaca_prompt(str_field(path, r, "instruction")?, optional_text_field(path, r, "input")?),
            str_field(path, r, "output")?.to_string(),
        ),
        SftFormat::OpenOrca => (
            system_prompt(optional_text_field(path, r, "system_prompt")?, str_field(path, r, "question")?),
            str_field(path, r, "response")?.to_string(),
        ),
        _ => (str_field(path, r, "prompt")?.to_string(), str_field(path, r, "completion")?.to_string()),
    })
}

/// (prompt text, reference) of a conversation: everything before the last assistant message,
/// rendered with the generation prompt, and that message. Messages after it are ignored.
fn chat_prompt(path: &Path, r: &Record, t: &ChatTemplate) -> Result<(String, String)> {
    let err = |m: String| TrainError::line(path, r.line, m);
    let v = r.fields.get("messages").ok_or_else(|| err("missing field `messages`".into()))?;
    let messages = parse_messages("messages", v).map_err(err)?;
    let Some(k) = messages.iter().rposition(|m| m.role == "assistant") else {
        return Err(err("field `messages` has no assistant message: no reference answer".into()));
    };
    let prompt = t.render(&messages[..k], true).map_err(err)?;
    Ok((prompt, messages[k].content.clone()))
}

/// Greedy answers to every example and their exact-match accuracy.
pub fn eval_generate(
    model: &Llama,
    tokenizer: &Tokenizer,
    examples: &[GenerateExample],
    max_new_tokens: usize,
) -> Result<GenerateEval> {
    if examples.is_empty() {
        return Err(TrainError::Msg("no example to evaluate".into()));
    }
    if max_new_tokens == 0 {
        return Err(TrainError::Msg("--max-new-tokens must be at least 1".into()));
    }
    let opts = GenerateOptions { max_new_tokens, temperature: 0.0, top_p: 1.0, seed: 0, ignore_eos: false };
    let mut outcomes = Vec::with_capacity(examples.len());
    for ex in examples {
        let ids = model.generate(&ex.prompt_ids, &opts)?;
        let prediction = tokenizer.decode(&ids, true)?;
        let correct = exact_match(&prediction, &ex.reference);
        outcomes.push(GenerateOutcome {
            line: ex.line,
            prediction,
            reference: ex.reference.clone(),
            correct,
        });
    }
    let correct = outcomes.iter().filter(|o| o.correct).count();
    Ok(GenerateEval {
        exact_match: correct as f64 / outcomes.len() as f64,
        correct,
        examples: outcomes.len(),
        outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::exact_match;

    #[test]
    fn exact_match_ignores_surrounding_whitespace_only() {
        assert!(exact_match(" Paris\n", "Paris"));
        assert!(exact_match("a b", " a b "));
        assert!(!exact_match("a  b", "a b"));
        assert!(!exact_match("paris", "Paris"));
        assert!(!exact_match("Paris.", "Paris"));
    }
}

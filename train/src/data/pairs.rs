//! Preference pairs for DPO, in TRL's forms:
//!   text                  {prompt, chosen, rejected}, three strings
//!   conversational        {prompt: [messages], chosen: [messages], rejected: [messages]}
//!   implicit prompt       {chosen: [messages], rejected: [messages]}: the leading messages the
//!                         two share are the prompt (TRL's extract_prompt)
//! Conversations go through the model's chat template (template.rs): the prompt is rendered
//! with the generation prompt, and a completion is what the whole conversation adds after it.
//!
//! As in TRL, the prompt is encoded with the tokenizer's special tokens (one BOS; none added
//! when the template writes it) and each completion without them, followed by exactly one EOS
//! (an EOS text the template or data closed it with is replaced by it). Labels score the
//! completion tokens and the EOS only, so a sequence's log-prob sums over exactly those.
//!
//! Truncation (counted once per pair): when prompt + the longer completion exceed seq_len,
//! the prompt keeps its last tokens (and its BOS), at most what leaves the longer completion
//! its full length but never less than half the row (fewer if it is shorter); completions
//! are cut from the end to fit the rest. So a pair always keeps the prompt's end, the part the
//! completions answer, and at least one scored token on each side.

use crate::data::jsonl::{str_field, Record};
use crate::data::records::{check_seq_len, check_vocab, read_records, DataStats};
use crate::data::rows::{LmRow, PairRow};
use crate::data::template::{parse_messages, ChatTemplate, Message, Specials};
use crate::error::{Result, TrainError};
use serde_json::Value;
use solar_model::tokenizer::Tokenizer;
use solar_model::LlamaConfig;
use std::path::Path;

/// Preference pairs of a data file, and what the file became.
pub fn load_pairs(
    path: &Path,
    tokenizer: &Tokenizer,
    model_dir: &Path,
    cfg: &LlamaConfig,
    seq_len: usize,
    skip_bad_lines: bool,
) -> Result<(Vec<PairRow>, DataStats)> {
    check_seq_len(seq_len)?;
    let specials = Specials::load(tokenizer, model_dir, cfg)?;
    // Loaded at the first conversational line: text pairs never need a template.
    let mut template: Option<ChatTemplate> = None;
    let mut stats = DataStats::default();
    let mut truncated = 0;
    let pairs = read_records(path, skip_bad_lines, &mut stats, |r| {
        let (prompt, chosen, rejected) = match r.fields.get("chosen") {
            Some(Value::String(_)) => (
                str_field(path, r, "prompt")?.to_string(),
                str_field(path, r, "chosen")?.to_string(),
                str_field(path, r, "rejected")?.to_string(),
            ),
            Some(Value::Array(_)) => {
                let t = match &mut template {
                    Some(t) => &*t,
                    slot @ None => slot.insert(ChatTemplate::load(model_dir, &specials)?),
                };
                conversation_texts(t, r).map_err(|e| TrainError::line(path, r.line, e))?
            }
            Some(other) => {
                let msg = format!("field `chosen` must be a string or a list of messages, got {other}");
                return Err(TrainError::line(path, r.line, msg));
            }
            None => return Err(TrainError::line(path, r.line, "missing field `chosen`")),
        };
        let mut prompt = specials.encode_start(tokenizer, &prompt)?;
        let completion = |text: &str| -> Result<Vec<u32>> {
            let mut ids = tokenizer.encode(specials.split_eos(text).0, false)?;
            ids.push(specials.eos);
            Ok(ids)
        };
        let (mut chosen, mut rejected) = (completion(&chosen)?, completion(&rejected)?);
        for ids in [&prompt, &chosen, &rejected] {
            check_vocab(path, r.line, ids, cfg.vocab_size)?;
        }
        let bos = specials.bos.as_ref().map(|(id, _)| *id);
        if truncate_pair(&mut prompt, &mut chosen, &mut rejected, seq_len, bos) {
            truncated += 1;
        }
        Ok(Some(PairRow {
            chosen: completion_row(&prompt, chosen),
            rejected: completion_row(&prompt, rejected),
        }))
    })?;
    stats.truncated = truncated;
    stats.rows = pairs.len();
    stats.count_rows(pairs.iter().flat_map(|p| [&p.chosen, &p.rejected]));
    Ok((pairs, stats))
}

/// Prompt then completion, scoring the completion (and its EOS) only.
fn completion_row(prompt: &[u32], completion: Vec<u32>) -> LmRow {
    let n = prompt.len();
    LmRow::single(prompt.iter().copied().chain(completion).collect(), |t| t >= n)
}

/// The prompt, chosen and rejected texts of a conversational pair.
fn conversation_texts(t: &ChatTemplate, r: &Record) -> std::result::Result<(String, String, String), String> {
    let field = |name: &str| match r.fields.get(name) {
        Some(v) => parse_messages(name, v),
        None => Err(format!("missing field `{name}`")),
    };
    let (chosen, rejected) = (field("chosen")?, field("rejected")?);
    let (prompt, chosen, rejected) = match r.fields.get("prompt") {
        Some(_) => (field("prompt")?, chosen, rejected),
        None => split_shared_prompt(chosen, rejected)?,
    };
    let (prompt_text, chosen_text) = t.render_split(&prompt, &chosen)?;
    let (_, rejected_text) = t.render_split(&prompt, &rejected)?;
    Ok((prompt_text, chosen_text, rejected_text))
}

/// A prompt's messages and those of its chosen and rejected answers.
type PromptAndAnswers = (Vec<Message>, Vec<Message>, Vec<Message>);

/// TRL's implicit prompt: the messages `chosen` and `rejected` start with in common.
fn split_shared_prompt(
    mut chosen: Vec<Message>,
    mut rejected: Vec<Message>,
) -> std::result::Result<PromptAndAnswers, String> {
    let shared = chosen.iter().zip(&rejected).take_while(|(a, b)| a == b).count();
    if shared == 0 {
        return Err("`chosen` and `rejected` share no leading message, so there is no prompt; \
                    give a `prompt` field"
            .into());
    }
    if shared == chosen.len() || shared == rejected.len() {
        return Err("`chosen` or `rejected` has nothing after the prompt they share".into());
    }
    // split_off leaves the shared prompt in `chosen`.
    let (chosen_rest, rejected_rest) = (chosen.split_off(shared), rejected.split_off(shared));
    Ok((chosen, chosen_rest, rejected_rest))
}

/// Cuts a pair to seq_len as the header says; true when anything was cut.
fn truncate_pair(
    prompt: &mut Vec<u32>,
    chosen: &mut Vec<u32>,
    rejected: &mut Vec<u32>,
    seq_len: usize,
    bos: Option<u32>,
) -> bool {
    let longest = chosen.len().max(rejected.len());
    if prompt.len() + longest <= seq_len {
        return false;
    }
    let keep = prompt.len().min(seq_len.saturating_sub(longest).max(seq_len / 2));
    if keep < prompt.len() {
        let from = prompt.len() - keep;
        let lead = match (bos, prompt.first()) {
            (Some(b), Some(&first)) if first == b && keep >= 2 => vec![b],
            _ => Vec::new(),
        };
        let tail = &prompt[from + lead.len()..];
        *prompt = lead.iter().chain(tail).copied().collect();
    }
    chosen.truncate(seq_len - prompt.len());
    rejected.truncate(seq_len - prompt.len());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_the_prompt_end_and_its_bos() {
        // Short prompt, long completions: the prompt stays whole.
        let (mut p, mut c, mut r) = (vec![1, 5, 6], vec![7; 10], vec![8; 4]);
        assert!(truncate_pair(&mut p, &mut c, &mut r, 8, Some(1)));
        assert_eq!((p.len(), c.len(), r.len()), (3, 5, 4));
        // Long prompt: it keeps BOS and its last tokens, half the row at least.
        let (mut p, mut c, mut r) = ((1..=10).collect::<Vec<u32>>(), vec![20; 6], vec![21; 2]);
        assert!(truncate_pair(&mut p, &mut c, &mut r, 8, Some(1)));
        assert_eq!(p, vec![1, 8, 9, 10]);
        assert_eq!((c.len(), r.len()), (4, 2));
        // Fits: untouched.
        let (mut p, mut c, mut r) = (vec![1, 2], vec![3], vec![4, 5]);
        assert!(!truncate_pair(&mut p, &mut c, &mut r, 4, Some(1)));
    }
}

//! Instruction-tuning data (`--format`):
//!   alpaca              {instruction, input?, output}: Stanford Alpaca's prompt, then the output
//!   openorca            {system_prompt?, question, response}: the same Alpaca format with the
//!                       system prompt in place of the preamble (one QA format for the mix)
//!   prompt-completion   {prompt, completion}: the two texts back to back (TRL)
//!   messages            {messages: [{role, content}]}: the model's chat template (template.rs)
//! Loss counts only on response tokens and the EOS that closes each response (-100 elsewhere).
//!
//! A prompt and its response are encoded together, as the model will see them, and the
//! response starts where the prompt's own encoding stops matching (TRL's rule; a token merged
//! across the seam counts as response). The sequence starts with exactly one BOS (none added
//! when the template writes it) and each response ends with exactly one EOS (the template's
//! EOS text, if it writes one, is replaced by ours), so the trainer never sees BOS BOS or EOS EOS.
//!
//! An example longer than seq_len loses the end of its response (counted in `truncated`); one
//! left with nothing to score is not used (`dropped`). With packing, examples are packed
//! best-fit-decreasing (TRL's BFD) into rows of seq_len, each a document of its own (positions
//! from 0, attention inside it); without, one example per row in file order.

use crate::data::jsonl::{str_field, Record};
use crate::data::records::{check_seq_len, check_vocab, optional_text_field, read_records, DataStats};
use crate::data::rows::LmRow;
use crate::data::template::{alpaca_prompt, parse_messages, system_prompt, ChatTemplate, Message, Specials};
use crate::error::{Result, TrainError};
use solar_model::tokenizer::Tokenizer;
use solar_model::LlamaConfig;
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::path::Path;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SftFormat {
    Alpaca,
    OpenOrca,
    PromptCompletion,
    Messages,
}

impl SftFormat {
    pub const NAMES: [&'static str; 4] = ["alpaca", "openorca", "prompt-completion", "messages"];

    pub fn name(self) -> &'static str {
        match self {
            SftFormat::Alpaca => "alpaca",
            SftFormat::OpenOrca => "openorca",
            SftFormat::PromptCompletion => "prompt-completion",
            SftFormat::Messages => "messages",
        }
    }
}

impl FromStr for SftFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<SftFormat, String> {
        match s {
            "alpaca" => Ok(SftFormat::Alpaca),
            "openorca" => Ok(SftFormat::OpenOrca),
            "prompt-completion" => Ok(SftFormat::PromptCompletion),
            "messages" => Ok(SftFormat::Messages),
            _ => Err(format!("unknown SFT format `{s}` (expected one of: {})", SftFormat::NAMES.join(", "))),
        }
    }
}

/// Text the model reads (`context`) followed by text it learns to write (`response`).
struct Turn {
    context: String,
    response: String,
}

/// SFT rows of a data file, and what the file became.
#[allow(clippy::too_many_arguments)]
pub fn load_sft(
    path: &Path,
    format: SftFormat,
    tokenizer: &Tokenizer,
    model_dir: &Path,
    cfg: &LlamaConfig,
    seq_len: usize,
    packing: bool,
    skip_bad_lines: bool,
) -> Result<(Vec<LmRow>, DataStats)> {
    check_seq_len(seq_len)?;
    let specials = Specials::load(tokenizer, model_dir, cfg)?;
    let template = match format {
        SftFormat::Messages => Some(ChatTemplate::load(model_dir, &specials)?),
        _ => None,
    };
    let mut stats = DataStats::default();
    let examples = read_records(path, skip_bad_lines, &mut stats, |r| {
        // Only the messages format has a template.
        let turns = match &template {
            Some(t) => {
                let v =
                    r.fields.get("messages").ok_or_else(|| line_err(path, r, "missing field `messages`"))?;
                let messages = parse_messages("messages", v).map_err(|e| line_err(path, r, e))?;
                conversation_turns(t, &specials, &messages).map_err(|e| line_err(path, r, e))?
            }
            None => vec![text_turn(path, r, format, &specials)?],
        };
        let (ids, scored) = encode_turns(tokenizer, &specials, &turns)?;
        check_vocab(path, r.line, &ids, cfg.vocab_size)?;
        // Each turn scores its closing EOS; an example scoring nothing else answers nothing.
        let answered = scored.iter().filter(|&&s| s).count() > turns.len();
        Ok(Some((ids, scored, answered)))
    })?;
    if !examples.iter().any(|e| e.2) {
        return Err(TrainError::file(
            path,
            format!(
                "nothing to train on: every response of the {} examples is empty (SFT learns only from responses)",
                examples.len()
            ),
        ));
    }
    let mut kept = Vec::with_capacity(examples.len());
    for (mut ids, mut scored, _) in examples {
        if ids.len() > seq_len {
            ids.truncate(seq_len);
            scored.truncate(seq_len);
            stats.truncated += 1;
        }
        let row = LmRow::single(ids, |t| scored[t]);
        if row.scored() == 0 {
            stats.dropped += 1;
            continue;
        }
        kept.push(row);
    }
    if kept.is_empty() {
        return Err(TrainError::file(
            path,
            format!("no examples left: every response starts beyond seq_len {seq_len}"),
        ));
    }
    let rows = if packing { pack_best_fit(kept, seq_len) } else { kept };
    stats.rows = rows.len();
    stats.count_rows(&rows);
    Ok((rows, stats))
}

fn line_err(path: &Path, r: &Record, msg: impl Into<String>) -> TrainError {
    TrainError::line(path, r.line, msg)
}

/// The one turn of a text format.
fn text_turn(path: &Path, r: &Record, format: SftFormat, specials: &Specials) -> Result<Turn> {
    let (context, response) = match format {
        SftFormat::Alpaca => (
            alpaca_prompt(str_field(path, r, "instruction")?, optional_text_field(path, r, "input")?),
            str_field(path, r, "output")?,
        ),
        SftFormat::OpenOrca => (
            system_prompt(optional_text_field(path, r, "system_prompt")?, str_field(path, r, "question")?),
            str_field(path, r, "response")?,
        ),
        _ => (str_field(path, r, "prompt")?.to_string(), str_field(path, r, "completion")?),
    };
    Ok(Turn { context, response: specials.split_eos(response).0.to_string() })
}

/// A conversation as turns: for each assistant message, the template's text before it (with
/// the generation prompt) and the message's own text. Text the template writes after an EOS
/// (ChatML's newline, say) joins the next turn's context.
fn conversation_turns(
    t: &ChatTemplate,
    specials: &Specials,
    messages: &[Message],
) -> std::result::Result<Vec<Turn>, String> {
    let mut turns = Vec::new();
    let mut done = String::new();
    for k in (0..messages.len()).filter(|&k| messages[k].role == "assistant") {
        let (prompt, answer) = t.render_split(&messages[..k], &messages[k..=k])?;
        let Some(context) = prompt.strip_prefix(done.as_str()) else {
            return Err(format!(
                "chat template ({}): the text up to message {k} does not extend the text before it",
                t.origin
            ));
        };
        let (body, after) = specials.split_eos(&answer);
        turns.push(Turn { context: context.to_string(), response: body.to_string() });
        done = format!("{prompt}{}", &answer[..answer.len() - after.len()]);
    }
    if turns.is_empty() {
        return Err("field `messages` has no assistant message: nothing to learn".into());
    }
    Ok(turns)
}

/// Token ids of the turns back to back, each response closed by EOS, and which are scored.
fn encode_turns(tok: &Tokenizer, specials: &Specials, turns: &[Turn]) -> Result<(Vec<u32>, Vec<bool>)> {
    let (mut ids, mut scored) = (Vec::new(), Vec::new());
    for (i, turn) in turns.iter().enumerate() {
        // Only the first turn starts the sequence; later ones follow an EOS we placed.
        let encode = |text: &str| -> Result<Vec<u32>> {
            if i == 0 {
                specials.encode_start(tok, text)
            } else {
                Ok(tok.encode(text, false)?)
            }
        };
        let context = encode(&turn.context)?;
        let whole = encode(&format!("{}{}", turn.context, turn.response))?;
        let n = context.iter().zip(&whole).take_while(|(a, b)| a == b).count();
        scored.extend((0..whole.len()).map(|j| j >= n));
        ids.extend(whole);
        ids.push(specials.eos);
        scored.push(true);
    }
    Ok((ids, scored))
}

/// Best-fit-decreasing packing (deterministic): longest examples first (ties in file order),
/// each into the row with the least room that still holds it (ties: the oldest row), else
/// into a new row. Every example must be at most seq_len long.
pub fn pack_best_fit(examples: Vec<LmRow>, seq_len: usize) -> Vec<LmRow> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| Reverse(examples[i].len()));
    let mut examples: Vec<Option<LmRow>> = examples.into_iter().map(Some).collect();
    let mut rows: Vec<LmRow> = Vec::new();
    // (room left, row index): the first entry with room >= n is the best fit.
    let mut room: BTreeSet<(usize, usize)> = BTreeSet::new();
    for i in order {
        let Some(ex) = examples[i].take() else { continue };
        let n = ex.len();
        let (left, row) = match room.range((n, 0)..).next().copied() {
            Some((left, row)) => {
                room.remove(&(left, row));
                rows[row].append_document(&ex);
                (left - n, row)
            }
            None => {
                rows.push(ex);
                (seq_len.saturating_sub(n), rows.len() - 1)
            }
        };
        if left > 0 {
            room.insert((left, row));
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(n: usize, tag: u32) -> LmRow {
        LmRow::single(vec![tag; n], |_| true)
    }

    #[test]
    fn best_fit_decreasing_fills_the_tightest_row() {
        // Lengths 5, 3, 4, 2, 1 into rows of 6: 5 -> A; 4 -> B; 3 -> C; 2 fits B exactly
        // (room 2); 1 fits A exactly (room 1).
        let rows = pack_best_fit(vec![doc(5, 10), doc(3, 11), doc(4, 12), doc(2, 13), doc(1, 14)], 6);
        let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.ids.clone()).collect();
        assert_eq!(ids, vec![vec![10, 10, 10, 10, 10, 14], vec![12, 12, 12, 12, 13, 13], vec![11, 11, 11]]);
        assert_eq!(rows[1].positions, vec![0, 1, 2, 3, 0, 1]);
        assert_eq!(rows[1].doc_ids, vec![0, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn formats_parse_and_name_themselves() {
        for name in SftFormat::NAMES {
            assert_eq!(name.parse::<SftFormat>().unwrap().name(), name);
        }
        assert!("sharegpt".parse::<SftFormat>().unwrap_err().contains("alpaca"));
    }
}

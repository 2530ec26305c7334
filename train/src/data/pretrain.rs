//! Pretraining data: JSONL lines of `{"text": ...}` (encoded with the tokenizer's special
//! tokens, so its post-processor adds BOS as the model expects, and closed with EOS so the
//! model learns where documents end) or `{"input_ids": [...]}` (used exactly as given), or a
//! plain .txt file (one document per non-blank line, as eval reads it).
//!
//! Documents are packed greedily in file order into rows of at most seq_len tokens: a document
//! that does not fit in the current row starts the next one, so documents are never cut at a
//! row boundary. Positions restart at 0 per document and attention stays inside it (the
//! engine's document mask); the last token of each document predicts nothing, so a
//! document's loss is the same packed or alone. A document longer than seq_len is split into
//! consecutive pieces of seq_len tokens, each a document of its own (counted in `split`).

use crate::data::jsonl::{ids_field, str_field};
use crate::data::records::{check_seq_len, check_vocab, read_lines, read_records, DataStats};
use crate::data::rows::LmRow;
use crate::error::{Result, TrainError};
use solar_model::tokenizer::Tokenizer;
use solar_model::LlamaConfig;
use std::path::Path;

/// Packed rows of a pretraining file, and what the file became.
pub fn load_pretrain(
    path: &Path,
    tokenizer: Option<&Tokenizer>,
    cfg: &LlamaConfig,
    seq_len: usize,
    skip_bad_lines: bool,
) -> Result<(Vec<LmRow>, DataStats)> {
    check_seq_len(seq_len)?;
    let mut stats = DataStats::default();
    // Tokenising happens on the CPU whatever the device; unknown memory means no check.
    let avail = crate::trainer::memory::available(solar_engine::Device::Cpu, |_| None);
    // Blank text is a gap in the corpus, not a document: BOS + EOS alone would teach nothing.
    let encode_text = |line: usize, text: &str| -> Result<Option<Vec<u32>>> {
        if text.trim().is_empty() {
            return Ok(None);
        }
        let tok = tokenizer.ok_or_else(|| {
            TrainError::file(path, "text needs a tokenizer, but the model folder has no tokenizer.json")
        })?;
        let eos = cfg.eos_token_ids.first().copied().ok_or_else(|| {
            TrainError::file(path, "the model has no eos_token_id to close text documents with")
        })?;
        let need = tok.encode_memory(text);
        if let Some(avail) = avail.filter(|&a| need > a) {
            let gib = crate::trainer::memory::gib;
            return Err(TrainError::line(
                path,
                line,
                format!(
                    "a text of {} that this tokenizer encodes in one piece needs about {} to tokenise, \
                     more than the {} available: split it into shorter documents",
                    gib(text.len() as u64),
                    gib(need),
                    gib(avail)
                ),
            ));
        }
        let mut ids = tok.encode(text, true)?;
        // A post-processor that closes texts with EOS already did our job.
        if ids.last() != Some(&eos) {
            ids.push(eos);
        }
        check_vocab(path, line, &ids, cfg.vocab_size)?;
        Ok(Some(ids))
    };
    let docs = if path.extension().is_some_and(|e| e == "txt") {
        read_lines(path, skip_bad_lines, &mut stats, encode_text)?
    } else {
        read_records(path, skip_bad_lines, &mut stats, |r| {
            if r.fields.contains_key("input_ids") {
                let ids = ids_field(path, r, "input_ids", cfg.vocab_size)?;
                Ok((!ids.is_empty()).then_some(ids))
            } else if r.fields.contains_key("text") {
                encode_text(r.line, str_field(path, r, "text")?)
            } else {
                Err(TrainError::line(path, r.line, "missing field `text` (or `input_ids`)"))
            }
        })?
    };
    let rows = pack_in_order(&docs, seq_len, &mut stats);
    stats.rows = rows.len();
    stats.count_rows(&rows);
    if stats.scored_tokens == 0 {
        return Err(TrainError::file(
            path,
            format!(
                "nothing to train on: every one of the {} documents is shorter than 2 tokens, so no token has a next one to predict",
                docs.len()
            ),
        ));
    }
    Ok((rows, stats))
}

/// Greedy packing in file order (deterministic): each document goes into the current row if
/// it fits, else starts a new row. Documents over seq_len are split first.
pub fn pack_in_order(docs: &[Vec<u32>], seq_len: usize, stats: &mut DataStats) -> Vec<LmRow> {
    let mut rows = Vec::new();
    let mut current: Option<LmRow> = None;
    for doc in docs {
        if doc.len() > seq_len {
            stats.split += 1;
        }
        for piece in doc.chunks(seq_len) {
            let piece = LmRow::single(piece.to_vec(), |_| true);
            match current.as_mut() {
                Some(row) if row.len() + piece.len() <= seq_len => row.append_document(&piece),
                _ => rows.extend(current.replace(piece)),
            }
        }
    }
    rows.extend(current);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_documents_whole_and_splits_long_ones() {
        let docs = vec![vec![1, 5, 6], vec![1, 7], vec![1, 8, 9, 10, 11, 12], vec![1, 13]];
        let mut stats = DataStats::default();
        let rows = pack_in_order(&docs, 4, &mut stats);
        let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.ids.clone()).collect();
        assert_eq!(ids, vec![vec![1, 5, 6], vec![1, 7], vec![1, 8, 9, 10], vec![11, 12, 1, 13]]);
        assert_eq!(rows[3].positions, vec![0, 1, 0, 1]);
        assert_eq!(rows[3].doc_ids, vec![0, 0, 1, 1]);
        assert_eq!(rows[3].labels, vec![12, -100, 13, -100]);
        assert_eq!(stats.split, 1);
    }
}

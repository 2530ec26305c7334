//! Language-model text: JSONL lines of `{"text": ...}` (encoded with the tokenizer's special
//! tokens, so its post-processor adds BOS as the model expects) or `{"input_ids": [...]}` (used
//! exactly as given), and plain .txt files (one document per non-blank line).

use crate::data::jsonl::{ids_field, read_jsonl, str_field};
use crate::error::{Result, TrainError};
use solar_model::tokenizer::Tokenizer;
use std::path::Path;

/// Token sequences of a data file, one per document, in file order.
pub fn read_token_sequences(
    path: &Path,
    tokenizer: Option<&Tokenizer>,
    vocab: usize,
) -> Result<Vec<Vec<u32>>> {
    let need_tok = || {
        tokenizer.ok_or_else(|| {
            TrainError::file(path, "text needs a tokenizer, but the model folder has no tokenizer.json")
        })
    };
    if path.extension().is_some_and(|e| e == "txt") {
        let text =
            std::fs::read_to_string(path).map_err(|e| TrainError::file(path, format!("cannot read: {e}")))?;
        let docs: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if docs.is_empty() {
            return Err(TrainError::file(path, "no examples: the file is empty"));
        }
        let tok = need_tok()?;
        return docs.iter().map(|d| Ok(tok.encode(d, true)?)).collect();
    }
    let mut out = Vec::new();
    for r in read_jsonl(path)? {
        let ids = if r.fields.contains_key("input_ids") {
            ids_field(path, &r, "input_ids", vocab)?
        } else if r.fields.contains_key("text") {
            let text = str_field(path, &r, "text")?;
            need_tok()?.encode(text, true)?
        } else {
            return Err(TrainError::line(path, r.line, "expected a `text` or an `input_ids` field"));
        };
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(TrainError::line(
                path,
                r.line,
                format!("token id {bad} is outside the vocabulary of {vocab}"),
            ));
        }
        out.push(ids);
    }
    Ok(out)
}

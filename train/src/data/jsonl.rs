//! JSONL reading. Each non-blank line must be a JSON object; anything else is an error naming
//! FILE:LINE (1-based). Blank lines are skipped, as jq and HF datasets do. An empty file is an
//! error: a run on no data is a mistake, not a no-op.

use crate::error::{Result, TrainError};
use serde_json::{Map, Value};
use std::path::Path;

/// One JSON object with the 1-based line it came from.
pub struct Record {
    pub line: usize,
    pub fields: Map<String, Value>,
}

/// One JSONL line as a Record: a JSON object, or an error naming FILE:LINE.
pub fn parse_record(path: &Path, line: usize, text: &str) -> Result<Record> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => Ok(Record { line, fields }),
        Ok(other) => {
            let kind = match other {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                _ => "not an object",
            };
            Err(TrainError::line(path, line, format!("expected a JSON object, got {kind}")))
        }
        Err(e) => Err(TrainError::line(path, line, format!("not valid JSON: {e}"))),
    }
}

/// Every record of a JSONL file, lines bounded as the loaders' are (records::MAX_LINE_BYTES).
pub fn read_jsonl(path: &Path) -> Result<Vec<Record>> {
    let mut stats = crate::data::records::DataStats::default();
    crate::data::records::read_lines(path, false, &mut stats, |line, text| {
        parse_record(path, line, text).map(Some)
    })
}

/// A string field of a record, or an error naming FILE:LINE and the field.
pub fn str_field<'a>(path: &Path, r: &'a Record, field: &str) -> Result<&'a str> {
    match r.fields.get(field) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => {
            Err(TrainError::line(path, r.line, format!("field `{field}` must be a string, got {other}")))
        }
        None => Err(TrainError::line(path, r.line, format!("missing field `{field}`"))),
    }
}

/// A list of token ids, each within `vocab`.
pub fn ids_field(path: &Path, r: &Record, field: &str, vocab: usize) -> Result<Vec<u32>> {
    let bad = |msg: String| TrainError::line(path, r.line, format!("field `{field}`: {msg}"));
    let Some(Value::Array(items)) = r.fields.get(field) else {
        return Err(bad("expected a list of token ids".into()));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_u64() {
            Some(id) if (id as usize) < vocab => Ok(id as u32),
            Some(id) => Err(bad(format!("id {id} at position {i} is outside the vocabulary of {vocab}"))),
            None => Err(bad(format!("position {i} is {v}, not a token id"))),
        })
        .collect()
}

//! What the pretrain, SFT and DPO loaders share: reading a data file line by line, where a bad
//! line (not JSON, a missing or mistyped field, text the template rejects) is an error naming
//! FILE:LINE or, with skip_bad_lines, skipped and counted; the statistics every loader reports,
//! so a run can say what its data became; and the checks on token sequences.

use crate::data::jsonl::{parse_record, str_field, Record};
use crate::data::rows::LmRow;
use crate::error::{Result, TrainError};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;

/// What a data file became.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataStats {
    /// Examples (documents, conversations, pairs) read.
    pub examples: usize,
    /// Bad lines skipped (skip_bad_lines).
    pub skipped_lines: usize,
    /// Examples longer than seq_len that were cut.
    pub truncated: usize,
    /// Pretraining documents longer than seq_len, split into pieces that are documents of their own.
    pub split: usize,
    /// Examples left with nothing to score after truncation, and so not used.
    pub dropped: usize,
    /// Training rows (packed rows, or pairs for DPO).
    pub rows: usize,
    /// Tokens in those rows (no padding).
    pub tokens: usize,
    /// Tokens whose loss counts.
    pub scored_tokens: usize,
}

impl DataStats {
    pub fn count_rows<'a>(&mut self, rows: impl IntoIterator<Item = &'a LmRow>) {
        for r in rows {
            self.tokens += r.len();
            self.scored_tokens += r.scored();
        }
    }
}

/// Calls `make(line_no, text)` for every non-blank line of `path`. `make` returns the line's
/// example, or None for a line that is deliberately empty. A bad line (a `TrainError::Line`,
/// or a tokenizer or engine error while making it) stops the read, or is skipped and counted
/// with `skip_bad_lines`; other errors (a missing tokenizer, say) always stop it.
pub fn read_lines<T>(
    path: &Path,
    skip_bad_lines: bool,
    stats: &mut DataStats,
    make: impl FnMut(usize, &str) -> Result<Option<T>>,
) -> Result<Vec<T>> {
    read_lines_within(path, MAX_LINE_BYTES, skip_bad_lines, stats, make)
}

/// The longest data line read: a line is held whole while it is parsed, so without a bound
/// one corrupt or hostile file (no newlines, say) could take all memory.
pub const MAX_LINE_BYTES: usize = 64 << 20;

/// `read_lines` with the line bound a parameter. A longer line is a bad line naming
/// FILE:LINE, skippable like any other; its bytes are read past, never held.
pub fn read_lines_within<T>(
    path: &Path,
    max_line: usize,
    skip_bad_lines: bool,
    stats: &mut DataStats,
    mut make: impl FnMut(usize, &str) -> Result<Option<T>>,
) -> Result<Vec<T>> {
    let file = std::fs::File::open(path).map_err(|e| TrainError::file(path, format!("cannot open: {e}")))?;
    let mut reader = BufReader::new(file);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let (mut line_no, mut non_blank) = (0, 0);
    loop {
        // A signal stops the read between lines (a long line's pieces poll it too), so an
        // interrupted run never gets as far as creating OUT.
        solar_model::output::interrupt::check()?;
        buf.clear();
        let (n, whole) = read_line_bounded(&mut reader, &mut buf, max_line)
            .map_err(|e| TrainError::file(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if !whole {
            non_blank += 1;
            let msg = format!("line of {n} bytes is over the {} MiB limit for one example", max_line >> 20);
            if !skip_bad_lines {
                return Err(TrainError::line(path, line_no, msg));
            }
            stats.skipped_lines += 1;
            continue;
        }
        let made = match std::str::from_utf8(&buf) {
            Err(e) => Err(TrainError::line(path, line_no, format!("not valid UTF-8: {e}"))),
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => {
                non_blank += 1;
                make(line_no, text.trim_end_matches(['\n', '\r']))
            }
        };
        match made {
            Ok(Some(example)) => out.push(example),
            Ok(None) => {}
            Err(e) => {
                // Stopped by a signal while making the example: not a bad line to skip.
                solar_model::output::interrupt::check()?;
                let e = match e {
                    TrainError::Model(_) | TrainError::Engine(_) => {
                        TrainError::line(path, line_no, e.to_string())
                    }
                    e => e,
                };
                if !(skip_bad_lines && matches!(e, TrainError::Line { .. })) {
                    return Err(e);
                }
                stats.skipped_lines += 1;
            }
        }
    }
    stats.examples += out.len();
    if out.is_empty() {
        let why = match (non_blank, stats.skipped_lines) {
            (0, _) => "no examples: the file is empty".to_string(),
            (_, 0) => "no examples: every line is empty".to_string(),
            (_, n) => format!("no examples: {n} bad lines skipped, nothing else"),
        };
        return Err(TrainError::file(path, why));
    }
    Ok(out)
}

/// Reads one line (newline included) into `buf`, keeping at most `max` bytes of it: returns
/// the line's full length (0 at the end of the file) and whether it was kept whole.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut n = 0;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok((n, n <= max));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if n + take <= max {
            buf.extend_from_slice(&chunk[..take]);
        } else {
            buf.clear();
        }
        n += take;
        reader.consume(take);
        if done {
            return Ok((n, n <= max));
        }
    }
}

/// Like `read_lines` for JSONL: each line must be a JSON object, handed to `make` as a Record.
pub fn read_records<T>(
    path: &Path,
    skip_bad_lines: bool,
    stats: &mut DataStats,
    mut make: impl FnMut(&Record) -> Result<Option<T>>,
) -> Result<Vec<T>> {
    read_lines(path, skip_bad_lines, stats, |line, text| make(&parse_record(path, line, text)?))
}

/// An error unless every id is inside the model's vocabulary.
pub fn check_vocab(path: &Path, line: usize, ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(bad) => {
            Err(TrainError::line(path, line, format!("token id {bad} is outside the vocabulary of {vocab}")))
        }
        None => Ok(()),
    }
}

/// A row needs two tokens for one prediction; less is a usage error, not data.
pub fn check_seq_len(seq_len: usize) -> Result<()> {
    if seq_len < 2 {
        return Err(TrainError::Msg(format!("seq_len must be at least 2, got {seq_len}")));
    }
    Ok(())
}

/// A string field that may be absent or null (Alpaca's `input`, OpenOrca's `system_prompt`).
pub fn optional_text_field<'a>(path: &Path, r: &'a Record, field: &str) -> Result<&'a str> {
    match r.fields.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(_) => str_field(path, r, field),
    }
}

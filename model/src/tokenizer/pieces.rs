//! Long texts tokenised in pieces, so a reader holds memory proportional to the ids it keeps
//! rather than to the tokenizer's per-byte bookkeeping (a whole-text `encode` builds offsets,
//! alignments and a String per token: about 200 bytes per input byte).
//!
//! Pieces give exactly the whole text's ids only where the pipeline cannot see across a cut, so
//! they are used for one shape of tokenizer, the one our presets and GPT-2-style models have: no
//! normalizer, a ByteLevel pre-tokenizer with its GPT-2 regex and no prefix space, a BPE model
//! without dropout, no truncation or padding, and added tokens without whitespace or stripping.
//! The cut is at a single ASCII space between two non-whitespace characters: no alternative of
//! the regex ('s|'t|...| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+) carries a
//! non-whitespace character over a following space, its only lookahead is at the end of a
//! whitespace run (never at the cut), and " Y" with Y not whitespace starts the same match
//! whatever came before; an added token (no whitespace) never spans the cut. Every other
//! tokenizer encodes whole. The special tokens the post-processor puts around a text are read
//! off two probes and must agree, else the tokenizer encodes whole too.

use tokenizers::{ModelWrapper, PreTokenizerWrapper};

/// A piece ends at the first cut after this many bytes.
pub const PIECE_BYTES: usize = 64 << 10;

/// The ids a tokenizer puts before and after a text's own (with special tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct Framing {
    pub prefix: Vec<u32>,
    pub suffix: Vec<u32>,
}

/// The framing, when texts may be cut into pieces for this tokenizer (see the file header).
pub fn framing(t: &tokenizers::Tokenizer) -> Option<Framing> {
    let byte_level = matches!(t.get_pre_tokenizer(),
        Some(PreTokenizerWrapper::ByteLevel(b)) if !b.add_prefix_space && b.use_regex);
    let bpe = matches!(t.get_model(), ModelWrapper::BPE(b) if b.dropout.is_none());
    let added_ok = t.get_added_tokens_decoder().values().all(|a| {
        !a.content.is_empty() && !a.content.chars().any(char::is_whitespace) && !a.lstrip && !a.rstrip
    });
    let plain = t.get_normalizer().is_none() && t.get_truncation().is_none() && t.get_padding().is_none();
    if !(byte_level && bpe && added_ok && plain) {
        return None;
    }
    let probe = |text: &str| -> Option<Framing> {
        let bare = t.encode(text, false).ok()?.get_ids().to_vec();
        let framed = t.encode(text, true).ok()?.get_ids().to_vec();
        let at =
            (0..=framed.len().checked_sub(bare.len())?).find(|&k| framed[k..k + bare.len()] == bare[..])?;
        Some(Framing { prefix: framed[..at].to_vec(), suffix: framed[at + bare.len()..].to_vec() })
    };
    let (a, b) = (probe("a")?, probe("Piece two, 42!")?);
    (a == b).then_some(a)
}

/// Whether `text` may be cut just before byte `i` (see the file header).
fn is_cut(text: &str, i: usize) -> bool {
    text.as_bytes()[i] == b' '
        && text[..i].chars().next_back().is_some_and(|c| !c.is_whitespace())
        && text[i + 1..].chars().next().is_some_and(|c| !c.is_whitespace())
}

/// `text` as consecutive pieces of at least `min` bytes (the last may be shorter), each ending
/// just before a cut; a text with no cut after `min` bytes is one piece.
pub fn pieces(text: &str, min: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = (min.max(1)..rest.len()).find(|&i| is_cut(rest, i)).unwrap_or(rest.len());
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

//! The tokenizer: HF tokenizer.json through the `tokenizers` crate (pure Rust: fancy-regex, no
//! C regex library). Encoding with special tokens lets the tokenizer's own post-processor decide
//! on BOS/EOS, as transformers does; without them the text's tokens come back alone.
//! `byte_level_json` writes the tokenizer presets use: every byte a token, no merges.
//! Long texts are encoded in pieces where that gives the same ids (pieces.rs), so tokenising a
//! long line costs memory for its ids, not the tokenizer's bookkeeping per byte.

mod pieces;

use crate::error::{ModelError, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// Some: long texts may be encoded in pieces (pieces.rs).
    framing: Option<pieces::Framing>,
}

/// Bytes of memory per input byte the `tokenizers` crate takes to encode a text in one call
/// (offsets, alignments, a String per token), rounded up from what a 19 MB line took: 240
/// with the byte-level preset, 134 with the HF BPE fixture.
pub const WHOLE_TEXT_BYTES_PER_BYTE: u64 = 256;

/// Special tokens of the byte-level preset tokenizer; bytes follow from id 3.
pub const BYTE_LEVEL_SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::file(path, format!("cannot load tokenizer: {e}")))?;
        let framing = pieces::framing(&inner);
        Ok(Tokenizer { inner, path: path.to_path_buf(), framing })
    }

    /// tokenizer.json of an HF model folder.
    pub fn from_model_dir(dir: &Path) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::file(&path, "missing: the model folder has no tokenizer.json"));
        }
        Self::from_file(&path)
    }

    /// tokenizer.json of an HF model folder if it has one (data given as token ids needs none).
    pub fn from_model_dir_if_present(dir: &Path) -> Result<Option<Tokenizer>> {
        if dir.join("tokenizer.json").exists() {
            Self::from_model_dir(dir).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Token ids of `text`; with `add_special_tokens` the post-processor adds BOS/EOS as configured.
    /// A long text is encoded in pieces where that is exact (pieces.rs), polling for SIGINT and
    /// SIGTERM between them.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.encode_in_pieces(text, add_special_tokens, pieces::PIECE_BYTES)
    }

    /// Memory `encode(text)` takes besides the ids it returns: the bookkeeping of the longest
    /// part encoded at once (the whole text where pieces are not exact for this tokenizer, or
    /// where the text has no cut), at WHOLE_TEXT_BYTES_PER_BYTE. Readers check it before
    /// encoding, so a text that cannot be tokenised in the memory there is is refused instead
    /// of meeting the OOM killer.
    pub fn encode_memory(&self, text: &str) -> u64 {
        let longest = match &self.framing {
            Some(_) if text.len() > pieces::PIECE_BYTES => {
                pieces::pieces(text, pieces::PIECE_BYTES).map(str::len).max().unwrap_or(0)
            }
            _ => text.len(),
        };
        (longest as u64).saturating_mul(WHOLE_TEXT_BYTES_PER_BYTE)
    }

    fn encode_whole(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| ModelError::file(&self.path, format!("cannot encode text: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn encode_in_pieces(&self, text: &str, add_special_tokens: bool, piece: usize) -> Result<Vec<u32>> {
        let Some(framing) = self.framing.as_ref().filter(|_| text.len() > piece) else {
            return self.encode_whole(text, add_special_tokens);
        };
        let mut ids = Vec::new();
        if add_special_tokens {
            ids.extend_from_slice(&framing.prefix);
        }
        for p in pieces::pieces(text, piece) {
            crate::output::interrupt::check()?;
            ids.extend(self.encode_whole(p, false)?);
        }
        if add_special_tokens {
            ids.extend_from_slice(&framing.suffix);
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| ModelError::file(&self.path, format!("cannot decode ids: {e}")))
    }

    /// The id of a token string (e.g. "</s>"), if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// GPT-2's printable stand-in character for each byte (what ByteLevel pre-tokenization uses).
fn byte_to_char(b: u8) -> char {
    let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable {
        return b as char;
    }
    // The others map, in byte order, to 256, 257, ...
    let rank = (0..b)
        .filter(|&x| {
            !((b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || (0xAE..=0xFF).contains(&x))
        })
        .count();
    char::from_u32(256 + rank as u32).expect("valid code point")
}

/// tokenizer.json of a byte-level tokenizer: <unk>=0, <s>=1 (added before every text with
/// special tokens), </s>=2, then one token per byte (ids 3..259), no merges.
pub fn byte_level_json() -> Value {
    let mut vocab = serde_json::Map::new();
    for (i, s) in BYTE_LEVEL_SPECIALS.iter().enumerate() {
        vocab.insert(s.to_string(), json!(i));
    }
    for b in 0..=255u8 {
        vocab.insert(byte_to_char(b).to_string(), json!(3 + b as usize));
    }
    let added: Vec<Value> = BYTE_LEVEL_SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"id": i, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": []}
    })
}

/// tokenizer_config.json to go with `byte_level_json`.
pub fn byte_level_config_json() -> Value {
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 1_000_000,
        "clean_up_tokenization_spaces": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random text from fragments chosen to meet every alternative of the ByteLevel regex and
    /// every kind of whitespace next to a cut (xorshift: no dependency, same texts every run).
    fn random_text(state: &mut u64, fragments: usize) -> String {
        // Words the HF fixture's merges join (" the", "quick", "ation"), so a bad cut changes ids.
        const PARTS: [&str; 30] = [
            "a",
            "Zq",
            "hello",
            " world",
            " ",
            "  ",
            "   ",
            "\n",
            "\t",
            " \n ",
            "'s",
            "'ll",
            "'",
            "!?",
            ".",
            "42",
            " 7",
            "é",
            "中文",
            "\u{a0}",
            "\u{3000}",
            "<s>",
            "</s>",
            " <unk>",
            "ab cd",
            "x,y",
            " the",
            "quick",
            "ation",
            " lazy dog",
        ];
        let mut text = String::new();
        for _ in 0..fragments {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            text += PARTS[(*state % PARTS.len() as u64) as usize];
        }
        text
    }

    fn fixtures() -> Vec<Tokenizer> {
        let dir = tempfile::tempdir().unwrap();
        let preset = dir.path().join("tokenizer.json");
        std::fs::write(&preset, byte_level_json().to_string()).unwrap();
        let hf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf/tokenizer/tokenizer.json");
        vec![Tokenizer::from_file(&preset).unwrap(), Tokenizer::from_file(&hf).unwrap()]
    }

    #[test]
    fn pieces_give_exactly_the_whole_texts_ids() {
        for tok in fixtures() {
            assert!(
                tok.framing.is_some(),
                "{}: the fixture tokenizers are byte-level BPE",
                tok.path.display()
            );
            let mut state = 0x9E37_79B9_7F4A_7C15u64;
            let mut cut_texts = 0;
            for round in 0..400 {
                let text = random_text(&mut state, 1 + round % 300);
                for piece in [1, 3, 16, 200] {
                    cut_texts += usize::from(pieces::pieces(&text, piece).count() > 1);
                    for special in [false, true] {
                        let whole = tok.encode_whole(&text, special).unwrap();
                        let cut = tok.encode_in_pieces(&text, special, piece).unwrap();
                        assert_eq!(cut, whole, "{}: piece {piece}: {text:?}", tok.path.display());
                    }
                }
            }
            assert!(cut_texts > 1000, "only {cut_texts} texts were cut: the test would not notice a bad cut");
        }
    }

    #[test]
    fn encoding_memory_counts_the_longest_part_encoded_at_once() {
        let tok = &fixtures()[0];
        let per = WHOLE_TEXT_BYTES_PER_BYTE;
        let words = "word ".repeat(100_000);
        assert_eq!(tok.encode_memory("short"), 5 * per);
        // Cut into pieces: a piece's worth (the first cut at or after PIECE_BYTES, a word on).
        let piece = tok.encode_memory(&words);
        assert!(piece <= (pieces::PIECE_BYTES as u64 + 5) * per && piece >= pieces::PIECE_BYTES as u64 * per);
        // No cut anywhere: encoded whole.
        let solid = "x".repeat(300_000);
        assert_eq!(tok.encode_memory(&solid), 300_000 * per);
    }

    #[test]
    fn pieces_cover_the_text_and_cut_only_before_a_lone_space() {
        let text = "ab  cd e\u{a0}f g";
        let got: Vec<&str> = pieces::pieces(text, 1).collect();
        assert_eq!(got.concat(), text);
        assert_eq!(got, ["ab  cd", " e\u{a0}f", " g"]);
    }
}

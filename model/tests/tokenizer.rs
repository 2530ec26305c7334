//! The tokenizer against HF: a byte-level BPE tokenizer.json made by the `tokenizers` Python
//! package (scripts/make_fixtures.py) must give the same ids with and without special tokens and
//! decode the same; the preset byte-level tokenizer must round-trip any UTF-8 text.

use solar_model::tokenizer::{byte_level_json, Tokenizer};
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf/tokenizer")
}

#[test]
fn hf_tokenizer_encodes_and_decodes_like_transformers() {
    let tok = Tokenizer::from_model_dir(&fixture()).unwrap();
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap()).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    for r in refs.as_array().unwrap() {
        let text = r["text"].as_str().unwrap();
        assert_eq!(tok.encode(text, true).unwrap(), ids(&r["ids"]), "{text:?} with special tokens");
        assert_eq!(tok.encode(text, false).unwrap(), ids(&r["ids_no_special"]), "{text:?} without");
        assert_eq!(
            tok.decode(&ids(&r["ids"]), true).unwrap(),
            r["decoded"].as_str().unwrap(),
            "{text:?} decoded"
        );
    }
}

#[test]
fn byte_level_preset_round_trips_any_text() {
    let dir = std::env::temp_dir().join(format!("solar-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, serde_json::to_string(&byte_level_json()).unwrap()).unwrap();
    let tok = Tokenizer::from_file(&path).unwrap();
    assert_eq!(tok.vocab_size(), 259);
    for text in ["Hello, world!", "naïve café ☕ 日本語", "  tabs\tand\nnewlines ", "\u{0}\u{7f}\u{ff}", ""]
    {
        let ids = tok.encode(text, true).unwrap();
        assert_eq!(ids.first(), Some(&1), "BOS first for {text:?}");
        assert_eq!(ids.len(), text.len() + 1, "one token per byte for {text:?}");
        assert_eq!(tok.encode(text, false).unwrap(), ids[1..].to_vec());
        assert_eq!(tok.decode(&ids, true).unwrap(), text);
    }
    assert_eq!(tok.encode("A", false).unwrap(), vec![3 + b'A' as u32]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_tokenizer_names_the_file() {
    let e = Tokenizer::from_model_dir(std::path::Path::new("/nonexistent/model")).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/model/tokenizer.json") && e.contains("missing"), "{e}");
}

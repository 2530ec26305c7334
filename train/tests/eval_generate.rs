//! `eval --task generate` on answers known in advance: a tiny random model's own greedy answer
//! (found here with `Llama::generate` on a prompt built by hand) is written as the reference,
//! so it must count; a wrong reference must not; every SFT format builds the prompt the model
//! was trained on; bad lines name FILE:LINE.

use solar_model::checkpoint::WriteOptions;
use solar_model::generate::GenerateOptions;
use solar_model::presets::preset;
use solar_model::tokenizer::{byte_level_config_json, byte_level_json, Tokenizer};
use solar_model::Llama;
use solar_train::data::sft::SftFormat;
use solar_train::data::template::alpaca_prompt;
use solar_train::eval::generate::{eval_generate, load_generate_examples};
use std::path::{Path, PathBuf};

/// A tiny random model saved with the byte-level tokenizer: (folder, model, tokenizer).
fn tiny_model(tmp: &Path, seed: u64) -> (PathBuf, Llama, Tokenizer) {
    let dir = tmp.join("model");
    let model = Llama::init(preset("tiny").unwrap(), seed).unwrap();
    model.save(&dir, &WriteOptions::default(), None).unwrap();
    std::fs::write(dir.join("tokenizer.json"), byte_level_json().to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), byte_level_config_json().to_string()).unwrap();
    let tok = Tokenizer::from_model_dir(&dir).unwrap();
    (dir, model, tok)
}

/// The model's greedy answer to `prompt` (BOS first, as the tokenizer adds it), decoded.
fn greedy(model: &Llama, tok: &Tokenizer, prompt: &str, max_new_tokens: usize) -> String {
    let ids = tok.encode(prompt, true).unwrap();
    let opts = GenerateOptions { max_new_tokens, ..GenerateOptions::default() };
    tok.decode(&model.generate(&ids, &opts).unwrap(), true).unwrap()
}

fn write_lines(path: &Path, lines: &[serde_json::Value]) {
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

#[test]
fn own_greedy_answers_match_and_wrong_ones_do_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, model, tok) = tiny_model(tmp.path(), 3);
    let n = 6;
    let a1 = greedy(&model, &tok, &alpaca_prompt("Name a colour.", ""), n);
    let a2 = greedy(&model, &tok, &alpaca_prompt("Translate.", "chat"), n);
    let data = tmp.path().join("alpaca.jsonl");
    write_lines(
        &data,
        &[
            // Surrounding whitespace does not matter.
            serde_json::json!({"instruction": "Name a colour.", "output": format!("  {a1}\n")}),
            serde_json::json!({"instruction": "Name a colour.", "output": "certainly not this"}),
            serde_json::json!({"instruction": "Translate.", "input": "chat", "output": a2}),
        ],
    );
    let examples = load_generate_examples(&data, SftFormat::Alpaca, &tok, &dir, &model).unwrap();
    assert_eq!(examples.len(), 3);
    let r = eval_generate(&model, &tok, &examples, n).unwrap();
    assert_eq!((r.correct, r.examples), (2, 3));
    assert!((r.exact_match - 2.0 / 3.0).abs() < 1e-12);
    let hits: Vec<bool> = r.outcomes.iter().map(|o| o.correct).collect();
    assert_eq!(hits, vec![true, false, true]);
    assert_eq!(r.outcomes[0].prediction, a1);
    assert_eq!(r.outcomes[1].line, 2);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 3, "{json}");

    // A shorter limit gives a shorter answer, which no longer matches the longer reference
    // unless the model stopped early at EOS.
    let short = eval_generate(&model, &tok, &examples, 1).unwrap();
    assert!(short.outcomes.iter().all(|o| tok.encode(&o.prediction, false).unwrap().len() <= 1));
}

#[test]
fn every_format_builds_the_training_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, model, tok) = tiny_model(tmp.path(), 5);
    let n = 5;
    let question = "What is 2+2?";
    let alpaca = greedy(&model, &tok, &alpaca_prompt(question, ""), n);
    let raw = greedy(&model, &tok, "Q: 2+2? A:", n);
    let cases = [
        (SftFormat::PromptCompletion, serde_json::json!({"prompt": "Q: 2+2? A:", "completion": raw})),
        (SftFormat::OpenOrca, serde_json::json!({"question": question, "response": alpaca})),
        // The built-in chat template is the Alpaca format turn by turn; the reference is the
        // last assistant message, and its EOS text is not part of the answer.
        (
            SftFormat::Messages,
            serde_json::json!({"messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": format!("{alpaca}</s>")},
            ]}),
        ),
    ];
    for (format, line) in cases {
        let data = tmp.path().join(format!("{}.jsonl", format.name()));
        write_lines(&data, &[line]);
        let examples = load_generate_examples(&data, format, &tok, &dir, &model).unwrap();
        let r = eval_generate(&model, &tok, &examples, n).unwrap();
        assert_eq!(r.correct, 1, "{format:?}: {:?}", r.outcomes);
    }
}

#[test]
fn bad_lines_name_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, model, tok) = tiny_model(tmp.path(), 1);
    let data = tmp.path().join("bad.jsonl");
    let cases: [(&str, SftFormat, &str); 4] = [
        (
            "{\"instruction\": \"x\", \"output\": \"y\"}\n{\"instruction\": \"x\"}\n",
            SftFormat::Alpaca,
            ":2: missing field `output`",
        ),
        (
            "{\"prompt\": 3, \"completion\": \"y\"}\n",
            SftFormat::PromptCompletion,
            ":1: field `prompt` must be a string",
        ),
        ("not json\n", SftFormat::Alpaca, ":1: not valid JSON"),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
            SftFormat::Messages,
            ":1: field `messages` has no assistant message",
        ),
    ];
    for (text, format, want) in cases {
        std::fs::write(&data, text).unwrap();
        let e = load_generate_examples(&data, format, &tok, &dir, &model).unwrap_err().to_string();
        assert!(e.contains("bad.jsonl") && e.contains(want), "{e}");
    }
    assert!(eval_generate(&model, &tok, &[], 4).is_err());
}

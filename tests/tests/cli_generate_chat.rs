//! `generate --chat`: the prompt goes through the model's own chat template (chat_template.jinja,
//! or tokenizer_config.json's `chat_template`) with the --system message first, encoded without
//! added special tokens (transformers' apply_chat_template), and the answer is greedy decoding
//! from exactly those ids. Against transformers (tests/fixtures/hf/chat_*, from
//! scripts/make_fixtures.py): the prompt ids of `apply_chat_template(..., add_generation_prompt=True)`
//! and the ids of greedy `generate()` after them, with and without a system message, for a
//! template in tokenizer_config.json and one in chat_template.jinja (which wins over the
//! config's). Plain `generate` streams the text it returns; a missing --prompt off a terminal and
//! --system without --chat are usage errors (exit 2).

use serde_json::Value;
use solar_model::generate::GenerateOptions;
use solar_model::tokenizer::Tokenizer;
use solar_model::Llama;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train};
use std::path::{Path, PathBuf};

const TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
                        {% if add_generation_prompt %}<|assistant|>{% endif %}";

fn model(name: &str) -> PathBuf {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("cli_generate_chat_{name}"));
    let m = d.join("model");
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&m), "--seed", "7"]));
    m
}

fn json_run(m: &Path, extra: &[&str]) -> Value {
    let mut a = vec!["generate", "--model", s(m), "--max-new-tokens", "6", "--ignore-eos", "--json"];
    a.extend(extra);
    let run = solar_train(&a);
    ok(&run);
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// What the template renders and greedy decoding gives, computed here without the CLI.
fn expected(m: &Path, rendered: &str) -> (Vec<u32>, Vec<u32>) {
    let tok = Tokenizer::from_model_dir(m).unwrap();
    let prompt = tok.encode(rendered, false).unwrap();
    let opts = GenerateOptions { max_new_tokens: 6, ignore_eos: true, ..Default::default() };
    let out = Llama::load(m).unwrap().generate(&prompt, &opts).unwrap();
    (prompt, out)
}

#[test]
fn chat_renders_the_model_template_and_decodes_greedily_from_it() {
    let m = model("jinja");
    std::fs::write(m.join("chat_template.jinja"), TEMPLATE).unwrap();
    let got = json_run(&m, &["--chat", "--system", "Be brief.", "--prompt", "What is 2+2?"]);
    let (prompt, out) = expected(&m, "<|system|>Be brief.\n<|user|>What is 2+2?\n<|assistant|>");
    assert_eq!(ids(&got["prompt_ids"]), prompt);
    assert_eq!(ids(&got["output_ids"]), out);
    // Without --system the conversation starts at the user's message.
    let got = json_run(&m, &["--chat", "--prompt", "Hi"]);
    assert_eq!(ids(&got["prompt_ids"]), expected(&m, "<|user|>Hi\n<|assistant|>").0);
}

#[test]
fn chat_reads_the_template_from_tokenizer_config() {
    let m = model("config");
    let path = m.join("tokenizer_config.json");
    let mut cfg: Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    if !cfg.is_object() {
        cfg = serde_json::json!({});
    }
    cfg["chat_template"] = Value::from(TEMPLATE.replace("<|", "[").replace("|>", "]"));
    std::fs::write(&path, cfg.to_string()).unwrap();
    let got = json_run(&m, &["--chat", "--prompt", "Hi"]);
    assert_eq!(ids(&got["prompt_ids"]), expected(&m, "[user]Hi\n[assistant]").0);
}

#[test]
fn plain_generate_streams_its_text_and_usage_errors_exit_2() {
    let m = model("plain");
    let tok = Tokenizer::from_model_dir(&m).unwrap();
    let got = json_run(&m, &["--prompt", "abc"]);
    assert_eq!(ids(&got["prompt_ids"]), tok.encode("abc", true).unwrap());
    let run = solar_train(&[
        "generate",
        "--model",
        s(&m),
        "--prompt",
        "abc",
        "--max-new-tokens",
        "6",
        "--ignore-eos",
    ]);
    ok(&run);
    assert_eq!(run.stdout.strip_suffix('\n'), got["text"].as_str());
    let no_prompt = solar_train(&["generate", "--model", s(&m), "--chat"]);
    assert_eq!(no_prompt.code, Some(2), "{}", no_prompt.stderr);
    assert!(no_prompt.stderr.contains("--prompt"), "{}", no_prompt.stderr);
    let system = solar_train(&["generate", "--model", s(&m), "--prompt", "x", "--system", "s"]);
    assert_eq!(system.code, Some(2), "{}", system.stderr);
}

/// One recorded transformers run of tests/fixtures/hf/<case>/reference.json.
fn hf_runs(case: &str) -> (PathBuf, Vec<Value>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf").join(case);
    let text = std::fs::read_to_string(dir.join("reference.json")).unwrap();
    let runs: Value = serde_json::from_str(&text).unwrap();
    (dir.join("model"), runs.as_array().unwrap().clone())
}

/// `generate --chat --json` on the fixture model gives transformers' ids exactly: the prompt
/// the template renders (BOS written by the template, no second one added), and every greedy
/// token, the closing EOS included when transformers stopped on it.
fn matches_transformers(case: &str) {
    let (m, runs) = hf_runs(case);
    assert_eq!(runs.len(), 2, "{case}: a user-only and a system + user run");
    let mut saw_eos = false;
    for r in &runs {
        let max_new = r["max_new_tokens"].as_u64().unwrap().to_string();
        let mut a = vec!["generate", "--model", s(&m), "--chat", "--json", "--max-new-tokens", &max_new];
        a.extend(["--prompt", r["user"].as_str().unwrap()]);
        if let Some(system) = r["system"].as_str() {
            a.extend(["--system", system]);
        }
        let run = solar_train(&a);
        ok(&run);
        let got: Value =
            serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
        let what = format!("{case}, system {}", r["system"]);
        assert_eq!(ids(&got["prompt_ids"]), ids(&r["prompt_ids"]), "{what}: prompt ids ({})", r["text"]);
        assert_eq!(ids(&got["output_ids"]), ids(&r["output_ids"]), "{what}: greedy ids");
        assert_eq!(got["text"], r["output_text"], "{what}: decoded answer");
        saw_eos |= ids(&r["output_ids"]).len() < r["max_new_tokens"].as_u64().unwrap() as usize;
    }
    // The jinja case's system run stops on EOS before max_new_tokens: the stop rule is checked too.
    if case == "chat_jinja" {
        assert!(saw_eos, "{case}: the fixture was meant to hold a run that stops on EOS");
    }
}

#[test]
fn chat_ids_match_transformers_for_a_template_in_tokenizer_config() {
    matches_transformers("chat_config");
}

#[test]
fn chat_ids_match_transformers_for_chat_template_jinja_over_the_config() {
    matches_transformers("chat_jinja");
}

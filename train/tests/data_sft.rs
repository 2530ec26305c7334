//! SFT data: for every format the scored labels are exactly the response tokens and one EOS,
//! the sequence has one BOS, prompt positions get no gradient, chat templates (the model's,
//! chat_template.jinja, the built-in one) render as HF does, packing is best-fit and isolates
//! examples, and truncation cuts the response's end.

mod data_common;

use data_common::*;
use serde_json::{json, Value};
use solar_engine::{ops, Tape};
use solar_train::data::rows::{collate, LmRow};
use solar_train::data::sft::{load_sft, SftFormat};
use solar_train::data::template::{alpaca_prompt, ALPACA_PROMPT_NO_INPUT, ALPACA_PROMPT_WITH_INPUT};

fn sft(m: &Model, lines: &[Value], format: SftFormat, seq_len: usize, packing: bool) -> Vec<LmRow> {
    let path = m.jsonl("sft.jsonl", lines);
    load_sft(&path, format, &m.tok, m.path(), &m.cfg, seq_len, packing, false).unwrap().0
}

/// One row is BOS + prompt + response + EOS, scoring exactly response + EOS.
fn assert_one_turn(row: &LmRow, prompt: &str, response: &str) {
    assert_eq!(row.ids, cat(&[&[BOS], &bytes(prompt), &bytes(response), &[EOS]]));
    assert_eq!(scored(row), cat(&[&bytes(response), &[EOS]]));
    // Scored labels sit exactly on the positions that predict the response.
    let first = 1 + bytes(prompt).len();
    assert!(row.labels[..first - 1].iter().all(|&l| l == -100));
    assert!(row.labels[first - 1..row.len() - 1].iter().all(|&l| l >= 0));
    assert_eq!(row.ids.iter().filter(|&&t| t == BOS).count(), 1);
    assert_eq!(row.ids.iter().filter(|&&t| t == EOS).count(), 1);
}

#[test]
fn alpaca_uses_stanford_alpacas_prompt_with_and_without_input() {
    assert!(ALPACA_PROMPT_NO_INPUT.starts_with("Below is an instruction that describes a task. Write"));
    assert!(ALPACA_PROMPT_WITH_INPUT.contains("paired with an input that provides further context"));
    let m = model(None);
    let rows = sft(
        &m,
        &[
            json!({"instruction": "Add 2 and 3.", "input": "", "output": "5"}),
            json!({"instruction": "Translate.", "input": "chat", "output": "cat"}),
            json!({"instruction": "Say hi.", "output": "hi"}),
        ],
        SftFormat::Alpaca,
        512,
        false,
    );
    let with_input = "Below is an instruction that describes a task, paired with an input that provides further \
        context. Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n\
        ### Input:\nchat\n\n### Response:\n";
    assert_eq!(alpaca_prompt("Translate.", "chat"), with_input);
    assert_one_turn(&rows[0], &alpaca_prompt("Add 2 and 3.", ""), "5");
    assert_one_turn(&rows[1], with_input, "cat");
    assert_one_turn(&rows[2], &alpaca_prompt("Say hi.", ""), "hi");
}

#[test]
fn openorca_and_prompt_completion_score_only_the_answer() {
    let m = model(None);
    let rows = sft(
        &m,
        &[
            json!({"system_prompt": "You are terse.", "question": "2+2?", "response": "4"}),
            json!({"system_prompt": "", "question": "Why?", "response": "Because."}),
        ],
        SftFormat::OpenOrca,
        512,
        false,
    );
    assert_one_turn(&rows[0], "You are terse.\n\n### Instruction:\n2+2?\n\n### Response:\n", "4");
    assert_one_turn(&rows[1], &alpaca_prompt("Why?", ""), "Because.");
    let rows =
        sft(&m, &[json!({"prompt": "Q: 1+1=", "completion": " 2"})], SftFormat::PromptCompletion, 64, false);
    assert_one_turn(&rows[0], "Q: 1+1=", " 2");
    // An EOS the data already wrote is not doubled.
    let rows =
        sft(&m, &[json!({"prompt": "Q", "completion": "A</s>"})], SftFormat::PromptCompletion, 64, false);
    assert_one_turn(&rows[0], "Q", "A");
}

#[test]
fn messages_use_the_models_template_with_one_bos_and_one_eos_per_answer() {
    let m = model(Some(INST_TEMPLATE));
    let conv = json!({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "bye"}, {"role": "assistant", "content": "ciao"}]});
    let rows = sft(&m, &[conv], SftFormat::Messages, 512, false);
    // The template writes <s> itself, so the tokenizer adds none; its </s> after each answer
    // is the only EOS there.
    let want =
        cat(&[&[BOS], &bytes("[INST] hi [/INST]yo"), &[EOS], &bytes("[INST] bye [/INST]ciao"), &[EOS]]);
    assert_eq!(rows[0].ids, want);
    assert_eq!(scored(&rows[0]), cat(&[&bytes("yo"), &[EOS], &bytes("ciao"), &[EOS]]));
}

#[test]
fn chat_template_jinja_wins_and_text_after_eos_is_context() {
    // ChatML-like: `<|user|>` turns, answers closed by EOS and a newline that is not scored.
    let m = model(Some("{{ raise_exception('tokenizer_config.json should not be used') }}"));
    let chatml = "{% for m in messages %}{{ '<|' + m.role + '|>\\n' + m.content.strip() }}{% if m.role == 'assistant' %}\
        {{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
    m.write("chat_template.jinja", chatml);
    let conv = json!({"messages": [
        {"role": "system", "content": "be nice "}, {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2"}]});
    let rows = sft(&m, &[conv], SftFormat::Messages, 512, false);
    let want = cat(&[
        &[BOS],
        &bytes("<|system|>\nbe nice\n<|user|>\nq1\n<|assistant|>\na1"),
        &[EOS],
        &bytes("\n<|user|>\nq2\n<|assistant|>\na2"),
        &[EOS],
    ]);
    assert_eq!(rows[0].ids, want);
    assert_eq!(scored(&rows[0]), cat(&[&bytes("a1"), &[EOS], &bytes("a2"), &[EOS]]));
}

#[test]
fn models_without_a_template_get_the_builtin_alpaca_one() {
    let m = model(None);
    let conv = json!({"messages": [{"role": "user", "content": "Name a color."},
                                   {"role": "assistant", "content": "Blue."}]});
    let rows = sft(&m, &[conv], SftFormat::Messages, 512, false);
    assert_one_turn(&rows[0], &alpaca_prompt("Name a color.", ""), "Blue.");
    // Several turns, with a system message in place of the preamble.
    let conv = json!({"messages": [{"role": "system", "content": "Be brief."},
        {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]});
    let rows = sft(&m, &[conv], SftFormat::Messages, 512, false);
    let want = cat(&[
        &[BOS],
        &bytes("Be brief.\n\n### Instruction:\nq1\n\n### Response:\na1"),
        &[EOS],
        &bytes("\n\n### Instruction:\nq2\n\n### Response:\na2"),
        &[EOS],
    ]);
    assert_eq!(rows[0].ids, want);
    assert_eq!(scored(&rows[0]), cat(&[&bytes("a1"), &[EOS], &bytes("a2"), &[EOS]]));
}

#[test]
fn template_errors_name_the_line() {
    let m = model(Some(INST_TEMPLATE));
    let ok = json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]});
    let bad = json!({"messages": [{"role": "tool", "content": "a"}, {"role": "assistant", "content": "b"}]});
    let path = m.jsonl("sft.jsonl", &[ok.clone(), bad]);
    let err = load_sft(&path, SftFormat::Messages, &m.tok, m.path(), &m.cfg, 64, false, false).unwrap_err();
    let err = err.to_string();
    assert!(err.contains("sft.jsonl:2:") && err.contains("roles must be user or assistant"), "{err}");
    let (rows, stats) =
        load_sft(&path, SftFormat::Messages, &m.tok, m.path(), &m.cfg, 64, false, true).unwrap();
    assert_eq!((rows.len(), stats.skipped_lines), (1, 1));
    // A conversation with no assistant message has nothing to learn.
    let path = m.jsonl("none.jsonl", &[json!({"messages": [{"role": "user", "content": "a"}]})]);
    let err = load_sft(&path, SftFormat::Messages, &m.tok, m.path(), &m.cfg, 64, false, false).unwrap_err();
    assert!(err.to_string().contains("none.jsonl:1: field `messages` has no assistant message"), "{err}");
}

#[test]
fn prompt_positions_get_exactly_zero_gradient() {
    let m = model(None);
    let lines = [
        json!({"instruction": "Repeat: abc", "output": "abc"}),
        json!({"instruction": "Count to three.", "input": "slowly", "output": "one two three"}),
    ];
    let rows = sft(&m, &lines, SftFormat::Alpaca, 512, true);
    let batch = collate(&rows.iter().collect::<Vec<_>>()).unwrap();
    let model = tiny_model(5);
    let logits = model.logits(None, &batch.input).unwrap(); // [B, T, V]
    let (b, t, v) = (logits.dims()[0], logits.dims()[1], logits.dims()[2]);
    let tape = Tape::new();
    let watched = tape.watch(&logits);
    let ce =
        ops::cross_entropy(&watched.reshape([b * t, v]).unwrap(), &batch.targets.reshape([b * t]).unwrap())
            .unwrap();
    let grad = tape.backward(&ce.loss_sum).unwrap().get(&watched).unwrap().to_vec::<f32>().unwrap();
    let targets = batch.targets.to_vec::<i32>().unwrap();
    let (mut zero, mut live) = (0, 0);
    for (pos, &target) in targets.iter().enumerate() {
        let g = &grad[pos * v..(pos + 1) * v];
        if target == -100 {
            assert!(g.iter().all(|&x| x == 0.0), "position {pos} predicts a prompt token but has gradient");
            zero += 1;
        } else {
            assert!(g.iter().any(|&x| x != 0.0));
            live += 1;
        }
    }
    // Prompt positions: everything but "abc"+EOS and "one two three"+EOS.
    assert_eq!(live, 4 + 14);
    assert!(zero > live);
}

#[test]
fn packing_is_best_fit_and_isolates_examples() {
    let m = model(None);
    let lines: Vec<Value> = ["a", "bbbbbbbb", "cc", "dddd", "e", "ffffff"]
        .iter()
        .map(|o| json!({"prompt": format!("say {}:", o.len()), "completion": o}))
        .collect();
    let alone = sft(&m, &lines, SftFormat::PromptCompletion, 24, false);
    let packed = sft(&m, &lines, SftFormat::PromptCompletion, 24, true);
    assert_eq!(alone.len(), 6);
    assert!(packed.len() < alone.len() && packed.iter().all(|r| r.len() <= 24));
    let total = |rows: &[LmRow]| {
        rows.iter().map(|r| (r.len(), r.scored())).fold((0, 0), |a, x| (a.0 + x.0, a.1 + x.1))
    };
    assert_eq!(total(&packed), total(&alone));
    // Every example shows up once, unchanged, as a document of a packed row.
    let mut docs: Vec<LmRow> =
        packed.iter().flat_map(|r| (0..=*r.doc_ids.last().unwrap()).map(|d| document(r, d).0)).collect();
    let mut want = alone.clone();
    docs.sort_by(|a, b| a.ids.cmp(&b.ids));
    want.sort_by(|a, b| a.ids.cmp(&b.ids));
    assert_eq!(docs, want);
    assert_eq!(packed, sft(&m, &lines, SftFormat::PromptCompletion, 24, true), "deterministic");
    assert!(assert_packing_isolates(&tiny_model(9), &packed) >= 4);
}

#[test]
fn long_examples_lose_the_end_of_the_response() {
    let m = model(None);
    let lines = [
        json!({"prompt": "abc", "completion": "defghij"}),
        json!({"prompt": "0123456789", "completion": "x"}),
        json!({"prompt": "q", "completion": "r"}),
    ];
    let path = m.jsonl("sft.jsonl", &lines);
    let (rows, stats) =
        load_sft(&path, SftFormat::PromptCompletion, &m.tok, m.path(), &m.cfg, 8, false, false).unwrap();
    // BOS abc defg: the response keeps its start; the last kept token predicts nothing.
    assert_eq!(rows[0].ids, cat(&[&[BOS], &bytes("abcdefg")]));
    assert_eq!(scored(&rows[0]), bytes("defg"));
    // The second example's prompt fills the row: nothing to score, not used.
    assert_eq!(rows.len(), 2);
    assert_eq!((stats.examples, stats.truncated, stats.dropped, stats.rows), (3, 2, 1, 2));
}

#[test]
fn llama2_chat_template_renders_as_transformers_does() {
    // Llama-2-chat's template: system folded into the first turn, `<s>` before every turn.
    let llama2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}\
        {% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}\
        {% set system_message = false %}{% endif %}{% for message in loop_messages %}\
        {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}\
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}\
        {% if loop.index0 == 0 and system_message != false %}\
        {% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}\
        {% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}\
        {{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}\
        {{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
    let m = model(Some(llama2));
    let conv = json!({"messages": [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"}, {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao "}]});
    let rows = sft(&m, &[conv], SftFormat::Messages, 512, false);
    let want = cat(&[
        &[BOS],
        &bytes("[INST] <<SYS>>\nsys\n<</SYS>>\n\nhi [/INST] yo "),
        &[EOS, BOS],
        &bytes("[INST] bye [/INST] ciao "),
        &[EOS],
    ]);
    assert_eq!(rows[0].ids, want);
    assert_eq!(scored(&rows[0]), cat(&[&bytes(" yo "), &[EOS], &bytes(" ciao "), &[EOS]]));

    // Other jinja HF templates lean on: namespace(), tojson.
    let m = model(Some(
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}\
         {{ '#' ~ ns.n }}{{ m['content'] | tojson }}{% endfor %}",
    ));
    let conv = json!({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]});
    let rows = sft(&m, std::slice::from_ref(&conv), SftFormat::Messages, 512, false);
    assert_eq!(rows[0].ids, cat(&[&[BOS], &bytes("#1\"q\"#2\"a\""), &[EOS]]));
    assert_eq!(scored(&rows[0]), cat(&[&bytes("#2\"a\""), &[EOS]]));

    // A template whose prompt is not a prefix of the conversation cannot be split: an error.
    let m = model(Some("{% for m in messages %}{{ m.content }}{% if loop.last %}!{% endif %}{% endfor %}"));
    let path = m.jsonl("sft.jsonl", &[conv]);
    let err = load_sft(&path, SftFormat::Messages, &m.tok, m.path(), &m.cfg, 64, false, false).unwrap_err();
    assert!(
        err.to_string().contains("sft.jsonl:1: chat template") && err.to_string().contains("not a prefix")
    );
}

//! Hostile: data with nothing to train on (issue 17, fifth promise). An SFT file whose every
//! response is empty (only the closing EOS would be scored) and a pretraining file whose every
//! document is shorter than 2 tokens (no token has a next one) are refused with exit 1 naming
//! the file, before the model is loaded and before OUT is created.

use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train};
use solar_tests::setup::{assert_refused, tiny_model, write_jsonl};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("hostile_data_{name}"))
}

fn base(d: &Path) -> PathBuf {
    tiny_model(d, "base", 4)
}

fn refused_naming(args: &[&str], data: &Path, out: &Path) {
    assert_refused(&solar_train(args), 1, &[s(data), "nothing to train on"]);
    assert!(!out.exists(), "OUT must not be created");
}

#[test]
fn sft_data_whose_every_response_is_empty_is_refused_up_front() {
    let d = scratch("sft");
    let b = base(&d);
    let data = d.join("alpaca.jsonl");
    let example = |i: u32, output: &str| serde_json::json!({"instruction": format!("Add {i} and 2."), "input": "", "output": output});
    write_jsonl(&data, (0..6).map(|i| example(i, "")));
    let out = d.join("out");
    let (b_, data_, out_) = (s(&b), s(&data), s(&out));
    let args = [
        "sft",
        "--model",
        b_,
        "--data",
        data_,
        "--out",
        out_,
        "--format",
        "alpaca",
        "--steps",
        "1",
        "--batch",
        "1",
        "--seq-len",
        "256",
    ];
    refused_naming(&args, &data, &out);
    // One answered example is something to train on.
    write_jsonl(&data, (0..6).map(|i| example(i, if i == 3 { "5" } else { "" })));
    ok(&solar_train(&args));
    assert!(out.join("model.safetensors").exists());
}

#[test]
fn pretrain_data_whose_every_document_is_shorter_than_two_tokens_is_refused_up_front() {
    let d = scratch("pretrain");
    let b = base(&d);
    let data = d.join("docs.jsonl");
    write_jsonl(&data, (0..8u32).map(|i| serde_json::json!({ "input_ids": [3 + i] })));
    let out = d.join("out");
    let (b_, data_, out_) = (s(&b), s(&data), s(&out));
    let args = [
        "pretrain",
        "--model",
        b_,
        "--data",
        data_,
        "--out",
        out_,
        "--steps",
        "1",
        "--batch",
        "1",
        "--seq-len",
        "8",
    ];
    refused_naming(&args, &data, &out);
    // The same file as held-out data is refused too, naming that file.
    let good = d.join("good.jsonl");
    write_jsonl(&good, [serde_json::json!({ "input_ids": [3, 4, 5] })]);
    let mut with_eval = args.to_vec();
    with_eval[4] = s(&good);
    with_eval.extend(["--eval-data", data_]);
    refused_naming(&with_eval, &data, &out);
    // One document of two tokens is something to train on.
    write_jsonl(
        &data,
        (0..8u32).map(|i| serde_json::json!({ "input_ids": if i == 5 { vec![3, 4] } else { vec![3 + i] } })),
    );
    ok(&solar_train(&args));
    assert!(out.join("model.safetensors").exists());
}

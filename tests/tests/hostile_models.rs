//! Hostile: models combined that cannot work together. Protects issue 17's "every combination
//! checked" for DPO: a reference with another vocabulary or another token table is refused
//! before any work (exit 1, naming --ref and what differs) and no output is created. (Merge
//! inputs are held to one vocabulary and shape by train/tests/merge_*.)

use serde_json::Value;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train};
use solar_tests::folders::copy_tree;
use solar_tests::setup::{assert_refused, tiny_model};
use std::path::Path;

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn dpo_refuses_a_reference_with_another_vocabulary_or_token_table() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "hostile_models_dpo");
    let base = tiny_model(&d, "base", 2);
    let data = d.join("pairs.jsonl");
    let pair = serde_json::json!({"prompt": "1+1=", "chosen": "2", "rejected": "9"});
    std::fs::write(&data, format!("{pair}\n{pair}\n")).unwrap();
    let out = d.join("out");

    let wider = d.join("wider");
    copy_tree(&base, &wider);
    edit_json(&wider.join("config.json"), |v| v["vocab_size"] = 400.into());
    let retok = d.join("retok");
    copy_tree(&base, &retok);
    edit_json(&retok.join("tokenizer.json"), |v| {
        let vocab = v["model"]["vocab"].as_object_mut().expect("a BPE vocab");
        let (k, id) = vocab.iter().next().map(|(k, id)| (k.clone(), id.clone())).unwrap();
        vocab.remove(&k);
        vocab.insert(format!("{k}x"), id);
    });
    for (reference, what) in [(&wider, "vocabulary of 400 tokens"), (&retok, "maps tokens differently")] {
        let run = solar_train(&[
            "dpo",
            "--model",
            s(&base),
            "--ref",
            s(reference),
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--steps",
            "1",
        ]);
        assert_refused(&run, 1, &["--ref", what]);
        assert!(!run.stderr.contains("reference log-probs"), "refused before any work: {}", run.stderr);
        assert!(!out.exists(), "no output for a refused run");
    }
    // The same model as its own reference is fine.
    let run = solar_train(&[
        "dpo",
        "--model",
        s(&base),
        "--ref",
        s(&base),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--steps",
        "1",
        "--seq-len",
        "32",
        "--batch",
        "2",
    ]);
    ok(&run);
}

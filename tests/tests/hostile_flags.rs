//! Hostile: flag values that make no sense and flag combinations that contradict each other.
//! Protects issue 17's "one exit-code rule": every invalid value (NaN, infinities, out of
//! range) or combination exits 2, is judged before any work (the model and data paths here do
//! not even exist, so a check that came late would fail with exit 1 instead), names the flag,
//! and leaves nothing behind.

use solar_tests::cli::{path_str as s, scratch_dir, solar_train};

/// Each case: the extra flags, and the flag name the message must mention.
const TRAIN_CASES: &[(&[&str], &str)] = &[
    (&["--lr", "nan"], "--lr"),
    (&["--lr", "inf"], "--lr"),
    (&["--lr", "0"], "--lr"),
    (&["--min-lr", "nan"], "--min-lr"),
    (&["--min-lr", "1"], "--min-lr"),
    (&["--weight-decay", "inf"], "--weight-decay"),
    (&["--weight-decay", "NaN"], "--weight-decay"),
    (&["--beta1", "1"], "--beta1"),
    (&["--beta2", "nan"], "--beta2"),
    (&["--eps", "0"], "--eps"),
    (&["--eps", "inf"], "--eps"),
    (&["--clip", "nan"], "--clip"),
    (&["--clip", "inf"], "--clip"),
    (&["--epochs", "nan"], "--epochs"),
    (&["--epochs", "inf"], "--epochs"),
    (&["--epochs", "0"], "--epochs"),
    (&["--steps", "0"], "--steps"),
    (&["--batch", "0"], "--batch"),
    (&["--grad-accum", "0"], "--grad-accum"),
    (&["--seq-len", "1"], "--seq-len"),
    (&["--batch", "-3"], "-3"),
    (&["--lr", "fast"], "--lr"),
    (&["--resume", "--overwrite"], "--overwrite"),
    (&["--eval-every", "5"], "--eval-data"),
];

const DPO_CASES: &[(&[&str], &str)] = &[
    (&["--beta", "nan"], "--beta"),
    (&["--beta", "0"], "--beta"),
    (&["--beta", "inf"], "--beta"),
    (&["--label-smoothing", "0.6"], "--label-smoothing"),
    (&["--label-smoothing", "nan"], "--label-smoothing"),
    (&["--loss", "ipo", "--label-smoothing", "0.1"], "--label-smoothing"),
];

/// Runs each case and checks exit 2, the flag named, and `out` never created.
fn refused(base: &[&str], cases: &[(&[&str], &str)], out: &std::path::Path) {
    for (extra, flag) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let run = solar_train(&args);
        assert_eq!(run.code, Some(2), "{args:?} must be a usage error: {}", run.stderr);
        assert!(run.stderr.contains("error"), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(flag), "{args:?}: the message must name {flag}: {}", run.stderr);
        assert!(!out.exists(), "{args:?}: {} was created", out.display());
    }
}

#[test]
fn every_trainer_refuses_senseless_numbers_and_contradictions_with_exit_2() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "hostile_flags_train");
    let out = d.join("out");
    for cmd in ["pretrain", "sft", "dpo"] {
        let base = [cmd, "--model", "no-model", "--data", "no-data.jsonl", "--out", s(&out)];
        refused(&base, TRAIN_CASES, &out);
    }
    let base = ["dpo", "--model", "no-model", "--data", "no-data.jsonl", "--out", s(&out)];
    refused(&base, DPO_CASES, &out);
}

#[test]
fn generate_eval_and_merge_refuse_senseless_numbers_with_exit_2() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "hostile_flags_other");
    let out = d.join("out");
    let generate = ["generate", "--model", "no-model", "--prompt", "hi"];
    let cases: &[(&[&str], &str)] = &[
        (&["--temperature", "nan"], "--temperature"),
        (&["--temperature", "inf"], "--temperature"),
        (&["--top-p", "0"], "--top-p"),
        (&["--top-p", "1.5"], "--top-p"),
        (&["--top-p", "nan"], "--top-p"),
    ];
    refused(&generate, cases, &out);
    let eval = ["eval", "--model", "no-model", "--data", "no-data.jsonl", "--task", "dpo", "--ref", "no-ref"];
    refused(&eval, &[(&["--beta", "nan"], "--beta"), (&["--beta=-inf"], "--beta")], &out);
    let merge = ["merge", "--method", "linear", "--models", "a", "b", "--out", s(&out)];
    let cases: &[(&[&str], &str)] = &[
        (&["--weights", "nan,1"], "--weights"),
        (&["--weights", "1,inf"], "--weights"),
        (&["--lambda", "inf"], "--lambda"),
    ];
    refused(&merge, cases, &out);
}

#[test]
fn bad_values_in_a_toml_config_exit_2_like_the_same_flag() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "hostile_flags_toml");
    let cases = [
        ("lr = nan\n", "--lr"),
        ("batch = -3\n", "batch"),
        ("clip = inf\n", "--clip"),
        ("lr = \"fast\"\n", "lr"),
    ];
    for (i, (body, flag)) in cases.iter().enumerate() {
        let file = d.join(format!("run{i}.toml"));
        std::fs::write(&file, format!("data = \"/nonexistent/d.jsonl\"\n{body}")).unwrap();
        let out = d.join(format!("out{i}"));
        let r =
            solar_train(&["pretrain", "--config", s(&file), "--model", "/nonexistent/m", "--out", s(&out)]);
        assert_eq!(r.code, Some(2), "{body}: {}", r.stderr);
        assert!(r.stderr.contains(flag), "{body}: {}", r.stderr);
        assert!(!out.exists());
    }
}

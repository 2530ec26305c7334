//! Hostile: runs and files that would take more memory than there is. Protects issue 17's
//! fourth promise: a training step's memory is estimated before anything is allocated and a
//! run that cannot fit is refused with the estimate and the flags to lower; a data line is
//! held only up to a bound (FILE:LINE named past it) and a long text costs memory for its
//! tokens, not the tokenizer's per-byte bookkeeping (it is encoded in pieces); sizes from config.json are
//! overflow-checked, and a config cannot make a reader allocate for what the files do not hold.

use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train, solar_train_path, Run};
use solar_tests::setup::{assert_refused, tiny_model, write_jsonl};
use solar_train::data::records::{read_lines_within, DataStats};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("hostile_resources_{name}"))
}

/// A tiny model and eight short token-id documents.
fn setup(d: &Path) -> (PathBuf, PathBuf) {
    let base = tiny_model(d, "base", 2);
    let data = d.join("docs.jsonl");
    write_jsonl(&data, (0..8u32).map(|i| serde_json::json!({ "input_ids": [3 + i, 4 + i, 5 + i, 6] })));
    (base, data)
}

fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(solar_train_path()).args(args).envs(env.iter().copied()).output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A model's config.json with some fields replaced.
fn edit_config(model: &Path, edits: serde_json::Value) {
    let path = model.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for (k, v) in edits.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(&path, cfg.to_string()).unwrap();
}

#[test]
fn a_step_that_cannot_fit_is_refused_before_anything_is_allocated() {
    let d = scratch("fit");
    let (base, data) = setup(&d);
    let out = d.join("out");
    let args = [
        "pretrain",
        "--model",
        s(&base),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--steps",
        "1",
        "--seq-len",
        "16",
    ];
    // The tiny model's step fits in 64 MiB but not in 1 MiB.
    ok(&run_with_env(&args, &[("SOLAR_MEMORY_LIMIT", "67108864")]));
    std::fs::remove_dir_all(&out).unwrap();
    let r = run_with_env(&args, &[("SOLAR_MEMORY_LIMIT", "1048576")]);
    assert_refused(
        &r,
        1,
        &["needs about", "weights", "activations", "1.0 MiB is available", "cannot be trained"],
    );
    assert!(!out.exists(), "a refused run must not create OUT");

    // Activations over the real machine's memory: the advice names the flags to lower.
    let big = ["--batch", "4096", "--seq-len", "1048576"];
    let r = solar_train(&[&args[..9], &big].concat());
    assert_refused(&r, 1, &["activations must shrink", "--batch", "--grad-accum", "--seq-len"]);
    assert!(!out.exists());
}

#[test]
fn a_config_whose_sizes_overflow_is_an_error_naming_the_field() {
    let d = scratch("overflow");
    let (base, data) = setup(&d);
    edit_config(&base, serde_json::json!({"vocab_size": 1u64 << 40, "hidden_size": 1u64 << 40}));
    let out = d.join("out");
    for args in [
        vec!["pretrain", "--model", s(&base), "--data", s(&data), "--out", s(&out), "--steps", "1"],
        vec!["generate", "--model", s(&base), "--prompt", "hi"],
    ] {
        assert_refused(&solar_train(&args), 1, &["config.json", "overflows"]);
    }
    // --batch x --grad-accum x --seq-len past 64 bits is a usage error.
    let (b, dd) = (s(&base), s(&data));
    let args = ["pretrain", "--model", b, "--data", dd, "--out", s(&out), "--batch", "4294967296"];
    let r = solar_train(&[&args[..], &["--grad-accum", "4294967296", "--seq-len", "2"]].concat());
    assert_refused(&r, 2, &["overflows"]);
}

#[test]
fn a_config_claiming_more_layers_than_the_weights_hold_is_refused_without_listing_them() {
    let d = scratch("layers");
    let (base, _) = setup(&d);
    // 10^12 layers: listing their tensor names alone would need hundreds of terabytes.
    edit_config(&base, serde_json::json!({"num_hidden_layers": 1_000_000_000_000u64}));
    let r = solar_train(&["generate", "--model", s(&base), "--prompt", "hi", "--max-new-tokens", "1"]);
    assert_refused(&r, 1, &["1000000000000 layers"]);
}

#[test]
fn a_data_line_over_the_bound_is_refused_by_file_and_line_and_never_held() {
    let d = scratch("line");
    let path = d.join("rows.jsonl");
    let long = format!("{{\"text\": \"{}\"}}", "x".repeat(5000));
    std::fs::write(&path, format!("{{\"a\": 1}}\n{long}\n{{\"b\": 2}}\n")).unwrap();
    let mut held = 0;
    let mut stats = DataStats::default();
    let read = |skip: bool, stats: &mut DataStats, held: &mut usize| {
        read_lines_within(&path, 1024, skip, stats, |_, text| {
            *held = (*held).max(text.len());
            Ok(Some(text.to_string()))
        })
    };
    let err = read(false, &mut stats, &mut held).unwrap_err().to_string();
    assert!(err.contains("rows.jsonl:2") && err.contains("limit"), "{err}");
    let kept = read(true, &mut stats, &mut held).unwrap();
    assert_eq!(kept, vec!["{\"a\": 1}", "{\"b\": 2}"]);
    assert_eq!(stats.skipped_lines, 1);
    assert!(held <= 1024, "a line of {held} bytes reached the parser");

    // Through the command line, at the real bound (64 MiB): one line with no newline at all.
    let (base, _) = setup(&d);
    let huge = d.join("huge.jsonl");
    std::fs::write(&huge, vec![b'['; (64 << 20) + 1]).unwrap();
    let r = solar_train(&["pretrain", "--model", s(&base), "--data", s(&huge), "--out", s(&d.join("o"))]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("huge.jsonl:1") && r.stderr.contains("64 MiB limit"), "{}", r.stderr);
}

/// Peak resident memory (VmHWM) of a running child, polled until it exits, and its exit code.
#[cfg(target_os = "linux")]
fn peak_memory(mut child: std::process::Child) -> (Option<i32>, u64) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            let hwm = text.lines().find_map(|l| l.strip_prefix("VmHWM:"));
            if let Some(kb) = hwm.and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()) {
                peak_kb = peak_kb.max(kb);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), peak_kb << 10);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
#[cfg(target_os = "linux")]
fn a_long_text_line_costs_memory_for_its_tokens_not_for_the_tokenizers_bookkeeping() {
    let d = scratch("long_text");
    let (base, _) = setup(&d);
    let data = d.join("long.jsonl");
    let text: String =
        (0..1_600_000u32).map(|i| ["the ", "quick ", "fox ", "42 ", "dog! "][i as usize % 5]).collect();
    let bytes = text.len() as u64;
    std::fs::write(&data, serde_json::json!({ "text": text }).to_string()).unwrap();
    let out = d.join("out");
    let args = ["pretrain", "--model", s(&base), "--data", s(&data), "--out", s(&out), "--steps", "1"];
    let child = Command::new(solar_train_path())
        .args(args)
        .args(["--batch", "2", "--seq-len", "32"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (code, peak) = peak_memory(child);
    assert_eq!(code, Some(0));
    // What the run keeps of a byte of this text: the line, its parsed string, one u32 id (the
    // preset tokenizer is byte-level) and its share of the packed rows, about 25 bytes in all.
    // Tokenising the line whole costs about 240 bytes per byte (offsets, alignments, a String
    // per token); the bound sits between the two, above a fixed 64 MiB for the process.
    let bound = 40 * bytes + (64 << 20);
    assert!(
        peak < bound,
        "peak {} MiB for a {} MiB line (bound {} MiB)",
        peak >> 20,
        bytes >> 20,
        bound >> 20
    );
}

#[test]
fn a_text_too_long_to_tokenise_whole_in_the_memory_there_is_is_refused_by_file_and_line() {
    let d = scratch("whole_text");
    let (base, _) = setup(&d);
    // The same vocabulary with a prefix space before every text: cutting a text into pieces
    // would add spaces, so this tokenizer encodes each text in one call.
    let whole = d.join("whole");
    solar_tests::folders::copy_tree(&base, &whole);
    let tok_path = whole.join("tokenizer.json");
    let mut tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok_path).unwrap()).unwrap();
    tok["pre_tokenizer"]["add_prefix_space"] = true.into();
    std::fs::write(&tok_path, tok.to_string()).unwrap();
    let data = d.join("long.jsonl");
    let long: String = "lots of words ".repeat(150_000); // 2 MiB: about 512 MiB to tokenise whole
    write_jsonl(&data, [serde_json::json!({"text": "a short one"}), serde_json::json!({ "text": long })]);
    let out = d.join("out");
    let limit = [("SOLAR_MEMORY_LIMIT", "268435456")];
    let args = |model: &Path| {
        let a = ["pretrain", "--model", s(model), "--data", s(&data), "--out", s(&out), "--steps", "1"];
        [&a[..], &["--batch", "2", "--seq-len", "16"]]
            .concat()
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
    };
    let refused = args(&whole);
    let r = run_with_env(&refused.iter().map(String::as_str).collect::<Vec<_>>(), &limit);
    assert_refused(&r, 1, &["long.jsonl:2", "in one piece", "256.0 MiB available", "split it"]);
    assert!(!out.exists(), "refused while reading: no OUT");
    // The preset tokenizer encodes it in 64 KiB pieces: the same text fits the same limit.
    let fits = args(&base);
    ok(&run_with_env(&fits.iter().map(String::as_str).collect::<Vec<_>>(), &limit));
}

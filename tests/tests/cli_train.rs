//! `pretrain` as a user runs it, and exact resume after a kill: a run that dies after a
//! checkpoint, one that dies while a checkpoint is being written, and one killed with SIGKILL
//! at a random moment all finish, with `--resume`, bitwise equal to a run that was never
//! interrupted. Plus metrics.jsonl, NaN steps stopping the run with the last checkpoint
//! intact, and the occupied-OUT refusal.

use serde_json::Value;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train, solar_train_path};
use solar_tests::setup::{assert_refused, tiny_model_and_docs};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("cli_train_{name}"))
}

fn args<'a>(base: &'a Path, data: &'a Path, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    vec![
        "pretrain",
        "--model",
        s(base),
        "--data",
        s(data),
        "--out",
        s(out),
        "--steps",
        steps,
        "--batch",
        "2",
        "--grad-accum",
        "2",
        "--seq-len",
        "32",
        "--save-every",
        "2",
        "--lr",
        "1e-2",
        "--warmup",
        "2",
        "--seed",
        "5",
    ]
}

/// Runs solar-train with SOLAR_FAULT set; the process aborts where the fault says.
fn run_with_fault(a: &[&str], fault: &str) -> std::process::ExitStatus {
    Command::new(solar_train_path()).args(a).env("SOLAR_FAULT", fault).output().unwrap().status
}

fn weights(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("model.safetensors")).unwrap()
}

#[test]
fn killed_runs_resume_bitwise_equal() {
    let d = scratch("resume");
    let (base, data) = tiny_model_and_docs(&d);
    let whole = d.join("whole");
    ok(&solar_train(&args(&base, &data, &whole, "10")));
    let records: Vec<Value> = std::fs::read_to_string(whole.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 10);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["step"], i as u64 + 1);
        for k in ["loss", "lr", "grad_norm", "tokens", "tokens_per_s"] {
            assert!(r[k].is_number(), "metrics record {i} lacks {k}: {r}");
        }
    }
    for (name, fault) in [("after", "after-step:5"), ("during", "in-checkpoint:6")] {
        let out = d.join(name);
        let status = run_with_fault(&args(&base, &data, &out, "10"), fault);
        assert!(!status.success(), "{name}: the fault must kill the run");
        assert!(!out.join("model.safetensors").exists(), "{name}: no finished model yet");
        let mut resume = args(&base, &data, &out, "10");
        resume.push("--resume");
        let run = solar_train(&resume);
        ok(&run);
        assert!(run.stderr.contains("resuming from step 4"), "{name}: {}", run.stderr);
        assert_eq!(weights(&out), weights(&whole), "{name}: resumed weights differ");
        let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 10, "{name}: one metrics record per step");
    }
}

#[test]
fn sigkill_at_any_moment_then_resume_is_bitwise_equal() {
    let d = scratch("sigkill");
    let (base, data) = tiny_model_and_docs(&d);
    let (whole, out) = (d.join("whole"), d.join("killed"));
    ok(&solar_train(&args(&base, &data, &whole, "30")));
    let mut child = Command::new(solar_train_path())
        .args(args(&base, &data, &out, "30"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !out.join("checkpoints/step-000004").exists() && std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill(); // SIGKILL on Unix
    let _ = child.wait();
    let mut resume = args(&base, &data, &out, "30");
    resume.push("--resume");
    ok(&solar_train(&resume));
    assert_eq!(weights(&out), weights(&whole));
}

#[test]
fn nan_steps_stop_the_run_and_keep_the_last_checkpoint() {
    let d = scratch("nan");
    let (base, data) = tiny_model_and_docs(&d);
    let out = d.join("out");
    let mut a = args(&base, &data, &out, "20");
    a.extend(["--lr", "1e9", "--clip", "0", "--max-bad-steps", "2", "--save-every", "1", "--warmup", "0"]);
    assert_refused(&solar_train(&a), 1, &["bad steps", "last good checkpoint"]);
    assert!(out.join("checkpoints").read_dir().unwrap().next().is_some(), "a checkpoint survives");
    // An occupied OUT is refused without --resume or --overwrite.
    assert_refused(&solar_train(&args(&base, &data, &out, "2")), 1, &["--overwrite"]);
    let mut again = args(&base, &data, &out, "2");
    again.push("--overwrite");
    ok(&solar_train(&again));
}

#[test]
fn the_same_seed_gives_bitwise_the_same_weights_at_any_thread_count() {
    let d = scratch("threads");
    let (base, data) = tiny_model_and_docs(&d);
    let mut outs = Vec::new();
    for threads in ["1", "2", "3"] {
        let out = d.join(format!("t{threads}"));
        let mut a = args(&base, &data, &out, "4");
        a.extend(["--threads", threads]);
        ok(&solar_train(&a));
        outs.push(weights(&out));
    }
    assert_eq!(outs[0], outs[1], "1 vs 2 threads");
    assert_eq!(outs[0], outs[2], "1 vs 3 threads");
}

/// The number `--dry-run` prints on stdout.
fn predicted(a: &[&str]) -> u64 {
    let r = solar_train(a);
    ok(&r);
    let line = r.stdout.trim();
    line.strip_prefix("predicted_peak_bytes ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("--dry-run printed {line:?}"))
}

#[test]
fn dry_run_predicts_the_peak_without_touching_out() {
    let d = scratch("dry_run");
    let (base, data) = tiny_model_and_docs(&d);
    let out = d.join("out");
    let mut a = args(&base, &data, &out, "4");
    a.push("--dry-run");
    let full = predicted(&a);
    a.push("--recompute");
    let re = predicted(&a);
    assert!(re < full, "--recompute must predict less: {re} vs {full}");
    // sft and dpo size the same step without reading their data; a DPO pair is two rows.
    let missing = d.join("no-such-data.jsonl");
    let stage = |cmd: &str, batch: &str| {
        let mut a = vec![cmd, "--model", s(&base), "--data", s(&missing), "--out", s(&out)];
        a.extend(["--batch", batch, "--seq-len", "32", "--dry-run"]);
        predicted(&a)
    };
    assert_eq!(stage("dpo", "1"), stage("sft", "2"));
    assert_eq!(stage("sft", "2"), full, "pretrain and sft steps of 2 x 32 tokens");
    assert!(!out.exists(), "--dry-run created OUT");
}

#[test]
fn recompute_trains_bitwise_the_same_weights_and_metrics_carry_memory() {
    let d = scratch("recompute");
    let (base, data) = tiny_model_and_docs(&d);
    let (plain, re) = (d.join("plain"), d.join("re"));
    ok(&solar_train(&args(&base, &data, &plain, "4")));
    let mut a = args(&base, &data, &re, "4");
    a.push("--recompute");
    ok(&solar_train(&a));
    assert_eq!(weights(&plain), weights(&re), "--recompute changed the trained weights");
    let text = std::fs::read_to_string(re.join("metrics.jsonl")).unwrap();
    let steps: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .collect();
    assert_eq!(steps.len(), 4);
    for v in &steps {
        let alloc = v["peak_alloc_bytes"].as_u64().unwrap_or_else(|| panic!("no peak_alloc_bytes: {v}"));
        let rss = v["peak_rss_bytes"].as_u64().unwrap_or_else(|| panic!("no peak_rss_bytes: {v}"));
        // The tiny model's weights alone are ~100 KB; the process holds far more than its tensors.
        assert!(alloc > 100_000 && rss > alloc, "peak_alloc_bytes {alloc}, peak_rss_bytes {rss}");
    }
}

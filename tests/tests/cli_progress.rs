//! What a trainer sees off a terminal (a pipe, as in CI): a plain line every --log-every steps
//! and at the last, carrying step/total, loss and tokens/s over every processed token with the
//! scored tokens beside it; metrics.jsonl records both counts per step, and on SFT with the
//! prompt unscored the processed tokens exceed the scored ones (the "1 tok/s" report).

use serde_json::Value;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train};

#[test]
fn off_a_terminal_lines_every_log_every_with_all_and_scored_tokens() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "cli_progress");
    let base = d.join("base");
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&base), "--seed", "1"]));
    let data = d.join("sft.jsonl");
    let lines: Vec<String> = (0..8)
        .map(|i| serde_json::json!({"prompt": format!("A long question number {i} that is not scored: "), "completion": "ok"}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let out = d.join("out");
    let run = solar_train(&[
        "sft",
        "--model",
        s(&base),
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--format",
        "prompt-completion",
        "--steps",
        "5",
        "--batch",
        "2",
        "--seq-len",
        "96",
        "--log-every",
        "2",
    ]);
    ok(&run);
    let shown: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(shown.len(), 3, "steps 2, 4 and the last: {}", run.stderr);
    for (line, step) in shown.iter().zip(["step 2/5 ", "step 4/5 ", "step 5/5 "]) {
        assert!(line.starts_with(step), "{line}");
        assert!(
            line.contains(" tok/s (") && line.contains(" scored tok/s)") && line.contains("ETA"),
            "{line}"
        );
    }
    assert!(!run.stderr.contains('\r') && !run.stderr.contains("\x1b["), "terminal codes off a terminal");
    let records: Vec<Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    for r in &records {
        let (all, scored) = (r["tokens"].as_u64().unwrap(), r["scored"].as_u64().unwrap());
        assert!(all > 2 * scored && scored > 0, "prompt tokens must count as processed: {r}");
        assert_eq!(r["scored_unit"], "tokens");
        let ratio = r["tokens_per_s"].as_f64().unwrap() / r["scored_per_s"].as_f64().unwrap();
        assert!((ratio - all as f64 / scored as f64).abs() < 1e-6, "{r}");
    }
}

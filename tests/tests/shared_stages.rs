//! One implementation per stage: a DPO run the command line started, killed after step 3,
//! is finished by solar_train::pipeline::dpo (the function the demo calls) with the same
//! settings: it resumes from the CLI's checkpoint under the same identity and ends bitwise
//! equal to an uninterrupted CLI run. A setting in the identity (the DPO loss) that differs
//! is refused, naming it. And the demo's stages call pipeline's functions, not their own.

use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train, solar_train_path};
use solar_train::dpo::{DpoConfig, DpoLoss};
use solar_train::pipeline::{self, StageInput};
use solar_train::trainer::config::TrainConfig;
use solar_train::trainer::RunOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

fn setup(d: &Path) -> (PathBuf, PathBuf) {
    let base = d.join("base");
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&base), "--seed", "4"]));
    let data = d.join("pairs.jsonl");
    let lines: Vec<String> = (0..12u32)
        .map(|i| {
            let (a, b) = (i % 5, i / 5 + 1);
            serde_json::json!({"prompt": format!("Q: {a}+{b}=\nA: "), "chosen": format!("{}", a + b),
                               "rejected": format!("{}", a + b + 2)})
            .to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    (base, data)
}

fn cli_args<'a>(base: &'a Path, data: &'a Path, out: &'a Path) -> Vec<&'a str> {
    let mut a = vec!["dpo", "--model", s(base), "--data", s(data), "--out", s(out)];
    a.extend(["--steps", "6", "--batch", "2", "--seq-len", "48", "--save-every", "2", "--lr", "1e-3"]);
    a.extend(["--beta", "0.2", "--seed", "3"]);
    a
}

/// The same run as `cli_args`, as the library takes it (the CLI's defaults for the rest).
fn library_run(base: &Path, data: &Path, out: &Path, loss: DpoLoss) -> solar_train::error::Result<usize> {
    let cfg = TrainConfig {
        steps: Some(6),
        batch: 2,
        seq_len: 48,
        save_every: 2,
        lr: 1e-3,
        seed: 3,
        log_every: 0,
        ..Default::default()
    };
    let run = RunOptions {
        out: out.to_path_buf(),
        resume: true,
        copy_from: Some(base.to_path_buf()),
        ..Default::default()
    };
    let dpo = DpoConfig { beta: 0.2, loss, ..Default::default() };
    let report = pipeline::dpo(&StageInput::quiet(base, data), None, dpo, &cfg, &run)?;
    Ok(report.resumed_from.unwrap_or(0))
}

#[test]
fn a_cli_dpo_run_is_resumed_by_the_library_stage_bitwise() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "shared_stages_dpo");
    let (base, data) = setup(&d);
    let whole = d.join("whole");
    ok(&solar_train(&cli_args(&base, &data, &whole)));

    let killed = d.join("killed");
    let status = Command::new(solar_train_path())
        .args(cli_args(&base, &data, &killed))
        .env("SOLAR_FAULT", "after-step:3")
        .output()
        .unwrap()
        .status;
    assert!(!status.success(), "the fault must kill the CLI run");
    let other = d.join("other_loss");
    solar_tests::folders::copy_tree(&killed, &other);

    assert_eq!(
        library_run(&base, &data, &killed, DpoLoss::Sigmoid).unwrap(),
        2,
        "resumed from the CLI's step 2"
    );
    let read = |o: &Path| std::fs::read(o.join("model.safetensors")).unwrap();
    assert_eq!(read(&killed), read(&whole), "the library's finish differs from the CLI's whole run");

    let e = library_run(&base, &data, &other, DpoLoss::Ipo).unwrap_err().to_string();
    assert!(e.contains("cannot resume") && e.contains("loss"), "{e}");
}

#[test]
fn the_demo_stages_call_the_pipeline() {
    let src = include_str!("../../train/src/demo/stages.rs");
    for f in ["pipeline::pretrain(", "pipeline::sft(", "pipeline::dpo("] {
        assert!(src.contains(f), "the demo does not call {f}");
    }
    let cli = include_str!("../../cli/src/train_cmds.rs");
    for f in ["pipeline::pretrain(", "pipeline::sft(", "pipeline::dpo("] {
        assert!(cli.contains(f), "the CLI does not call {f}");
    }
    assert!(!src.contains("trainer::train") && !cli.contains("trainer::{train"), "a second trainer call");
}

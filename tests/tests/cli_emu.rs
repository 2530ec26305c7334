//! `--device emu` as a user runs it: every command that computes goes through the CUDA backend
//! with its kernels on the CPU emulator. A short pretrain there tracks the same run on the CPU
//! (bf16 against f32), eval and generate run on the trained model, and `bench` refuses to time
//! on the emulator (usage, exit 2) while `bench --kernels` stays what it was. Neither run claims
//! an MFU, even with a peak given in SOLAR_PEAK_TFLOPS: the emulator's speed is not a GPU's.

use serde_json::Value;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train, solar_train_env};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("cli_emu_{name}"))
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn pretrain_eval_and_generate_run_on_the_emulator_and_track_the_cpu() {
    let d = scratch("train");
    let base = d.join("base");
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&base), "--seed", "3"]));
    let data = d.join("docs.jsonl");
    let lines: Vec<String> = (0..24u32)
        .map(|i| {
            let ids: Vec<u32> = (0..(9 + i % 17)).map(|j| 3 + (i * 5 + j * 11) % 250).collect();
            serde_json::json!({ "input_ids": ids }).to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let run = |device: &str, out: &Path| {
        let r = solar_train_env(
            &[
                "pretrain",
                "--model",
                s(&base),
                "--data",
                s(&data),
                "--out",
                s(out),
                "--steps",
                "4",
                "--batch",
                "2",
                "--seq-len",
                "32",
                "--lr",
                "1e-2",
                "--warmup",
                "1",
                "--seed",
                "7",
                "--device",
                device,
            ],
            &[("SOLAR_PEAK_TFLOPS", "100")],
        );
        ok(&r);
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        for line in metrics.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert!(v.get("mfu").is_none(), "--device {device}: no MFU off a real GPU: {line}");
        }
        assert!(!r.stderr.contains("MFU"), "--device {device}: {}", r.stderr);
        r
    };
    let (cpu, emu) = (d.join("cpu"), d.join("emu"));
    run("cpu", &cpu);
    let r = run("emu", &emu);
    assert!(r.stderr.contains("--device emu: the CUDA backend on the emulator"), "{}", r.stderr);
    let (lc, le) = (losses(&cpu), losses(&emu));
    assert_eq!(lc.len(), 4);
    for (step, (c, e)) in lc.iter().zip(&le).enumerate() {
        // bf16 activations and weights' casts against f32: a few percent, no more.
        assert!((c - e).abs() <= 0.03 * c.abs() + 0.02, "step {step}: cpu loss {c}, emulator loss {e}");
    }

    let ev = solar_train(&["eval", "--model", s(&emu), "--data", s(&data), "--json", "--device", "emu"]);
    ok(&ev);
    let v: Value = serde_json::from_str(ev.stdout.trim()).unwrap();
    let ev_cpu = solar_train(&["eval", "--model", s(&emu), "--data", s(&data), "--json", "--device", "cpu"]);
    let vc: Value = serde_json::from_str(ev_cpu.stdout.trim()).unwrap();
    let (le, lc) = (v["loss"].as_f64().unwrap(), vc["loss"].as_f64().unwrap());
    assert!((le - lc).abs() <= 0.03 * lc, "eval loss: emulator {le}, cpu {lc}");

    // Greedy decoding through the KV cache on the emulator gives the CPU's tokens (the logits
    // differ only by bf16 rounding; a near-tie could flip one, so this tiny model's are checked).
    let gen = |device: &str| {
        let g = solar_train(&[
            "generate",
            "--model",
            s(&emu),
            "--prompt",
            "SOLAR",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0",
            "--ignore-eos",
            "--json",
            "--device",
            device,
        ]);
        ok(&g);
        serde_json::from_str::<Value>(g.stdout.trim()).unwrap()
    };
    let (ge, gc) = (gen("emu"), gen("cpu"));
    assert_eq!(ge["ids"].as_array().map(Vec::len), gc["ids"].as_array().map(Vec::len), "{ge} / {gc}");
}

#[test]
fn bench_refuses_to_time_on_the_emulator() {
    let r = solar_train(&["bench", "--device", "emu", "--op", "rmsnorm"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("cannot time") && r.stderr.contains("--kernels"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

//! LoRA on the CUDA backend, run by the emulator: the frozen base is held in bf16 once and the
//! adapters train in f32 masters; a short LoRA pretrain (with dropout, whose masks are drawn on
//! the host from the same stream) tracks the same run on the CPU step by step, and the trained
//! B matrices point the same way.

use serde_json::Value;
use solar_model::lora::peft_io::load_adapter;
use solar_model::Llama;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train};
use std::path::Path;

fn metrics(out: &Path, key: &str) -> Vec<f64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()[key].as_f64().unwrap())
        .collect()
}

#[test]
fn lora_pretrain_on_the_emulator_tracks_the_cpu() {
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "cli_emu_lora");
    let base = d.join("base");
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&base), "--seed", "1"]));
    let data = d.join("docs.jsonl");
    let lines: Vec<String> = (0..8u32)
        .map(|i| {
            let ids: Vec<u32> = (0..(9 + i % 7)).map(|j| 3 + (i * 5 + j * 11) % 250).collect();
            serde_json::json!({ "input_ids": ids }).to_string()
        })
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let run = |device: &str, out: &Path| {
        let args = [
            "pretrain",
            "--model",
            s(&base),
            "--data",
            s(&data),
            "--out",
            s(out),
            "--steps",
            "2",
            "--batch",
            "1",
            "--seq-len",
            "16",
            "--lr",
            "1e-2",
            "--seed",
            "7",
            "--lora-r",
            "2",
            "--lora-targets",
            "q_proj,down_proj",
            "--lora-dropout",
            "0.1",
            "--device",
            device,
        ];
        ok(&solar_train(&args));
    };
    let (cpu, emu) = (d.join("cpu"), d.join("emu"));
    run("cpu", &cpu);
    run("emu", &emu);
    for key in ["loss", "grad_norm"] {
        for (step, (c, e)) in metrics(&cpu, key).iter().zip(metrics(&emu, key)).enumerate() {
            assert!((c - e).abs() <= 0.03 * c.abs() + 1e-3, "step {step}: cpu {key} {c}, emulator {e}");
        }
    }
    // B starts at zero, so it is all update: the emulator's points where the CPU's does. (Adam
    // moves every element by about lr whatever its gradient's size, so an element whose tiny
    // gradient bf16 flips moves the other way: compare directions, not elements.)
    let cfg = Llama::load_config(&base).unwrap();
    let bs = |dir: &Path| -> Vec<f64> {
        let lora = load_adapter(dir, &cfg).unwrap();
        let named: Vec<(String, Vec<f32>)> =
            lora.named_params().map(|(n, t)| (n.to_string(), t.to_vec::<f32>().unwrap())).collect();
        named
            .into_iter()
            .filter(|(n, _)| n.ends_with("lora_B.weight"))
            .flat_map(|(_, v)| v)
            .map(f64::from)
            .collect()
    };
    let (x, y) = (bs(&cpu), bs(&emu));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    assert!(dot(&y, &y) > 0.0, "the emulator run trained B off zero");
    let cos = dot(&x, &y) / (dot(&x, &x) * dot(&y, &y)).sqrt();
    assert!(cos > 0.9, "cpu and emulator B updates point apart: cosine {cos}");
}

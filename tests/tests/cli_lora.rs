//! LoRA training from the command line: `pretrain`, `sft` and `dpo` with `--lora-r` write PEFT's
//! adapter folder (adapter_config.json + adapter_model.safetensors, no model), train only the
//! adapters (B moves off zero, the base on disk is untouched), and a run killed after a
//! checkpoint resumes to adapters bitwise equal to an uninterrupted run's, dropout included;
//! one thread gives the adapters every core gives.
//! Bad LoRA flags are usage errors (exit 2) before any work.

use solar_model::lora::peft_io::{load_adapter, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use solar_model::Llama;
use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train, solar_train_path};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("cli_lora_{name}"))
}

fn base(d: &Path) -> PathBuf {
    let base = d.join("base");
    ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&base), "--seed", "4"]));
    base
}

fn write_lines(path: &Path, lines: Vec<serde_json::Value>) {
    let text: Vec<String> = lines.iter().map(|v| v.to_string()).collect();
    std::fs::write(path, text.join("\n")).unwrap();
}

/// Arithmetic prompts with a right and a wrong answer: SFT examples and DPO pairs.
fn data(d: &Path) -> (PathBuf, PathBuf) {
    let (sft, pairs) = (d.join("sft.jsonl"), d.join("pairs.jsonl"));
    let qa = |i: u32| ((i % 5), (i / 5 + 1));
    write_lines(
        &sft,
        (0..12)
            .map(|i| {
                let (a, b) = qa(i);
                serde_json::json!({"prompt": format!("Q: {a}+{b}=\nA: "), "completion": format!("{}", a + b)})
            })
            .collect(),
    );
    write_lines(
        &pairs,
        (0..12)
            .map(|i| {
                let (a, b) = qa(i);
                serde_json::json!({"prompt": format!("Q: {a}+{b}=\nA: "), "chosen": format!("{}", a + b),
                               "rejected": format!("{}", a + b + 2)})
            })
            .collect(),
    );
    (sft, pairs)
}

fn stage_args(stage: &str, base: &Path, data: &Path, out: &Path) -> Vec<String> {
    let mut a: Vec<String> = [stage, "--model", s(base), "--data", s(data), "--out", s(out)]
        .iter()
        .map(|x| x.to_string())
        .collect();
    let rest = [
        "--steps",
        "6",
        "--batch",
        "2",
        "--seq-len",
        "48",
        "--save-every",
        "2",
        "--lr",
        "1e-2",
        "--seed",
        "3",
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--lora-dropout",
        "0.1",
        "--lora-targets",
        "all-linear",
        "--rslora",
    ];
    a.extend(rest.iter().map(|x| x.to_string()));
    match stage {
        "sft" => a.extend(["--format", "prompt-completion"].map(String::from)),
        "dpo" => a.extend(["--beta", "0.2"].map(String::from)),
        _ => {}
    }
    a
}

fn run(args: &[String]) -> solar_tests::cli::Run {
    solar_train(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn lora_sft_and_dpo_write_peft_adapters_and_resume_bitwise_after_a_kill() {
    let d = scratch("stages");
    let base = base(&d);
    let base_weights = std::fs::read(base.join("model.safetensors")).unwrap();
    let (sft, pairs) = data(&d);
    for (stage, data) in [("sft", &sft), ("dpo", &pairs)] {
        let whole = d.join(format!("{stage}_whole"));
        let r = run(&stage_args(stage, &base, data, &whole));
        ok(&r);
        assert!(whole.join(ADAPTER_CONFIG).is_file() && whole.join(ADAPTER_WEIGHTS).is_file(), "{stage}");
        assert!(!whole.join("model.safetensors").exists(), "{stage}: a LoRA run writes no model");
        assert!(whole.join("tokenizer.json").is_file(), "{stage}: the tokenizer travels with the adapter");
        let cfg = Llama::load_config(&base).unwrap();
        let lora = load_adapter(&whole, &cfg).unwrap();
        assert_eq!(lora.spec.r, 4);
        assert_eq!(lora.spec.targets.len(), 7);
        assert!(lora.spec.rslora);
        let moved = lora
            .named_params()
            .filter(|(n, _)| n.ends_with("lora_B.weight"))
            .all(|(_, t)| t.to_vec::<f32>().unwrap().iter().any(|&x| x != 0.0));
        assert!(moved, "{stage}: every B trained off zero");

        let out = d.join(format!("{stage}_killed"));
        let a = stage_args(stage, &base, data, &out);
        let status = Command::new(solar_train_path())
            .args(&a)
            .env("SOLAR_FAULT", "after-step:3")
            .output()
            .unwrap()
            .status;
        assert!(!status.success(), "{stage}: the fault must kill the run");
        assert!(out.join("checkpoints/step-000002/adapter").join(ADAPTER_WEIGHTS).is_file());
        assert!(!out.join("checkpoints/step-000002/model").exists(), "{stage}: no base copy in checkpoints");
        // AdamW state for the adapters only: m and v of each of the 2 layers x 7 targets x (A, B).
        let opt = std::fs::read(out.join("checkpoints/step-000002/optimizer.safetensors")).unwrap();
        let names = safetensors::SafeTensors::deserialize(&opt).unwrap().names().len();
        let all_lora =
            safetensors::SafeTensors::deserialize(&opt).unwrap().names().iter().all(|n| n.contains(".lora_"));
        assert!(all_lora && names == 2 * 2 * 7 * 2, "{stage}: {names} moments, all of adapters: {all_lora}");
        let mut resume = a.clone();
        resume.push("--resume".into());
        let r = run(&resume);
        ok(&r);
        assert!(r.stderr.contains("resuming from step 2"), "{stage}: {}", r.stderr);
        assert_eq!(
            std::fs::read(out.join(ADAPTER_WEIGHTS)).unwrap(),
            std::fs::read(whole.join(ADAPTER_WEIGHTS)).unwrap(),
            "{stage}: resumed adapters differ from the uninterrupted run's"
        );
    }
    assert_eq!(std::fs::read(base.join("model.safetensors")).unwrap(), base_weights, "the base is untouched");
}

#[test]
fn pretrain_with_lora_trains_only_adapters_and_a_full_checkpoint_does_not_resume_as_lora() {
    let d = scratch("pretrain");
    let base = base(&d);
    let docs = d.join("docs.jsonl");
    write_lines(
        &docs,
        (0..16u32)
            .map(|i| {
                let ids: Vec<u32> = (0..(6 + i % 9)).map(|j| 3 + (i * 7 + j * 13) % 200).collect();
                serde_json::json!({ "input_ids": ids })
            })
            .collect(),
    );
    let out = d.join("pt");
    let mut a = stage_args("pretrain", &base, &docs, &out);
    a.truncate(a.len() - 5); // r 4, alpha 8; q_proj,v_proj by default, no dropout, no rslora
    ok(&run(&a));
    let lora = load_adapter(&out, &Llama::load_config(&base).unwrap()).unwrap();
    assert_eq!(lora.spec.target_names(), vec!["q_proj", "v_proj"]);
    assert_eq!(lora.spec.alpha, 8.0);
    // The same seed gives bitwise the same adapters on one thread as on every core.
    let one = d.join("pt_one_thread");
    let mut t = a.clone();
    t[6] = s(&one).to_string();
    t.extend(["--threads".to_string(), "1".to_string()]);
    ok(&run(&t));
    assert_eq!(
        std::fs::read(one.join(ADAPTER_WEIGHTS)).unwrap(),
        std::fs::read(out.join(ADAPTER_WEIGHTS)).unwrap()
    );

    // A rank above a projection's smaller dimension is refused before OUT is made.
    let big = d.join("big");
    let mut b = stage_args("pretrain", &base, &docs, &big);
    let at = b.iter().position(|x| x == "--lora-r").unwrap() + 1;
    b[at] = "100".into();
    let r = run(&b);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("--lora-r 100 exceeds") && !big.exists(), "{}", r.stderr);

    // A full fine-tune's checkpoint is not resumed by a LoRA run.
    let full = d.join("full");
    let mut f = stage_args("pretrain", &base, &docs, &full);
    f.truncate(f.len() - 9); // no LoRA flags at all
    let status =
        Command::new(solar_train_path()).args(&f).env("SOLAR_FAULT", "after-step:3").output().unwrap().status;
    assert!(!status.success());
    let mut resume = stage_args("pretrain", &base, &docs, &full);
    resume.push("--resume".into());
    let r = run(&resume);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("full fine-tune"), "{}", r.stderr);
}

#[test]
fn bad_lora_flags_are_usage_errors_before_any_work() {
    let d = scratch("flags");
    let missing = d.join("no-such-model");
    let out = d.join("out");
    let cases: [(&[&str], &str); 8] = [
        (&["--lora-r", "0"], "--lora-r"),
        (&["--lora-r", "4", "--lora-alpha", "NaN"], "--lora-alpha"),
        (&["--lora-r", "4", "--lora-alpha=-1"], "--lora-alpha"),
        (&["--lora-r", "4", "--lora-dropout", "1"], "--lora-dropout"),
        (&["--lora-r", "4", "--lora-dropout", "NaN"], "--lora-dropout"),
        (&["--lora-r", "4", "--lora-targets", "q_proj,lm_head"], "lm_head"),
        (&["--lora-alpha", "16"], "need --lora-r"),
        (&["--lora-r", "4", "--lora-dropout", "0.1", "--recompute"], "--recompute"),
    ];
    for (extra, says) in cases {
        let mut a = vec!["sft", "--model", s(&missing), "--data", s(&missing), "--out", s(&out)];
        a.extend_from_slice(extra);
        let r = solar_train(&a);
        assert_eq!(r.code, Some(2), "{extra:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{extra:?}: {}", r.stderr);
        assert!(!out.exists(), "{extra:?}: nothing may be created");
    }
}

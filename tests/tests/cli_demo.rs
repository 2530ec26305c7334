//! `solar-train demo --quick` end to end: every stage runs through the real code paths and the
//! report is complete: report.json lists every model with every metric, report.md shows the
//! table, the claims and the images, the images are PNGs, and stdout holds the table.

use serde_json::Value;
use solar_tests::cli::solar_train;
use std::path::PathBuf;

#[test]
fn quick_demo_writes_a_complete_report() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_demo_quick");
    let _ = std::fs::remove_dir_all(&out);
    let run = solar_train(&["demo", "--quick", "--out", out.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    for stage in ["1/7 base", "2/7 upscale", "3/7 pretrain", "4/7 sft", "5/7 dpo", "6/7 merge", "7/7 eval"] {
        assert!(run.stderr.contains(stage), "no progress line for {stage}: {}", run.stderr);
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let stages = report["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "base",
            "base_pretrained",
            "upscaled",
            "upscaled_pretrained",
            "sft_add",
            "sft_reverse",
            "sft_both",
            "dpo",
            "merge_average",
            "merge_slerp"
        ]
    );
    for s in stages {
        let m = s["metrics"].as_object().unwrap();
        for k in
            ["heldout_loss", "add_em", "reverse_em", "add_choice_acc", "reverse_choice_acc", "pair_pref_acc"]
        {
            let v = m[k].as_f64().unwrap_or_else(|| panic!("{}: {k} missing", s["stage"]));
            assert!(v.is_finite(), "{}: {k} = {v}", s["stage"]);
        }
        assert!(out.join(s["model"].as_str().unwrap()).join("model.safetensors").exists());
    }
    assert_eq!(report["claims"].as_array().unwrap().len(), 4);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in ["| model", "merge_slerp", "holds", "loss_pretrain.png", "layers_upscaled.png"] {
        assert!(md.contains(part), "report.md lacks {part}");
    }
    for img in ["loss_pretrain.png", "loss_sft.png", "loss_dpo.png", "layers_upscaled.png"] {
        let bytes = std::fs::read(out.join(img)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{img} is not a PNG");
    }
    assert!(run.stdout.contains("| upscaled_pretrained"), "{}", run.stdout);
}

//! `solar-train demo --quick` end to end: every stage runs through the real code paths and the
//! report is complete: report.json lists every model with every metric, report.md shows the
//! table, the claims and the images, the images are SVG charts, and stdout holds the table.
//! The demo's folder is replaced only with --overwrite and only whole, even when killed.

use serde_json::Value;
use solar_tests::cli::{scratch_dir, solar_train, solar_train_path};
use solar_tests::folders::{hidden, tree};
use solar_tests::setup::assert_refused;
use std::io::BufRead;
use std::process::{Command, Stdio};

#[test]
fn quick_demo_writes_a_complete_report() {
    // OUT is built beside itself and swapped in whole: an existing OUT is refused without
    // --overwrite, and a run killed half way leaves it exactly as it was.
    let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "cli_demo");
    let out = d.join("quick");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("notes.md"), "an earlier demo").unwrap();
    let old = tree(&out);
    let args = ["demo", "--quick", "--out", out.to_str().unwrap()];
    assert_refused(&solar_train(&args), 1, &["quick", "already exists"]);
    let mut child = Command::new(solar_train_path())
        .args(args)
        .arg("--overwrite")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines().map_while(|l| l.ok());
    assert!(lines.any(|l| l.contains("3/7 pretrain")), "the demo never reached its third stage");
    child.kill().unwrap(); // SIGKILL, several models into the run
    child.wait().unwrap();
    assert!(tree(&out) == old, "a killed demo leaves OUT as it was");
    assert!(hidden(&d).iter().any(|n| n.starts_with(".quick.tmp-")), "{:?}", hidden(&d));

    let mut args = args.to_vec();
    args.push("--overwrite");
    let run = solar_train(&args);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(!out.join("notes.md").exists(), "the old OUT was replaced whole");
    assert_eq!(hidden(&d), Vec::<String>::new(), "the killed run's staging folder is reclaimed");
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
        // Every accuracy has its 95% interval over at least 200 held-out examples.
        for k in ["add_em", "reverse_em", "add_choice_acc", "reverse_choice_acc", "pair_pref_acc"] {
            let i = &s["intervals"][k];
            let (v, lo, hi) =
                (i["value"].as_f64().unwrap(), i["lo"].as_f64().unwrap(), i["hi"].as_f64().unwrap());
            assert!(i["n"].as_u64().unwrap() >= 200, "{}: {k}: {i}", s["stage"]);
            assert!(lo <= v && v <= hi && hi - lo < 0.15 && hi - lo > 0.0, "{}: {k}: {i}", s["stage"]);
            assert_eq!(v, m[k].as_f64().unwrap(), "{}: {k}", s["stage"]);
        }
    }
    let claims = report["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 4);
    for c in claims {
        let v = c["verdict"].as_str().unwrap();
        assert!(["holds", "does not hold", "not resolved at this size"].contains(&v), "{c}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in
        ["| model", "merge_slerp", "95% Wilson interval", "](loss_pretrain.svg)", "](layers_upscaled.svg)"]
    {
        assert!(md.contains(part), "report.md lacks {part}");
    }
    for img in
        ["loss_pretrain.svg", "loss_continued.svg", "loss_sft.svg", "loss_dpo.svg", "layers_upscaled.svg"]
    {
        let svg = std::fs::read_to_string(out.join(img)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{img} is not an SVG");
        let axis = if img.starts_with("loss") { "optimizer step" } else { "cosine similarity" };
        assert!(svg.contains(axis), "{img} has no {axis:?} axis label");
    }
    assert!(run.stdout.contains("| upscaled_pretrained"), "{}", run.stdout);
}

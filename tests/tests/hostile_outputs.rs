//! Hostile: kill a save at every filesystem step, for every save path, and check the output
//! folder after each kill. Protects issue 17's first promise: at every instant OUT holds either
//! its previous complete content or the new complete result, never a mix and never nothing;
//! training in place keeps the tokenizer files, generation config, chat template and README;
//! and what each killed run left beside OUT is reclaimed by the next run.
//!
//! `SOLAR_FAULT_AT=N` makes solar-train abort (as SIGKILL would: no cleanup) just before the Nth
//! filesystem step of its saves; each scenario runs N = 1, 2, ... until a run gets through.

use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train, solar_train_path};
use solar_tests::folders::{copy_tree, hidden, names, tree};
use solar_tests::setup::{assert_refused, tiny_model, tiny_model_and_docs};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

type Tree = BTreeMap<String, Vec<u8>>;

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("hostile_outputs_{name}"))
}

/// A tiny base model with the files a real model folder carries besides its weights, a second
/// model to be overwritten, and a JSONL of token-id documents.
fn setup(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (base, data) = tiny_model_and_docs(d);
    std::fs::write(base.join("chat_template.jinja"), "{{ messages }}").unwrap();
    std::fs::write(base.join("README.md"), "# a model card\n").unwrap();
    (base, tiny_model(d, "other", 7), data)
}

fn pretrain(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["pretrain", "--model", s(model), "--data", s(data), "--out", s(out)]
        .iter()
        .map(|x| x.to_string())
        .collect();
    a.extend(["--steps", "2", "--batch", "2", "--seq-len", "32", "--seed", "5"].map(String::from));
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

/// One save path: the command, its output folder, how to restore OUT's starting content, and
/// which contents count as "the old, complete OUT".
struct Scenario<'a> {
    name: &'a str,
    args: Vec<String>,
    out: PathBuf,
    reset: &'a dyn Fn(&Path),
    is_old: &'a dyn Fn(&Tree) -> bool,
}

/// Runs the scenario killed at step 1, 2, ... until a run completes; after each kill OUT must
/// be the old content or exactly the uninterrupted run's result. Returns that result.
fn kill_at_every_step(sc: &Scenario) -> Tree {
    let parent = sc.out.parent().unwrap().to_path_buf();
    (sc.reset)(&sc.out);
    assert!((sc.is_old)(&tree(&sc.out)), "{}: the starting state must count as old", sc.name);
    let args: Vec<&str> = sc.args.iter().map(String::as_str).collect();
    ok(&solar_train(&args));
    let new = tree(&sc.out);
    let result = new.contains_key("config.json") || new.contains_key("adapter_config.json");
    assert!(result && !(sc.is_old)(&new), "{}: {:?}", sc.name, names(&new));
    let mut n = 1;
    loop {
        (sc.reset)(&sc.out);
        let run = Command::new(solar_train_path()).args(&args).env("SOLAR_FAULT_AT", n.to_string()).output();
        let run = run.unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        let now = tree(&sc.out);
        if run.status.success() {
            assert_eq!(now, new, "{}: the run that got through differs from the uninterrupted one", sc.name);
            break;
        }
        assert!(
            run.status.code().is_none() && stderr.contains(&format!("aborting before step {n}:")),
            "{}: step {n}: expected the fault to kill the run: {:?} {stderr}",
            sc.name,
            run.status
        );
        assert!(
            now == new || (sc.is_old)(&now),
            "{}: killed before step {n}: OUT is neither the old content nor the new result: {:?}\n{stderr}",
            sc.name,
            names(&now)
        );
        n += 1;
        assert!(n < 400, "{}: the save never completed", sc.name);
    }
    assert!(n > 8, "{}: only {n} steps: the fault hook is not reaching the save", sc.name);
    // Every killed run left temporaries and a lock file beside OUT; the next run reclaimed them.
    assert_eq!(hidden(&parent), Vec::<String>::new(), "{}: leftovers beside OUT", sc.name);
    assert_eq!(
        hidden(&sc.out.join("checkpoints")),
        Vec::<String>::new(),
        "{}: leftovers in checkpoints",
        sc.name
    );
    new
}

fn remove(out: &Path) {
    let _ = std::fs::remove_dir_all(out);
}

/// A run in progress has no model files in OUT: only its metrics and (complete) checkpoints.
fn only_run_files(t: &Tree, checkpoints: &Tree) -> bool {
    t.iter().all(|(k, v)| match k.split_once('/') {
        None => k == "metrics.jsonl",
        Some(("checkpoints", "")) => true,
        // A checkpoint being staged or removed is hidden: not a checkpoint to any reader.
        Some(("checkpoints", rest)) if rest.starts_with('.') => true,
        Some(("checkpoints", rest)) => {
            // Each visible checkpoint is exactly the uninterrupted run's checkpoint of that step.
            let step = rest.split('/').next().unwrap_or_default();
            let whole = checkpoints.iter().filter(|(c, _)| c.starts_with(&format!("checkpoints/{step}/")));
            let seen = t.iter().filter(|(c, _)| c.starts_with(&format!("checkpoints/{step}/")));
            checkpoints.get(k) == Some(v) && whole.eq(seen)
        }
        _ => false,
    })
}

#[test]
fn the_final_model_of_a_fresh_run_appears_whole() {
    let d = scratch("final");
    let (base, _, data) = setup(&d);
    let out = d.join("place/out");
    let sc = Scenario {
        name: "final model",
        args: pretrain(&base, &data, &out, &[]),
        out,
        reset: &remove,
        is_old: &|t| only_run_files(t, &Tree::new()),
    };
    kill_at_every_step(&sc);
}

#[test]
fn checkpoints_appear_whole_and_old_ones_go_whole() {
    let d = scratch("checkpoint");
    let (base, _, data) = setup(&d);
    let out = d.join("place/out");
    // Every checkpoint of the run (keep does not change their content).
    ok(&solar_train(
        &pretrain(&base, &data, &out, &["--steps", "3", "--save-every", "1", "--keep", "9"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    let all = tree(&out);
    assert!(all.contains_key("checkpoints/step-000002/trainer_state.json"), "{:?}", names(&all));
    let sc = Scenario {
        name: "checkpoint",
        args: pretrain(&base, &data, &out, &["--steps", "3", "--save-every", "1", "--keep", "1"]),
        out,
        reset: &remove,
        is_old: &|t| only_run_files(t, &all),
    };
    let new = kill_at_every_step(&sc);
    assert!(!new.contains_key("checkpoints/step-000001/"), "keep 1 pruned the older checkpoint");
}

#[test]
fn a_lora_runs_checkpoints_and_final_adapter_appear_whole() {
    let d = scratch("lora");
    let (base, _, data) = setup(&d);
    let out = d.join("place/out");
    let lora = ["--lora-r", "2", "--lora-targets", "all-linear", "--save-every", "1", "--keep", "9"];
    ok(&solar_train(&pretrain(&base, &data, &out, &lora).iter().map(String::as_str).collect::<Vec<_>>()));
    let all = tree(&out);
    assert!(
        all.contains_key("checkpoints/step-000001/adapter/adapter_model.safetensors"),
        "{:?}",
        names(&all)
    );
    let sc = Scenario {
        name: "lora",
        args: pretrain(&base, &data, &out, &lora),
        out,
        reset: &remove,
        is_old: &|t| only_run_files(t, &all),
    };
    let new = kill_at_every_step(&sc);
    assert!(new.contains_key("adapter_model.safetensors") && !new.contains_key("model.safetensors"));
}

#[test]
fn overwrite_replaces_the_old_model_only_when_the_new_one_is_complete() {
    let d = scratch("overwrite");
    let (base, other, data) = setup(&d);
    let old = tree(&other);
    let out = d.join("place/out");
    let sc = Scenario {
        name: "overwrite",
        args: pretrain(&base, &data, &out, &["--overwrite", "--save-every", "1"]),
        out,
        reset: &|o| {
            remove(o);
            copy_tree(&other, o);
        },
        is_old: &|t| *t == old,
    };
    kill_at_every_step(&sc);
}

#[test]
fn training_in_place_keeps_the_model_folder_whole_and_its_other_files() {
    let d = scratch("in_place");
    let (base, _, data) = setup(&d);
    let old = tree(&base);
    let out = d.join("place/model");
    let sc = Scenario {
        name: "in place",
        args: pretrain(&out, &data, &out, &["--overwrite", "--save-every", "1"]),
        out,
        reset: &|o| {
            remove(o);
            copy_tree(&base, o);
        },
        is_old: &|t| *t == old,
    };
    let new = kill_at_every_step(&sc);
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
        "README.md",
    ] {
        assert_eq!(new.get(f), old.get(f), "{f} must survive training in place");
    }
    assert_ne!(new.get("model.safetensors"), old.get("model.safetensors"), "the weights were trained");
    assert!(new.contains_key("metrics.jsonl") && new.contains_key("checkpoints/step-000001/"));
}

#[test]
fn upscale_and_init_overwrite_replace_a_model_whole() {
    let d = scratch("upscale");
    let (base, other, _) = setup(&d);
    let old = tree(&other);
    let out = d.join("place/out");
    let reset = |o: &Path| {
        remove(o);
        copy_tree(&other, o);
    };
    let upscale = ["upscale", "--model", s(&base), "--out", s(&out), "--remove", "1", "--overwrite"];
    let mut args: Vec<String> = upscale.iter().map(|x| x.to_string()).collect();
    args.extend(["--max-shard-size", "150KB"].map(String::from));
    let sc = Scenario { name: "upscale", args, out: out.clone(), reset: &reset, is_old: &|t| *t == old };
    let new = kill_at_every_step(&sc);
    assert!(new.contains_key("model.safetensors.index.json"), "sharded: {:?}", names(&new));
    let init = ["init", "--preset", "tiny", "--out", s(&out), "--seed", "9", "--overwrite"];
    let args = init.iter().map(|x| x.to_string()).collect();
    kill_at_every_step(&Scenario {
        name: "init",
        args,
        out: out.clone(),
        reset: &reset,
        is_old: &|t| *t == old,
    });
}

#[test]
fn merge_with_and_without_overwrite_puts_the_merged_model_in_place_whole() {
    let d = scratch("merge");
    let (base, other, _) = setup(&d);
    let old = tree(&other);
    let out = d.join("place/out");
    let merge = ["merge", "--method", "linear", "--models", s(&base), s(&other), "--out", s(&out)];
    let args: Vec<String> = merge.iter().map(|x| x.to_string()).collect();
    let fresh = kill_at_every_step(&Scenario {
        name: "merge",
        args: args.clone(),
        out: out.clone(),
        reset: &remove,
        is_old: &|t| t.is_empty(),
    });
    let mut args = args;
    args.push("--overwrite".into());
    let replaced = kill_at_every_step(&Scenario {
        name: "merge --overwrite",
        args,
        out: out.clone(),
        reset: &|o| {
            remove(o);
            copy_tree(&other, o);
        },
        is_old: &|t| *t == old,
    });
    assert_eq!(fresh, replaced, "the same merge whether or not it replaced a folder");
}

/// eval --task layers writing its matrix (--out) and heatmap (--image), with `extra` flags.
fn eval_layers(model: &Path, data: &Path, out: &Path, image: &Path, extra: &[&str]) -> Vec<String> {
    let a = ["eval", "--model", s(model), "--data", s(data), "--task", "layers", "--seq-len", "32"];
    let mut a: Vec<String> = a.iter().map(|x| x.to_string()).collect();
    a.extend(["--out", s(out), "--image", s(image)].map(String::from));
    a.extend(extra.iter().map(|x| x.to_string()));
    a
}

fn refused(args: &[String], names: &[&str]) {
    assert_refused(&solar_train(&args.iter().map(String::as_str).collect::<Vec<_>>()), 1, names);
}

#[test]
fn single_file_outputs_keep_existing_files_and_never_replace_inputs() {
    let d = scratch("files");
    let (base, _, data) = setup(&d);
    let (out, image) = (d.join("sim.json"), d.join("sim.png"));
    std::fs::write(&out, "an earlier result").unwrap();
    refused(&eval_layers(&base, &data, &out, &image, &[]), &["sim.json", "already exists", "--overwrite"]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "an earlier result");
    assert!(!image.exists(), "refused before any work: no heatmap either");
    ok(&solar_train(
        &eval_layers(&base, &data, &out, &image, &["--overwrite"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    let matrix: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(matrix["layers"], 2, "{matrix}");
    assert!(std::fs::read(&image).unwrap().starts_with(b"\x89PNG"));

    // The data and the model's own files, however spelled, are never outputs, --overwrite or not.
    let inputs = tree(&d);
    let spelled = d.join("base/../docs.jsonl");
    for (target, what) in [
        (data.clone(), "is the input"),
        (spelled, "is the input"),
        (base.join("config.json"), "is a file of the input model folder"),
        (base.join("tokenizer.json"), "is a file of the input model folder"),
    ] {
        let fresh = d.join("fresh.json");
        refused(&eval_layers(&base, &data, &target, &fresh, &["--overwrite"]), &[what, "refusing"]);
        refused(&eval_layers(&base, &data, &fresh, &target, &["--overwrite"]), &[what, "refusing"]);
        assert!(tree(&d) == inputs, "{}: an input changed", target.display());
    }
    // One file as both outputs: spelled alike a usage error (2), spelled apart a runtime one.
    let twice = eval_layers(&base, &data, &out, &out, &["--overwrite"]);
    let twice: Vec<&str> = twice.iter().map(String::as_str).collect();
    assert_refused(&solar_train(&twice), 2, &["--out and --image name the same file"]);
    let spelled = d.join("base/../sim.json");
    refused(&eval_layers(&base, &data, &out, &spelled, &["--overwrite"]), &["both --out and --image"]);
}

#[test]
fn single_file_outputs_are_old_or_new_after_a_kill_at_every_step() {
    let d = scratch("files_kill");
    let (base, _, data) = setup(&d);
    let place = d.join("place");
    std::fs::create_dir(&place).unwrap();
    let (out, image) = (place.join("sim.json"), place.join("sim.png"));
    let reset = || {
        std::fs::write(&out, "old matrix").unwrap();
        std::fs::write(&image, "old image").unwrap();
    };
    let args = eval_layers(&base, &data, &out, &image, &["--overwrite"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    reset();
    ok(&solar_train(&args));
    let new = (std::fs::read(&out).unwrap(), std::fs::read(&image).unwrap());
    let mut n = 1;
    loop {
        reset();
        let run = Command::new(solar_train_path()).args(&args).env("SOLAR_FAULT_AT", n.to_string()).output();
        let run = run.unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        let (o, i) = (std::fs::read(&out).unwrap(), std::fs::read(&image).unwrap());
        if run.status.success() {
            assert_eq!((o, i), new, "the run that got through differs from the uninterrupted one");
            break;
        }
        assert!(
            run.status.code().is_none() && stderr.contains(&format!("aborting before step {n}:")),
            "{stderr}"
        );
        assert!(o == b"old matrix" || o == new.0, "killed before step {n}: --out is a mix: {stderr}");
        assert!(i == b"old image" || i == new.1, "killed before step {n}: --image is a mix: {stderr}");
        n += 1;
        assert!(n < 40, "the writes never completed");
    }
    // Two files, each created, synced, renamed into place and its folder synced.
    assert_eq!(n, 9, "steps of two single-file writes");
    assert_eq!(hidden(&place), Vec::<String>::new(), "temporaries of killed writes are reclaimed");
}

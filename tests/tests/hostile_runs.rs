//! Hostile: runs that collide, get interrupted or die. Protects issue 17's second and third
//! promises: one writer per OUT (a second run is refused naming the holder; a dead holder's
//! lock is taken over), SIGINT/SIGTERM stop a run cleanly with 130/143 leaving OUT complete or
//! untouched and no temporaries, and temporaries of killed runs are reclaimed by the next run.

use solar_tests::cli::{assert_ok as ok, path_str as s, scratch_dir, solar_train, solar_train_path};
use solar_tests::folders::{copy_tree, hidden, names, tree};
use solar_tests::setup::{assert_refused, tiny_model_and_docs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("hostile_runs_{name}"))
}

fn pretrain<'a>(base: &'a Path, data: &'a Path, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    let (b, d, o) = (s(base), s(data), s(out));
    vec![
        "pretrain",
        "--model",
        b,
        "--data",
        d,
        "--out",
        o,
        "--steps",
        steps,
        "--batch",
        "2",
        "--seq-len",
        "32",
    ]
}

/// Starts a long run in the background and waits until `ready` holds.
fn start(args: &[&str], ready: impl Fn() -> bool) -> Child {
    let mut child = Command::new(solar_train_path()).args(args).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(child.try_wait().unwrap().is_none(), "the background run ended early");
        assert!(Instant::now() < deadline, "the background run never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Lines of metrics.jsonl in `dir`.
fn steps_done(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(0, |t| t.lines().count())
}

/// The hidden working folder of an --overwrite run beside `out`.
fn work_dir(out: &Path) -> Option<PathBuf> {
    let name = out.file_name()?.to_string_lossy().into_owned();
    let parent = out.parent()?;
    hidden(parent).into_iter().find(|n| n.starts_with(&format!(".{name}.run-"))).map(|n| parent.join(n))
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill").args(["-s", sig, &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -s {sig}");
}

#[test]
fn a_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over() {
    let d = scratch("lock");
    let (base, data) = tiny_model_and_docs(&d);
    let out = d.join("place/out");
    let mut first = start(&pretrain(&base, &data, &out, "1000000"), || steps_done(&out) >= 1);
    let pid = first.id();
    let mut second = pretrain(&base, &data, &out, "2");
    second.push("--overwrite");
    let holder = format!("process {pid}");
    assert_refused(&solar_train(&second), 1, &[&holder]);
    // Any command writing the same folder is refused, not only trainers.
    let run =
        solar_train(&["upscale", "--model", s(&base), "--out", s(&out), "--remove", "1", "--overwrite"]);
    assert_refused(&run, 1, &[&holder]);
    first.kill().unwrap(); // SIGKILL: no cleanup, the lock file stays
    first.wait().unwrap();
    assert!(hidden(&d.join("place")).contains(&".out.lock".to_string()));
    ok(&solar_train(&second));
    assert!(tree(&out).contains_key("model.safetensors"));
    assert_eq!(hidden(&d.join("place")), Vec::<String>::new(), "the taken-over lock is released");
}

#[test]
fn sigterm_during_an_overwrite_leaves_the_old_model_and_no_temporaries() {
    let d = scratch("sigterm");
    let (base, data) = tiny_model_and_docs(&d);
    let out = d.join("place/out");
    copy_tree(&base, &out);
    let old = tree(&out);
    let mut a = pretrain(&base, &data, &out, "1000000");
    a.extend(["--overwrite", "--save-every", "1"]);
    let child = start(&a, || work_dir(&out).is_some_and(|w| steps_done(&w) >= 2));
    signal(&child, "TERM");
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("SIGTERM") && stderr.contains("unchanged"), "{stderr}");
    assert!(tree(&out) == old, "OUT must be untouched: {:?}", names(&tree(&out)));
    assert_eq!(hidden(&d.join("place")), Vec::<String>::new(), "working folder and lock removed");
}

#[test]
fn sigint_during_a_fresh_run_keeps_complete_checkpoints_to_resume_from() {
    let d = scratch("sigint");
    let (base, data) = tiny_model_and_docs(&d);
    let out = d.join("place/out");
    let mut a = pretrain(&base, &data, &out, "1000000");
    a.extend(["--save-every", "1"]);
    let child = start(&a, || steps_done(&out) >= 3);
    signal(&child, "INT");
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("SIGINT") && stderr.contains("--resume"), "{stderr}");
    assert_eq!(hidden(&d.join("place")), Vec::<String>::new());
    assert_eq!(hidden(&out.join("checkpoints")), Vec::<String>::new(), "no half-staged checkpoint");
    let t = tree(&out);
    assert!(!t.contains_key("model.safetensors"), "no final model from an interrupted run");
    assert!(t.keys().any(|k| k.ends_with("trainer_state.json")), "{:?}", names(&t));
}

#[test]
fn a_checkpoint_killed_half_staged_is_reclaimed_by_the_resuming_run() {
    let d = scratch("reclaim");
    let (base, data) = tiny_model_and_docs(&d);
    let out = d.join("place/out");
    let mut a = pretrain(&base, &data, &out, "4");
    a.extend(["--save-every", "1"]);
    // Step 4 of the saves is inside the first checkpoint's staging folder.
    let killed = Command::new(solar_train_path()).args(&a).env("SOLAR_FAULT_AT", "4").output().unwrap();
    assert!(killed.status.code().is_none(), "{}", String::from_utf8_lossy(&killed.stderr));
    let left = hidden(&out.join("checkpoints"));
    assert!(left.iter().any(|n| n.starts_with(".step-000001.tmp-")), "{left:?}");
    a.push("--resume");
    let run = solar_train(&a);
    ok(&run);
    assert!(run.stderr.contains("reclaimed"), "{}", run.stderr);
    assert_eq!(hidden(&out.join("checkpoints")), Vec::<String>::new());
    assert_eq!(hidden(&d.join("place")), Vec::<String>::new());
}

/// Model-shape keys (`model.*`) of the checkpoint's trainer_state.json at `dir`.
fn model_keys(state: &serde_json::Value) -> Vec<String> {
    state["identity"].as_object().unwrap().keys().filter(|k| k.starts_with("model.")).cloned().collect()
}

#[test]
fn resume_with_another_model_is_refused_naming_the_checkpoint_and_what_differs() {
    let d = scratch("resume_other_model");
    let (base, data) = tiny_model_and_docs(&d);
    // The same vocabulary and tokens, another depth: the data fingerprint alone cannot tell.
    let deeper = d.join("deeper");
    ok(&solar_train(&["upscale", "--model", s(&base), "--out", s(&deeper), "--slices", "0:2,1:2"]));
    let out = d.join("out");
    let mut first = pretrain(&base, &data, &out, "2");
    first.extend(["--save-every", "1"]);
    ok(&solar_train(&first));
    let before = tree(&out);
    // A finished run keeps its checkpoints but the last: the newest is step 1.
    assert_eq!(
        names(&tree(&out.join("checkpoints"))).iter().filter(|n| n.ends_with("trainer_state.json")).count(),
        1
    );
    let mut other = pretrain(&deeper, &data, &out, "2");
    other.push("--resume");
    // Names the checkpoint and what differs.
    let names_it = ["checkpoints/step-000001", "checkpoint 2 vs now 3", "model.num_hidden_layers"];
    assert_refused(&solar_train(&other), 1, &names_it);
    assert!(tree(&out) == before, "no step was taken: {:?}", names(&tree(&out)));

    // A checkpoint written before the model's shape was recorded still resumes.
    let state_path = out.join("checkpoints/step-000001/trainer_state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert!(model_keys(&state).contains(&"model.vocab_size".to_string()), "{state}");
    for k in model_keys(&state) {
        state["identity"].as_object_mut().unwrap().remove(&k);
    }
    std::fs::write(&state_path, state.to_string()).unwrap();
    let mut same = pretrain(&base, &data, &out, "2");
    same.push("--resume");
    let run = solar_train(&same);
    ok(&run);
    assert!(run.stderr.contains("resuming from step 1"), "{}", run.stderr);
}

/// Starts `args` with stderr read line by line; returns the child once a line contains `phase`,
/// and the stderr seen so far plus a channel for the rest.
fn start_until(args: &[&str], phase: &str) -> (Child, Vec<String>, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = Command::new(solar_train_path()).args(args).stderr(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(300))
            .unwrap_or_else(|_| panic!("never saw {phase:?}: {seen:?}"));
        let found = line.contains(phase);
        seen.push(line);
        if found {
            return (child, seen, rx);
        }
    }
}

/// Waits for the signalled child; returns its exit code, its stderr and how long it took.
fn wait_stopped(
    mut child: Child,
    mut seen: Vec<String>,
    rx: std::sync::mpsc::Receiver<String>,
) -> (Option<i32>, String, Duration) {
    let t0 = Instant::now();
    let status = child.wait().unwrap();
    let took = t0.elapsed();
    seen.extend(rx.iter());
    (status.code(), seen.join("\n"), took)
}

#[test]
fn sigterm_during_dpo_reference_scoring_stops_at_once_without_creating_out() {
    let d = scratch("sigterm_scoring");
    let (base, _) = tiny_model_and_docs(&d);
    let pairs = d.join("pairs.jsonl");
    let lines: Vec<String> = (0..20000u32)
        .map(|i| {
            let (a, b) = (i % 97, i % 89);
            serde_json::json!({"prompt": format!("What is {a} plus {b}? "), "chosen": format!("{}", a + b),
                               "rejected": format!("{}", a + b + 1)})
            .to_string()
        })
        .collect();
    std::fs::write(&pairs, lines.join("\n")).unwrap();
    let out = d.join("place/out");
    let args = ["dpo", "--model", s(&base), "--data", s(&pairs), "--out", s(&out), "--steps", "1"];
    let args: Vec<&str> = args.iter().copied().chain(["--batch", "16", "--seq-len", "32"]).collect();
    let (child, seen, rx) = start_until(&args, "reference log-probs of 20000 pairs");
    signal(&child, "TERM");
    let (code, stderr, took) = wait_stopped(child, seen, rx);
    assert_eq!(code, Some(143), "{stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
    // Scoring 20000 pairs takes about 17 s on a quiet machine; a signal is noticed between
    // batches of 16, so well within 10 s even on a loaded CI box (the bound is loose on purpose:
    // what fails without the check is OUT below, and the time only by a wide margin).
    assert!(took < Duration::from_secs(10), "took {took:?} to stop: {stderr}");
    assert!(!out.exists(), "OUT must not be created by a run stopped before training: {stderr}");
    assert_eq!(hidden(&d.join("place")), Vec::<String>::new(), "the output lock is released");
}

#[test]
fn sigint_while_tokenising_a_long_document_stops_at_once_without_creating_out() {
    let d = scratch("sigint_loading");
    let (base, _) = tiny_model_and_docs(&d);
    // One long line: the reader is inside a single document's tokenisation when the signal comes.
    let data = d.join("long.jsonl");
    let text: String = (0..1_500_000u32).map(|i| format!("w{} ", i % 1000)).collect();
    std::fs::write(&data, serde_json::json!({ "text": text }).to_string()).unwrap();
    let out = d.join("place/out");
    let args = pretrain(&base, &data, &out, "1");
    let mut child = Command::new(solar_train_path()).args(&args).stderr(Stdio::piped()).spawn().unwrap();
    // The run is reading its data once it holds the data file open.
    let fd_dir = PathBuf::from(format!("/proc/{}/fd", child.id()));
    let deadline = Instant::now() + Duration::from_secs(120);
    let reading = || {
        std::fs::read_dir(&fd_dir)
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .any(|p| p == data)
    };
    while !reading() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before reading its data");
        assert!(Instant::now() < deadline, "the run never opened its data");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, "INT");
    let t0 = Instant::now();
    let status = child.wait().unwrap();
    let took = t0.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("SIGINT"), "{stderr}");
    // Loose on purpose (a loaded CI box); without the check the run trains and creates OUT.
    assert!(took < Duration::from_secs(10), "took {took:?} to stop: {stderr}");
    assert!(!out.exists(), "OUT must not be created by a run stopped while reading: {stderr}");
    assert_eq!(hidden(&d.join("place")), Vec::<String>::new(), "the output lock is released");
}

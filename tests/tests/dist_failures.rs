//! Data parallel runs that stop: checkpoints written by N ranks resume on any number of ranks
//! (they hold whole tensors), a rank killed or hung ends the whole job within a bounded time
//! with a clear error and every checkpoint whole, and a launcher's environment that makes no
//! sense is refused naming the variable. See dist_mpirun.rs for why unaligned world sizes run
//! with --eps 1.

use solar_tests::cli::{path_str as s, scratch_dir, solar_train, solar_train_env};
use solar_tests::folders::{copy_tree, hidden};
use solar_tests::mpi::{assert_close, assert_same_bits, mpi_ready, mpirun, mpirun_command, ok};
use solar_tests::setup::tiny_model_and_docs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("dist-fail-{name}"))
}

/// A 6-step pretraining run saving every 2 steps, 4 rows a step in micro-batches of 2.
fn flags<'a>(model: &'a Path, data: &'a Path, out: &'a Path, steps: &'a str) -> Vec<&'a str> {
    let mut v = vec!["pretrain", "--model", s(model), "--data", s(data), "--out", s(out), "--device", "cpu"];
    v.extend(["--seq-len", "48", "--batch", "2", "--grad-accum", "2", "--steps", steps, "--lr", "1e-3"]);
    v.extend(["--eps", "1", "--save-every", "2"]);
    v
}

fn checkpoint_steps(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn checkpoints_of_any_world_size_resume_on_any_other() {
    if !mpi_ready() {
        return;
    }
    let d = scratch("resume");
    let (model, docs) = tiny_model_and_docs(&d);
    let full = d.join("full");
    ok(&solar_train(&flags(&model, &docs, &full, "6")));
    for (saved_by, resumed_on) in [(2usize, 1usize), (2, 3), (3, 2), (1, 2)] {
        let out = d.join(format!("saved{saved_by}-resumed{resumed_on}"));
        // The job dies after step 5 (every rank aborts, as if the machine went): step 4 is saved.
        let fault = [("SOLAR_FAULT", "after-step:5")];
        let died = if saved_by == 1 {
            solar_train_env(&flags(&model, &docs, &out, "6"), &fault)
        } else {
            mpirun(saved_by, &flags(&model, &docs, &out, "6"), &fault)
        };
        assert_ne!(died.code, Some(0), "the fault must end the run: {}", died.stderr);
        assert_eq!(checkpoint_steps(&out).last().map(String::as_str), Some("step-000004"));
        let mut resume = flags(&model, &docs, &out, "6");
        resume.push("--resume");
        let run = if resumed_on == 1 { solar_train(&resume) } else { mpirun(resumed_on, &resume, &[]) };
        ok(&run);
        assert!(run.stderr.contains("resuming from step 4"), "{}", run.stderr);
        // Rows align with micro-batches on 1 and 2 ranks: there the sums are the same.
        if saved_by <= 2 && resumed_on <= 2 {
            assert_same_bits(&full, &out);
        } else {
            assert_close(&full, &out, 1e-6);
        }
    }
}

/// The process of `rank` in the job writing to `out` (by its command line and MPI's
/// environment variable).
fn rank_pid(out: &Path, rank: usize) -> Option<i32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}\0");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        if has(&cmdline, s(out).as_bytes()) && has(&cmdline, b"pretrain") && has(&environ, want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

/// Steps of the jobs that are hurt: long enough to be running when hurt (it happens at the
/// first checkpoint), short enough that one process finishes the rest in seconds.
const LONG: &str = "600";

/// Starts a long 3-rank job, waits for its first checkpoint, sends `signal` to rank 1 (or with
/// `to_launcher`, to mpirun), and returns the job's exit code, stderr, how long it took to end
/// after that, and its OUT.
fn signal_job(
    d: &Path,
    name: &str,
    signal: i32,
    to_launcher: bool,
    env: &[(&str, &str)],
) -> (Option<i32>, String, Duration, PathBuf) {
    let (model, docs) = tiny_model_and_docs(&d.join(name));
    let out = d.join(name).join("out");
    let mut job = mpirun_command(3, &flags(&model, &docs, &out, LONG), env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mpirun starts");
    let began = Instant::now();
    while checkpoint_steps(&out).is_empty() {
        assert!(began.elapsed() < Duration::from_secs(120), "no checkpoint after 120 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = if to_launcher { job.id() as i32 } else { rank_pid(&out, 1).expect("rank 1 is running") };
    // SAFETY: a signal to a child process of this test, found by its command line.
    assert_eq!(unsafe { libc_kill(pid, signal) }, 0);
    let hurt = Instant::now();
    let ended = loop {
        if let Some(status) = job.try_wait().expect("wait for mpirun") {
            break status;
        }
        assert!(hurt.elapsed() < Duration::from_secs(90), "the job did not end within 90 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = hurt.elapsed();
    let output = job.wait_with_output().expect("mpirun output");
    (ended.code(), String::from_utf8_lossy(&output.stderr).into_owned(), took, out)
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}
const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;

/// What a job that ended badly must leave: complete checkpoints a single process resumes from,
/// and no temporaries once it has. It resumes a copy of `out` (the job may hold its lock for a
/// moment after it ends); `name` is the job's folder under `d`, with its model and data.
fn resumes_whole(out: &Path, d: &Path, name: &str) {
    let kept = d.join(format!("{name}-copy"));
    copy_tree(out, &kept);
    let (out, d) = (kept.as_path(), d.join(name));
    let steps = checkpoint_steps(out);
    assert!(!steps.is_empty() && steps.iter().all(|n| n.starts_with("step-")), "{steps:?}");
    let last: usize = steps.last().unwrap()["step-".len()..].parse().unwrap();
    let (model, docs) = (d.join("base"), d.join("docs.jsonl"));
    let mut resume = flags(&model, &docs, out, LONG);
    resume.push("--resume");
    let run = solar_train(&resume);
    ok(&run);
    assert!(run.stderr.contains(&format!("resuming from step {last}")), "{}", run.stderr);
    assert_eq!(hidden(out), Vec::<String>::new());
    assert_eq!(hidden(&out.join("checkpoints")), Vec::<String>::new());
}

#[test]
fn a_killed_rank_ends_the_job_with_a_clear_error_and_whole_checkpoints() {
    if !mpi_ready() {
        return;
    }
    let d = scratch("kill");
    let (code, stderr, took, out) = signal_job(&d, "killed", SIGKILL, false, &[]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("rank 1") && stderr.contains("signal 9"),
        "the launcher names the dead rank: {stderr}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    resumes_whole(&out, &d, "killed");
}

#[test]
fn a_hung_rank_ends_the_job_after_the_collective_timeout() {
    if !mpi_ready() {
        return;
    }
    let d = scratch("hang");
    // Rank 1 stops (SIGSTOP: alive, silent); the others wait 3 s in a collective, then end.
    let (code, stderr, took, out) = signal_job(&d, "hung", SIGSTOP, false, &[("SOLAR_DIST_TIMEOUT", "3")]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("no answer from the other ranks for 3 s"), "{stderr}");
    assert!(stderr.contains("rank 0 of 3") || stderr.contains("rank 2 of 3"), "{stderr}");
    assert!(took < Duration::from_secs(45), "took {took:?}");
    resumes_whole(&out, &d, "hung");
}

#[test]
fn ctrl_c_to_mpirun_stops_every_rank_after_the_same_step() {
    if !mpi_ready() {
        return;
    }
    let d = scratch("sigint");
    // mpirun passes the stop on as SIGTERM; the ranks agree on it at the end of a step.
    let (code, stderr, took, out) = signal_job(&d, "stopped", SIGINT, true, &[]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("stopping after step") && stderr.contains("with --resume"), "{stderr}");
    assert!(stderr.contains("stopped cleanly"), "{stderr}");
    // Not a failure: no rank aborts the job, none gives up waiting.
    assert!(!stderr.contains("MPI_ABORT") && !stderr.contains("no answer"), "{stderr}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    resumes_whole(&out, &d, "stopped");
}

#[test]
fn a_step_too_small_for_the_ranks_is_refused_by_every_rank() {
    if !mpi_ready() {
        return;
    }
    let d = scratch("small");
    let (model, docs) = tiny_model_and_docs(&d);
    let out = d.join("out");
    let mut f = flags(&model, &docs, &out, "2");
    f.extend(["--batch", "1", "--grad-accum", "2"]);
    let run = mpirun(3, &f, &[]);
    assert_ne!(run.code, Some(0));
    assert!(run.stderr.contains("cannot give each of 3 ranks a row"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[test]
fn launcher_variables_that_make_no_sense_are_refused_naming_them() {
    let d = scratch("env");
    let (model, docs) = tiny_model_and_docs(&d);
    let out = d.join("out");
    let f = flags(&model, &docs, &out, "2");
    let run = solar_train_env(&f, &[("RANK", "one"), ("WORLD_SIZE", "2")]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("RANK=\"one\""), "{}", run.stderr);
    let run = solar_train_env(&f, &[("RANK", "2"), ("WORLD_SIZE", "2")]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("rank 2 of a world of 2"), "{}", run.stderr);
    // torchrun starts processes without MPI: CPU ranks cannot talk that way.
    let run = solar_train_env(&f, &[("RANK", "0"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "0")]);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("torchrun") && !run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(!out.exists(), "nothing written");
    // An sbatch script is not a task: one process, with a note saying how to get N.
    let run = solar_train_env(&f, &[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "4"), ("SLURM_JOB_ID", "7")]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stderr.contains("SLURM_NTASKS=4") && run.stderr.contains("srun"), "{}", run.stderr);
}

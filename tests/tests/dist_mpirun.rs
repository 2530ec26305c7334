//! Data parallel training for real: `mpirun -np N solar-train pretrain|sft|dpo` with 1, 2 and 3
//! CPU ranks on a tiny model, against the same command run as one process.
//!
//! - Where each rank's rows are exactly micro-batches of the single process (a step of 4 rows
//!   in micro-batches of 2, on 1 or 2 ranks), every gradient adds the same numbers in the same
//!   order, so the weights must be equal bit for bit.
//! - Where they are not (3 ranks), the sums group differently and agree to float rounding.
//!   AdamW's m/sqrt(v) turns a rounding-level difference in a gradient element that is itself
//!   at rounding level into a whole +-lr step, so those runs use --eps 1, where the update is
//!   close to linear in the gradient: then weights agree to 1e-6 of each tensor's largest
//!   value and losses to 1e-6 relative, which is what "the same update" can mean there.
//!
//! Needs `mpirun` and a solar-train built with the `mpi` feature (scripts/test.sh builds it and
//! sets SOLAR_REQUIRE_MPI=1, so there a missing MPI fails instead of skipping).

use serde_json::json;
use solar_tests::cli::{path_str as s, scratch_dir, solar_train};
use solar_tests::mpi::{assert_close, assert_same_bits, mpi_ready, mpirun, ok};
use solar_tests::setup::{tiny_model_and_docs, write_jsonl};
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("dist-{name}"))
}

/// The flags of a 4-step run with 4 rows a step in micro-batches of 2.
fn flags<'a>(
    stage: &'a str,
    model: &'a Path,
    data: &'a Path,
    out: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut v = vec![stage, "--model", s(model), "--data", s(data), "--out", s(out), "--device", "cpu"];
    v.extend(["--seq-len", "48", "--batch", "2", "--grad-accum", "2", "--steps", "4", "--lr", "1e-3"]);
    v.extend(extra);
    v
}

/// The stage on 1 process, then on 1, 2 and 3 ranks: 1 and 2 bitwise, 3 close (header).
fn one_two_three_ranks(stage: &str, model: &Path, data: &Path, extra: &[&str], d: &Path) {
    let single = d.join("single");
    ok(&solar_train(&flags(stage, model, data, &single, extra)));
    for np in [1, 2] {
        let out = d.join(format!("np{np}"));
        let run = mpirun(np, &flags(stage, model, data, &out, extra), &[]);
        ok(&run);
        // Rank 0 alone speaks: one summary line however many ranks ran.
        let said = format!("{}{}", run.stdout, run.stderr);
        assert_eq!(said.matches("model written to").count(), 1, "{said}");
        assert_eq!(run.stderr.matches("distributed:").count(), 1, "{}", run.stderr);
        assert_same_bits(&single, &out);
    }
    let mut linear = extra.to_vec();
    linear.extend(["--eps", "1"]);
    let (single1, np3) = (d.join("single-eps1"), d.join("np3-eps1"));
    ok(&solar_train(&flags(stage, model, data, &single1, &linear)));
    ok(&mpirun(3, &flags(stage, model, data, &np3, &linear), &[]));
    assert_close(&single1, &np3, 1e-6);
}

#[test]
fn pretrain_on_one_two_and_three_ranks_gives_the_single_process_weights() {
    if !mpi_ready() {
        return;
    }
    let d = scratch("pretrain");
    let (model, docs) = tiny_model_and_docs(&d);
    one_two_three_ranks("pretrain", &model, &docs, &[], &d);
}

#[test]
fn sft_on_one_two_and_three_ranks_gives_the_single_process_weights() {
    if !mpi_ready() {
        return;
    }
    let d = scratch("sft");
    let (model, _) = tiny_model_and_docs(&d);
    let data = d.join("alpaca.jsonl");
    write_jsonl(
        &data,
        (0..16).map(|i| json!({"instruction": format!("Add {i} and {}.", i % 5), "input": "", "output": format!("{}", i + i % 5)})),
    );
    one_two_three_ranks("sft", &model, &data, &["--format", "alpaca", "--seq-len", "160"], &d);
}

#[test]
fn dpo_on_one_two_and_three_ranks_gives_the_single_process_weights() {
    if !mpi_ready() {
        return;
    }
    let d = scratch("dpo");
    let (model, _) = tiny_model_and_docs(&d);
    let data = d.join("pairs.jsonl");
    write_jsonl(
        &data,
        (0..12).map(|i| json!({"prompt": format!("{i}+{i}="), "chosen": format!("{}", 2 * i), "rejected": format!("{}", 2 * i + 7)})),
    );
    // The reference log-probs are shared out by batch over the ranks (dpo.rs): the same numbers.
    one_two_three_ranks("dpo", &model, &data, &[], &d);
}

#[test]
fn zero_stages_give_the_same_weights() {
    if !mpi_ready() {
        return;
    }
    let d = scratch("zero");
    let (model, docs) = tiny_model_and_docs(&d);
    // Each of 2 ranks runs 2 micro-batches of 1 row a step: ZeRO-2 reduces after each one.
    // Buckets of 20 KiB: the tiny model's gradients travel in many buckets, several of them
    // started before the first is unpacked.
    let extra = ["--batch", "1", "--grad-accum", "4", "--eps", "1", "--bucket-mb", "0.02"];
    let out = |z: usize| d.join(format!("zero{z}"));
    for z in 0..3 {
        let (zs, o) = (z.to_string(), out(z));
        let mut f = flags("pretrain", &model, &docs, &o, &extra);
        f.extend(["--zero", &zs]);
        ok(&mpirun(2, &f, &[]));
    }
    // ZeRO-0 all-reduces as a reduce-scatter and a gather: the same sums as ZeRO-1.
    assert_same_bits(&out(0), &out(1));
    // Buckets change how gradients travel, not what they sum to: one bucket for the whole
    // model (the default 25 MiB) gives the bits of many.
    let one_bucket = d.join("zero1-one-bucket");
    let mut f = flags("pretrain", &model, &docs, &one_bucket, &extra[..6]);
    f.extend(["--zero", "1"]);
    ok(&mpirun(2, &f, &[]));
    assert_same_bits(&out(1), &one_bucket);
    // ZeRO-2 adds each micro-batch's ranks first, then the micro-batches: other rounding.
    assert_close(&out(1), &out(2), 1e-6);
    let single = d.join("single");
    ok(&solar_train(&flags("pretrain", &model, &docs, &single, &extra)));
    assert_close(&single, &out(2), 1e-6);
    // What the stages are for, measured by the engine (rank 0's allocation high-water): ZeRO-1
    // holds half the moments, ZeRO-2 also reduces each gradient as it completes.
    let peak = |z| peak_alloc(&out(z));
    assert!(peak(1) < peak(0) && peak(2) < peak(1), "peaks {} {} {}", peak(0), peak(1), peak(2));
    // 3 ranks share a step's 4 rows 2, 1, 1: ZeRO-2's reductions run in rounds of micro-batches,
    // and ranks with fewer add empty rounds (a missing one would hang the job).
    for z in ["1", "2"] {
        let o = d.join(format!("np3-zero{z}"));
        let mut f = flags("pretrain", &model, &docs, &o, &extra);
        f.extend(["--zero", z]);
        ok(&mpirun(3, &f, &[("SOLAR_DIST_TIMEOUT", "60")]));
    }
    assert_close(&single, &d.join("np3-zero2"), 1e-6);
    assert_close(&d.join("np3-zero1"), &d.join("np3-zero2"), 1e-6);
}

fn peak_alloc(out: &Path) -> u64 {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("peak_alloc_bytes").and_then(serde_json::Value::as_u64))
        .max()
        .expect("peak_alloc_bytes in metrics.jsonl")
}

#[test]
fn the_cuda_path_on_the_emulator_gives_the_single_process_weights() {
    if !mpi_ready() {
        return;
    }
    // CUDA tensors (bf16 weights, f32 masters and moments on the device) reach MPI through the
    // host; shards are device copies. The gradient norm is an f32 sum on the device, over whole
    // tensors alone and over shards with ranks, so clipping is off where bits are compared.
    let d = scratch("emu");
    let (model, docs) = tiny_model_and_docs(&d);
    // Small buckets, so several reductions are queued on the comm stream at once: the
    // emulator's stream check holds every one to the order the events declare.
    let emu = ["--device", "emu", "--clip", "0", "--bucket-mb", "0.02"];
    let single = d.join("single");
    ok(&solar_train(&flags("pretrain", &model, &docs, &single, &emu)));
    for z in ["0", "1", "2"] {
        let out = d.join(format!("np2-zero{z}"));
        let mut f = flags("pretrain", &model, &docs, &out, &emu);
        f.extend(["--zero", z]);
        ok(&mpirun(2, &f, &[]));
        assert_same_bits(&single, &out);
    }
}

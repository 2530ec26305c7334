//! `solar-train plan` as a user runs it. Its numbers are held to two references:
//! - on the CPU, one device, ZeRO-0, the small model and memory_measured.rs's shape (batch 4 x
//!   128; plain, --recompute, LoRA r 8): exactly `estimate_plan`'s components, which
//!   train/tests/memory_measured.rs holds to the engine's own high-water of allocated bytes,
//!   so plan -> estimate -> measured is one chain;
//! - SOLAR 10.7B on 8 x 80 GB: the parameter count times each state's width (2 bytes of bf16
//!   weight and gradient, 4 of f32 master, 8 of moments), and ZeRO-1/2's shards are those / 8,
//!   rounded up.
//!
//! Plus the table, the JSON contract (one object on stdout), and exit codes (0 whether it
//! fits or not, 2 for usage errors, 1 for a missing or broken config naming the file).

use serde_json::Value;
use solar_engine::Device;
use solar_model::lora::{LoraSpec, DEFAULT_TARGETS};
use solar_model::presets::preset;
use solar_tests::cli::{solar_train, Run};
use solar_train::trainer::memory::{estimate_plan, Plan};

/// SOLAR 10.7B's parameter count (PAPER.md).
const SOLAR_P: u64 = 10_731_524_096;

fn one_json_object(run: &Run) -> Value {
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let mut values = serde_json::Deserializer::from_str(&run.stdout).into_iter::<Value>();
    let first =
        values.next().expect("stdout is empty").unwrap_or_else(|e| panic!("not JSON ({e}): {}", run.stdout));
    assert!(values.next().is_none(), "more than one JSON value on stdout: {}", run.stdout);
    assert!(first.is_object(), "not a JSON object: {first}");
    first
}

fn plan_json(args: &[&str]) -> Value {
    let mut all = vec!["plan", "--json"];
    all.extend_from_slice(args);
    one_json_object(&solar_train(&all))
}

fn b(v: &Value, part: &str, key: &str) -> u64 {
    v[part][key].as_u64().unwrap_or_else(|| panic!("{part}.{key} missing in {v}"))
}

#[test]
fn cpu_single_device_is_exactly_the_measured_estimate() {
    let cfg = preset("small").unwrap();
    let (batch, seq_len) = (4, 128);
    let spec = LoraSpec { r: 8, alpha: 16.0, dropout: 0.0, targets: DEFAULT_TARGETS.to_vec(), rslora: false };
    for (recompute, lora) in [(false, None), (true, None), (false, Some(&spec)), (true, Some(&spec))] {
        let want =
            estimate_plan(&cfg, batch, seq_len, Device::Cpu, Plan::of_run(recompute, lora, &cfg)).unwrap();
        let mut args = vec!["--preset", "small", "--device", "cpu", "--devices", "1", "--zero", "0"];
        args.extend(["--seq-len", "128", "--batch", "4"]);
        if recompute {
            args.push("--recompute");
        }
        if lora.is_some() {
            args.extend(["--lora-r", "8"]);
        }
        let got = plan_json(&args);
        let case = format!("recompute {recompute} lora {}", lora.is_some());
        assert_eq!(b(&got, "per_device", "weights"), want.weights, "{case}");
        assert_eq!(b(&got, "per_device", "gradients"), want.gradients, "{case}");
        assert_eq!(b(&got, "per_device", "master_weights"), 0, "{case}: the CPU keeps no master copy");
        assert_eq!(b(&got, "per_device", "moments"), want.optimizer, "{case}");
        assert_eq!(b(&got, "per_device", "activations"), want.activations, "{case}");
        assert_eq!(b(&got, "per_device", "scratch"), want.scratch, "{case}");
        assert_eq!(b(&got, "per_device", "runtime_reserve"), 0, "{case}: no reserve on the CPU");
        assert_eq!(b(&got, "per_device", "total"), want.total(), "{case}");
        assert_eq!(got["fits"], Value::Null, "{case}: no --memory, no verdict");
    }
}

#[test]
fn solar_on_eight_80gb_gpus_shards_as_zero_says() {
    let base = [
        "--preset",
        "solar-10.7b",
        "--devices",
        "8",
        "--memory",
        "80GB",
        "--seq-len",
        "4096",
        "--batch",
        "1",
    ];
    let run = |zero: &str, recompute: bool| {
        let mut a = base.to_vec();
        a.extend(["--zero", zero]);
        if recompute {
            a.push("--recompute");
        }
        plan_json(&a)
    };
    let z1 = run("1", false);
    let z2 = run("2", false);
    let z1r = run("1", true);
    for v in [&z1, &z2, &z1r] {
        assert_eq!(v["parameters"].as_u64(), Some(SOLAR_P));
        assert_eq!(v["device"], "cuda");
        assert_eq!(b(v, "replicated", "weights"), 2 * SOLAR_P);
        assert_eq!(b(v, "replicated", "gradients"), 2 * SOLAR_P);
        assert_eq!(b(v, "replicated", "master_weights"), 4 * SOLAR_P);
        assert_eq!(b(v, "replicated", "moments"), 8 * SOLAR_P);
        assert_eq!(b(v, "per_device", "weights"), 2 * SOLAR_P, "weights stay whole below ZeRO-3");
        assert_eq!(b(v, "per_device", "master_weights"), (4 * SOLAR_P).div_ceil(8));
        assert_eq!(b(v, "per_device", "moments"), (8 * SOLAR_P).div_ceil(8));
        assert_eq!(v["memory"].as_u64(), Some(80_000_000_000));
        let total = b(v, "per_device", "total");
        assert_eq!(v["fits"].as_bool(), Some(total <= 80_000_000_000));
    }
    assert_eq!(b(&z1, "per_device", "gradients"), 2 * SOLAR_P, "ZeRO-1 keeps whole gradients");
    assert_eq!(b(&z2, "per_device", "gradients"), (2 * SOLAR_P).div_ceil(8), "ZeRO-2 shards them");
    // Without recompute, ZeRO-1 does not fit (30 GiB of activations on 67 GiB of state);
    // recompute or ZeRO-2 make it fit.
    assert_eq!(
        (z1["fits"].as_bool(), z1r["fits"].as_bool(), z2["fits"].as_bool()),
        (Some(false), Some(true), Some(true))
    );
    let advice = z1["advice"].as_str().unwrap();
    assert!(advice.contains("--recompute") && advice.contains("--zero 2"), "{advice}");
    assert!(b(&z1r, "per_device", "activations") < b(&z1, "per_device", "activations") / 4);
}

#[test]
fn the_table_names_every_component_and_the_verdict() {
    let args =
        ["plan", "--preset", "solar-10.7b", "--devices", "8", "--device-memory", "80GB", "--zero", "1"];
    let mut long = args.to_vec();
    long.extend(["--seq-len", "4096", "--batch", "1"]);
    let r = solar_train(&long);
    assert_eq!(r.code, Some(0), "a plan that does not fit is still a report: {}", r.stderr);
    for row in
        ["weights", "gradients", "master_weights", "moments", "activations", "runtime_reserve", "total"]
    {
        assert!(r.stdout.lines().any(|l| l.starts_with(row)), "no {row} row:\n{}", r.stdout);
    }
    // 8 devices, ZeRO-1: the moments' row is 8 P bytes / 8 = 9.99 GiB beside 79.96 whole.
    assert!(
        r.stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["moments", "9.99", "79.96"]),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("verdict: does not fit") && r.stdout.contains("--recompute"), "{}", r.stdout);
    long.push("--recompute");
    let r = solar_train(&long);
    assert!(r.code == Some(0) && r.stdout.contains("verdict: fits"), "{}{}", r.stdout, r.stderr);
}

#[test]
fn bad_flags_exit_2_and_bad_configs_exit_1_naming_the_file() {
    for (args, names) in [
        (vec!["plan"], "--preset"),
        (vec!["plan", "--preset", "small", "--model", "x"], "--config-json"),
        (vec!["plan", "--preset", "nope"], "nope"),
        (vec!["plan", "--preset", "small", "--zero", "3"], "--zero"),
        (vec!["plan", "--preset", "small", "--devices=nan"], "--devices"),
        (vec!["plan", "--preset", "small", "--devices", "0"], "--devices"),
        (vec!["plan", "--preset", "small", "--memory", "lots"], "--memory"),
        (vec!["plan", "--preset", "small", "--lora-targets", "q_proj"], "--lora-r"),
    ] {
        let r = solar_train(&args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(names), "{args:?} must name {names}: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cli_plan_bad");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let r = solar_train(&["plan", "--model", dir.to_str().unwrap()]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains(&dir.join("config.json").display().to_string()), "{}", r.stderr);
    let bad = dir.join("broken.json");
    std::fs::write(&bad, "{\"hidden_size\": ").unwrap();
    let r = solar_train(&["plan", "--config-json", bad.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("broken.json") && r.stdout.is_empty(), "{}{}", r.stdout, r.stderr);
}

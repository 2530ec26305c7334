//! `solar-train bench` as a user runs it: the JSON contract (one object on stdout, nothing
//! else there), exit codes (2 for usage errors, 1 for runtime ones), and `--config` files
//! (bad paths and unknown keys are named; flags override the file). Every run uses
//! `--repeats 1` on a cheap op so the whole file takes a few seconds.

use serde_json::Value;
use solar_tests::cli::{solar_train, Run};
use std::path::PathBuf;

/// A config file with `text` in this test binary's scratch folder.
fn config_file(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli_bench_{name}.toml"));
    std::fs::write(&path, text).expect("write the config file");
    path
}

/// Parses stdout as exactly one JSON value, failing if anything else is there.
fn one_json_object(run: &Run) -> Value {
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let mut values = serde_json::Deserializer::from_str(&run.stdout).into_iter::<Value>();
    let first = values
        .next()
        .expect("stdout is empty")
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", run.stdout));
    assert!(values.next().is_none(), "more than one JSON value on stdout: {}", run.stdout);
    assert!(first.is_object(), "stdout is not a JSON object: {first}");
    first
}

fn ops_in(report: &Value) -> Vec<String> {
    report["results"]
        .as_array()
        .expect("results is an array")
        .iter()
        .map(|r| r["op"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn json_has_the_documented_fields() {
    let report = one_json_object(&solar_train(&[
        "bench",
        "--device",
        "cpu",
        "--op",
        "rmsnorm",
        "--json",
        "--repeats",
        "1",
    ]));
    assert_eq!(report["device"], "cpu");
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{report}");
    let r = &results[0];
    assert_eq!(r["op"], "rmsnorm");
    assert_eq!(r["dtype"], "f32");
    assert!(r["shape"].as_array().unwrap().iter().all(|d| d.as_u64().is_some_and(|d| d > 0)), "{r}");
    assert!(r["median_s"].as_f64().unwrap() > 0.0, "{r}");
    // rmsnorm is memory-bound: GB/s, not TFLOP/s.
    assert!(r["gbps"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r.get("tflops").is_none(), "{r}");
}

#[test]
fn matmul_rows_include_the_square_case_with_tflops() {
    let report = one_json_object(&solar_train(&[
        "bench",
        "--device",
        "cpu",
        "--op",
        "matmul",
        "--json",
        "--repeats",
        "1",
    ]));
    let results = report["results"].as_array().unwrap();
    assert!(
        results.iter().all(|r| r["op"] == "matmul" && r["tflops"].as_f64().is_some_and(|t| t > 0.0)),
        "{report}"
    );
    assert!(results.iter().any(|r| r["shape"] == serde_json::json!([1024, 1024, 1024])), "{report}");
}

#[test]
fn the_table_names_each_op_with_its_throughput() {
    let run = solar_train(&["bench", "--device", "cpu", "--op", "rope", "--repeats", "1"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(run.stdout.contains("rope") && run.stdout.contains("GB/s"), "{}", run.stdout);
}

#[test]
fn an_unknown_op_is_a_usage_error_listing_the_known_ones() {
    let run = solar_train(&["bench", "--op", "conv2d"]);
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("conv2d") && run.stderr.contains("rmsnorm"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
}

#[test]
fn bad_flag_values_are_usage_errors() {
    for args in [["bench", "--device", "tpu"], ["bench", "--threads", "0"], ["bench", "--repeats", "x"]] {
        let run = solar_train(&args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn an_unavailable_cuda_device_exits_1_saying_what_is_missing() {
    // cuda:7 is missing on every machine this runs on (CI has no GPU, a device machine one);
    // plain `cuda` is missing only where no GPU is.
    let has_gpu = solar_engine::Device::Cuda(0).ensure_available().is_ok();
    let devices: &[&str] = if has_gpu { &["cuda:7"] } else { &["cuda", "cuda:7"] };
    for device in devices {
        let run = solar_train(&["bench", "--device", device, "--op", "rmsnorm", "--json"]);
        assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
        assert!(run.stderr.starts_with("error: ") && run.stderr.contains("cuda:"), "{}", run.stderr);
        assert!(
            ["driver", "no CUDA device", "NVRTC"].iter().any(|w| run.stderr.contains(w)),
            "the error says what is missing: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
}

#[test]
fn auto_without_a_gpu_runs_on_the_cpu_and_says_why() {
    if solar_engine::Device::Cuda(0).ensure_available().is_ok() {
        eprintln!("skipping: this machine has a GPU, so auto picks it");
        return;
    }
    let run = solar_train(&["bench", "--device", "auto", "--op", "rmsnorm", "--repeats", "1", "--json"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("--device auto: running on the CPU"), "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["device"], "cpu");
}

#[test]
fn kernels_prints_each_kernels_registers_and_spills_without_a_gpu() {
    if solar_kernels::Toolkit::get().is_err() {
        assert_ne!(
            std::env::var("SOLAR_REQUIRE_NVRTC").as_deref(),
            Ok("1"),
            "SOLAR_REQUIRE_NVRTC=1 but no NVRTC"
        );
        eprintln!("skipping: no NVRTC");
        return;
    }
    let run = solar_train(&["bench", "--kernels", "--arch", "sm_80", "--json"]);
    assert_eq!(run.code, Some(0), "stderr: {}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["arch"], "sm_80");
    let kernels = report["kernels"].as_array().unwrap();
    for name in ["add_bf16", "cast_f32_bf16"] {
        let k = kernels.iter().find(|k| k["kernel"] == name).unwrap_or_else(|| panic!("{name} missing"));
        assert!(k["registers"].as_u64().unwrap() > 0 && k["spill_stores"].is_u64(), "{k}");
    }
}

#[test]
fn a_missing_or_broken_config_file_exits_1_naming_it() {
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no_such_dir/solar.toml");
    let broken = config_file("broken", "op = \"rope\"\n[unclosed\n");
    for path in [missing, broken] {
        let run = solar_train(&["bench", "--config", path.to_str().unwrap()]);
        assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
        assert!(run.stderr.contains(path.to_str().unwrap()), "{}", run.stderr);
    }
}

#[test]
fn an_unknown_config_key_exits_1_naming_file_and_key() {
    let path = config_file("unknown_key", "op = \"rmsnorm\"\nrepeats = 1\nbogus_key = 3\n");
    let run = solar_train(&["bench", "--config", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(1), "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("bogus_key") && run.stderr.contains(path.to_str().unwrap()),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
}

#[test]
fn a_bad_config_value_exits_2_as_the_flag_would_naming_the_key() {
    let path = config_file("bad_value", "op = \"conv2d\"\n");
    let run = solar_train(&["bench", "--config", path.to_str().unwrap()]);
    assert_eq!(run.code, Some(2), "stderr: {}", run.stderr);
    assert!(run.stderr.contains("'op'") && run.stderr.contains("conv2d"), "{}", run.stderr);
}

#[test]
fn flags_override_the_config_file() {
    let path =
        config_file("override", "device = \"cpu\"\nthreads = 1\nop = \"rope\"\njson = true\nrepeats = 1\n");
    let path = path.to_str().unwrap();
    // The file alone: its op, and JSON because it says so.
    let report = one_json_object(&solar_train(&["bench", "--config", path]));
    assert_eq!(ops_in(&report), ["rope"]);
    assert_eq!(report["threads"], 1);
    // A flag wins over the file's value; the file's other keys still apply.
    let report =
        one_json_object(&solar_train(&["bench", "--config", path, "--op", "rmsnorm", "--threads", "2"]));
    assert_eq!(ops_in(&report), ["rmsnorm"]);
    assert_eq!(report["threads"], 2);
}

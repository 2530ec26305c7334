//! Against mergekit itself: scripts/make_fixtures.py ran mergekit on each config in
//! tests/fixtures/hf/merge/<case>/merge.yml (three small random Llamas a, b and base) and kept
//! what it wrote in <case>/expected. Here the same YAML goes through `MergeSpec::from_yaml` and
//! `merge`, and every tensor must match: linear with a filtered weight, linear without
//! normalizing, the common SLERP config with per-filter gradients, task arithmetic with lambda,
//! TIES with per-model and gradient densities, DARE-TIES at density 1 (its random drop is
//! torch's and cannot be matched; the rest of the method can) and SOLAR's passthrough in bf16.

mod merge_common;

use merge_common::{close, scratch, stored_dtype, tensors};
use solar_model::checkpoint::{SafeDType, WriteOptions};
use solar_train::merge::{merge, MergeSpec};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf/merge")
}

/// Merges `case` with Solar and compares with mergekit's output. SLERP and the sign election
/// run in f64 here and f32 in mergekit, hence a tolerance of a few f32 ulps, not equality.
fn matches_mergekit(case: &str) -> PathBuf {
    let dir = fixtures().join(case);
    let out = scratch(&format!("mergekit_{case}")).join("out");
    let spec = MergeSpec::from_yaml(&dir.join("merge.yml"), 0).unwrap_or_else(|e| panic!("{case}: {e}"));
    merge(&spec, &out, &WriteOptions::default()).unwrap_or_else(|e| panic!("{case}: {e}"));
    let expected = dir.join("expected");
    let (want, got) = (tensors(&expected), tensors(&out));
    let names = |m: &std::collections::BTreeMap<String, Vec<f32>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "{case}: tensor names");
    for (name, w) in &want {
        assert_eq!(stored_dtype(&out, name), stored_dtype(&expected, name), "{case}: {name}: dtype");
        let w: Vec<f64> = w.iter().map(|&x| x as f64).collect();
        close(&format!("{case}: {name}"), &got[name], &w, 1e-6, 1e-5);
    }
    let layers = |d: &Path| {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
        v["num_hidden_layers"].as_u64()
    };
    assert_eq!(layers(&out), layers(&expected), "{case}: num_hidden_layers");
    out
}

#[test]
fn linear_matches_mergekit() {
    matches_mergekit("linear");
    matches_mergekit("linear_raw");
}

#[test]
fn slerp_with_gradients_matches_mergekit() {
    matches_mergekit("slerp");
}

#[test]
fn task_arithmetic_matches_mergekit() {
    matches_mergekit("task_arithmetic");
}

#[test]
fn ties_matches_mergekit() {
    matches_mergekit("ties");
}

#[test]
fn dare_ties_at_full_density_matches_mergekit() {
    matches_mergekit("dare_ties_dense");
}

#[test]
fn solar_passthrough_matches_mergekit_bit_for_bit() {
    let out = matches_mergekit("passthrough_solar");
    let expected = fixtures().join("passthrough_solar/expected");
    assert_eq!(stored_dtype(&out, "lm_head.weight"), SafeDType::BF16);
    assert_eq!(tensors(&out), tensors(&expected), "a pure copy: no rounding differences allowed");
}

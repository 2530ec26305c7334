//! Hostile: fuzzed parsers. Protects issue 17's seventh promise: every parser of user files
//! (safetensors header and index, config.json, each JSONL row format, mergekit YAML, the TOML
//! `--config`) meets arbitrary bytes and structure-aware mutations of valid input with a
//! clear error, never a panic, and never allocates more than a small multiple of its input:
//! a length or count read from a file is checked against the file before it sizes anything.
//!
//! The allocation bound is measured: this binary's allocator records, per thread, the largest
//! single request, and each case asserts it stays under ALLOC_FACTOR x the input + ALLOC_SLACK.
//! Cases are fixed (CASES per parser) and so is the seed, so CI runs the same inputs each time.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed, TestRunner};
use solar_model::checkpoint::Checkpoint;
use solar_model::tokenizer::Tokenizer;
use solar_model::LlamaConfig;
use solar_tests::cli::{assert_ok, path_str as s, scratch_dir, solar_train, solar_train_path};
use solar_train::data::{pairs::load_pairs, pretrain::load_pretrain, sft::load_sft, sft::SftFormat};
use solar_train::merge::MergeSpec;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const CASES: u32 = 256;
const ALLOC_FACTOR: usize = 64;
/// Tokenizer tables, the tiny model's config and the like: fixed costs, not input-sized.
const ALLOC_SLACK: usize = 16 << 20;

struct PeakAlloc;
thread_local!(static PEAK: Cell<usize> = const { Cell::new(0) });
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = PEAK.try_with(|p| p.set(p.get().max(l.size())));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, l: Layout) {
        unsafe { System.dealloc(ptr, l) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let _ = PEAK.try_with(|p| p.set(p.get().max(new)));
        unsafe { System.realloc(ptr, l, new) }
    }
}
#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Runs `parse`, asserting no single allocation beyond the bound for `input_len` bytes.
fn bounded<T>(what: &str, input_len: usize, parse: impl FnOnce() -> T) -> T {
    PEAK.with(|p| p.set(0));
    let out = parse();
    let peak = PEAK.with(|p| p.get());
    let limit = input_len * ALLOC_FACTOR + ALLOC_SLACK;
    assert!(peak <= limit, "{what}: one allocation of {peak} bytes for {input_len} bytes of input");
    out
}

fn runner(name: &str) -> TestRunner {
    // The seed is fixed per parser; a failure prints the minimal input.
    let seed =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    };
    TestRunner::new(config)
}

/// The tiny model (config, tokenizer) every data parser needs; made once.
fn tiny() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = scratch_dir(env!("CARGO_TARGET_TMPDIR"), "hostile_parsers_model");
        let base = d.join("base");
        assert_ok(&solar_train(&["init", "--preset", "tiny", "--out", s(&base), "--seed", "1"]));
        base
    })
}

fn scratch(name: &str) -> PathBuf {
    scratch_dir(env!("CARGO_TARGET_TMPDIR"), &format!("hostile_parsers_{name}"))
}

/// JSON values a field might hold, weighted to the edges (huge, negative, fractional numbers,
/// empty and odd strings, nesting).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::json;
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        (0u64..300).prop_map(|n| json!(n)),
        any::<f64>().prop_filter("JSON numbers are finite", |x| x.is_finite()).prop_map(|x| json!(x)),
        ".{0,12}".prop_map(|t| json!(t)),
        Just(json!("user")),
        Just(json!("assistant")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A valid text's bytes with a few of them overwritten, cut or repeated.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = valid.len().max(1);
    (prop::collection::vec((0..n, any::<u8>()), 0..6), 0..=n, any::<bool>()).prop_map(
        move |(edits, cut, dup)| {
            let mut b = valid.clone();
            for (i, v) in edits {
                if i < b.len() {
                    b[i] = v;
                }
            }
            b.truncate(cut.max(1));
            if dup {
                let again = b.clone();
                b.extend(again);
            }
            b
        },
    )
}

#[test]
fn config_json_never_panics_and_names_what_is_wrong() {
    let path = Path::new("config.json");
    let valid = std::fs::read(tiny().join("config.json")).unwrap();
    let fields = prop::sample::select(vec![
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rope_theta",
    ]);
    let base: serde_json::Value = serde_json::from_slice(&valid).unwrap();
    let structured = prop::collection::vec((fields, json_value()), 1..4).prop_map(move |edits| {
        let mut v = base.clone();
        for (k, x) in edits {
            v[k.to_string()] = x;
        }
        v.to_string().into_bytes()
    });
    let input = prop_oneof![prop::collection::vec(any::<u8>(), 0..256), mutated(valid), structured];
    runner("config.json")
        .run(&input, |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = bounded("config.json", bytes.len(), || LlamaConfig::from_json_str(&text, path)) {
                prop_assert!(e.to_string().contains("config.json"), "{e}");
            }
            Ok(())
        })
        .unwrap();
}

/// A small valid safetensors file: two f32 tensors, 8 + 16 bytes of data.
fn safetensors_bytes() -> Vec<u8> {
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(&[0u8; 24]);
    out
}

#[test]
fn safetensors_header_and_index_never_panic_nor_allocate_from_a_claimed_length() {
    let d = scratch("safetensors");
    std::fs::copy(tiny().join("config.json"), d.join("config.json")).unwrap();
    // A header claiming 10 GB in a 100-byte file: refused before anything is sized from it.
    let mut claim = (10u64 << 30).to_le_bytes().to_vec();
    claim.extend_from_slice(&[b' '; 92]);
    std::fs::write(d.join("model.safetensors"), &claim).unwrap();
    let e = bounded("10 GB claim", 100, || Checkpoint::open(&d)).unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains("header length"), "{e}");

    let valid = safetensors_bytes();
    let length = (any::<u64>(), Just(valid.clone())).prop_map(|(n, mut b)| {
        b[..8].copy_from_slice(&n.to_le_bytes());
        b
    });
    let input = prop_oneof![prop::collection::vec(any::<u8>(), 0..128), mutated(valid), length];
    runner("safetensors")
        .run(&input, |bytes| {
            std::fs::write(d.join("model.safetensors"), &bytes).unwrap();
            if let Err(e) = bounded("safetensors", bytes.len(), || Checkpoint::open(&d)) {
                prop_assert!(e.to_string().contains("model.safetensors"), "{e}");
            }
            Ok(())
        })
        .unwrap();

    // The index: an arbitrary weight_map over one real shard.
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model-00001-of-00001.safetensors"), safetensors_bytes()).unwrap();
    let map = prop::collection::vec(
        (prop_oneof![Just("a".to_string()), Just("b".to_string()), ".{0,6}"], json_value()),
        0..4,
    );
    let shard = serde_json::json!("model-00001-of-00001.safetensors");
    let structured = map.prop_map(move |m| {
        let m: serde_json::Map<_, _> =
            m.into_iter().map(|(k, v)| (k, if v.is_null() { shard.clone() } else { v })).collect();
        serde_json::json!({ "metadata": {}, "weight_map": m }).to_string().into_bytes()
    });
    let input = prop_oneof![prop::collection::vec(any::<u8>(), 0..128), structured];
    runner("index")
        .run(&input, |bytes| {
            std::fs::write(d.join("model.safetensors.index.json"), &bytes).unwrap();
            if let Err(e) = bounded("index", bytes.len(), || Checkpoint::open(&d)) {
                prop_assert!(e.to_string().contains(".safetensors"), "{e}");
            }
            Ok(())
        })
        .unwrap();
}

/// JSONL lines: arbitrary text, or objects of the fields the row formats read.
fn jsonl_lines() -> impl Strategy<Value = Vec<u8>> {
    let keys = prop::sample::select(vec![
        "text",
        "input_ids",
        "instruction",
        "input",
        "output",
        "system_prompt",
        "question",
        "response",
        "prompt",
        "completion",
        "chosen",
        "rejected",
        "messages",
        "role",
        "content",
    ]);
    let object = prop::collection::vec((keys, json_value()), 0..5)
        .prop_map(|kv| serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()));
    let line = prop_oneof![object.prop_map(|o| o.to_string()), ".{0,40}"];
    prop::collection::vec(line, 0..5).prop_map(|lines| lines.join("\n").into_bytes())
}

#[test]
fn every_jsonl_row_format_never_panics_and_names_file_and_line() {
    let d = scratch("jsonl");
    let model = tiny();
    let cfg = LlamaConfig::from_file(&model.join("config.json")).unwrap();
    let tok = Tokenizer::from_model_dir(model).unwrap();
    let path = d.join("rows.jsonl");
    let input = prop_oneof![prop::collection::vec(any::<u8>(), 0..128), jsonl_lines()];
    runner("jsonl")
        .run(&(input, any::<bool>()), |(bytes, skip)| {
            std::fs::write(&path, &bytes).unwrap();
            let n = bytes.len();
            let mut errors =
                vec![bounded("pretrain", n, || load_pretrain(&path, Some(&tok), &cfg, 16, skip)).err()];
            for f in
                [SftFormat::Alpaca, SftFormat::OpenOrca, SftFormat::PromptCompletion, SftFormat::Messages]
            {
                errors
                    .push(bounded("sft", n, || load_sft(&path, f, &tok, model, &cfg, 16, skip, skip)).err());
            }
            errors.push(bounded("pairs", n, || load_pairs(&path, &tok, model, &cfg, 16, skip)).err());
            for e in errors.into_iter().flatten() {
                prop_assert!(e.to_string().contains("rows.jsonl"), "{e}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn mergekit_yaml_never_panics_nor_expands_aliases_without_bound() {
    let path = Path::new("/nowhere/merge.yaml");
    // A billion laughs: nine levels of nine aliases would be 9^9 strings if expanded.
    let mut bomb = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for (prev, next) in "abcdefgh".chars().zip("bcdefghi".chars()) {
        bomb += &format!(
            "{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        );
    }
    let e = bounded("alias bomb", bomb.len(), || MergeSpec::from_yaml_str(&bomb, path, 0)).unwrap_err();
    assert!(e.to_string().contains("merge.yaml"), "{e}");

    let valid = "merge_method: slerp\nbase_model: /m/a\nslices:\n  - sources:\n      - model: /m/a\n        layer_range: [0, 2]\n      - model: /m/b\n        layer_range: [0, 2]\nparameters:\n  t: 0.5\ndtype: bfloat16\n";
    let input = prop_oneof![prop::collection::vec(any::<u8>(), 0..200), mutated(valid.as_bytes().to_vec())];
    runner("yaml")
        .run(&input, |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = bounded("yaml", bytes.len(), || MergeSpec::from_yaml_str(&text, path, 0)) {
                prop_assert!(e.to_string().contains("merge.yaml"), "{e}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn toml_config_never_panics_and_exits_as_a_user_error() {
    let d = scratch("toml");
    let file = d.join("run.toml");
    let keys = prop::sample::select(vec![
        "lr", "batch", "seq_len", "steps", "seed", "threads", "device", "out", "warmup",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| format!("{x:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        "\"[a-z]{0,6}\"",
        Just("[1, 2]".to_string()),
        Just("{ a = 1 }".to_string()),
    ];
    let structured = prop::collection::vec((keys, value), 0..4)
        .prop_map(|kv| kv.iter().map(|(k, v)| format!("{k} = {v}\n")).collect::<String>().into_bytes());
    let input = prop_oneof![prop::collection::vec(any::<u8>(), 0..64), structured];
    let mut runner = runner("toml");
    let config = Config { cases: CASES / 4, ..runner.config().clone() };
    runner = TestRunner::new(config);
    runner
        .run(&input, |bytes| {
            std::fs::write(&file, &bytes).unwrap();
            let out = std::process::Command::new(solar_train_path())
                .args(["--config", s(&file), "generate", "--model", "/nonexistent", "--prompt", "x"])
                .output()
                .unwrap();
            let code = out.status.code();
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(matches!(code, Some(1) | Some(2)), "exit {code:?}: {stderr}");
            prop_assert!(!stderr.contains("panicked"), "{stderr}");
            Ok(())
        })
        .unwrap();
}

//! Our reader and writer against checkpoints that transformers wrote (tests/fixtures/hf, made by
//! scripts/make_fixtures.py): each opens and validates, rewriting one reproduces every tensor
//! byte for byte and transformers' shard layout, and our upscale of the fixture's base equals
//! the up-scaled model transformers saved from a sliced state dict.

use solar_model::checkpoint::*;
use solar_model::dus::{upscale, LayerSpec};
use solar_model::names::parameter_shapes;
use solar_model::LlamaConfig;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf")
}

fn without_extra(cfg: &LlamaConfig) -> LlamaConfig {
    LlamaConfig { extra: Default::default(), ..cfg.clone() }
}

/// Where torch's `named_parameters` lists a tensor, the order transformers shards in (names.rs
/// lists layer tensors in that order too).
fn torch_position(name: &str) -> (usize, usize) {
    const TORCH_LAYER_ORDER: [&str; 9] = solar_model::names::LAYER_SUFFIXES;
    match solar_model::names::parse_layer_name(name) {
        Some((i, suffix)) => (i + 1, TORCH_LAYER_ORDER.iter().position(|s| *s == suffix).unwrap_or(9)),
        None if name == solar_model::names::EMBED => (0, 0),
        None => (usize::MAX, usize::from(name == solar_model::names::LM_HEAD)),
    }
}

/// (fixture, stored dtype, shards, max shard size transformers was given)
const CASES: [(&str, SafeDType, usize, Option<u64>); 4] = [
    ("llama_f32", SafeDType::F32, 1, None),
    ("llama_gqa_sharded", SafeDType::F32, 3, Some(60_000)),
    ("llama_tied_bf16", SafeDType::BF16, 1, None),
    ("mistral_window", SafeDType::F32, 1, None),
];

#[test]
fn transformers_checkpoints_open_validate_and_load() {
    for (case, dtype, shards, _) in CASES {
        let dir = fixtures().join(case).join("model");
        let ckpt = Checkpoint::open(&dir).unwrap_or_else(|e| panic!("{case}: {e}"));
        ckpt.validate().unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(ckpt.files().len(), shards, "{case}");
        let expected: Vec<String> = parameter_shapes(ckpt.config()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(ckpt.names(), expected.as_slice(), "{case}");
        for name in ckpt.names() {
            assert_eq!(ckpt.info(name).unwrap().dtype, dtype, "{case} {name}");
            let t = ckpt.load(name).unwrap();
            assert_eq!(t.dims(), ckpt.info(name).unwrap().shape.as_slice());
            assert!(t.to_vec::<f32>().unwrap().iter().all(|x| x.is_finite()), "{case} {name}");
        }
    }
}

#[test]
fn rewriting_reproduces_tensors_and_shard_layout() {
    let tmp = tempfile::tempdir().unwrap();
    for (case, _, _, max_shard_size) in CASES {
        let dir = fixtures().join(case).join("model");
        let src = Checkpoint::open(&dir).unwrap();
        let mut names = src.names().to_vec();
        names.sort_by_key(|n| torch_position(n));
        let plan: Vec<PlannedTensor> = names
            .iter()
            .map(|n| {
                let info = src.info(n).unwrap();
                PlannedTensor { name: n.clone(), dtype: info.dtype, shape: info.shape.clone() }
            })
            .collect();
        let out = tmp.path().join(case);
        let opts = WriteOptions { max_shard_size, ..Default::default() };
        let mut buf = Vec::new();
        write_checkpoint(&out, src.config(), &plan, &opts, Some(&dir), |i, sink| {
            src.stream_bytes(&plan[i].name, &mut buf, |b| sink.write_bytes(plan[i].dtype, b))
        })
        .unwrap();

        let copy = Checkpoint::open(&out).unwrap();
        assert_eq!(without_extra(copy.config()), without_extra(src.config()), "{case}");
        for name in src.names() {
            assert!(copy.read_bytes(name).unwrap() == src.read_bytes(name).unwrap(), "{case} {name}");
        }
        assert_eq!(
            std::fs::read(out.join("generation_config.json")).unwrap(),
            std::fs::read(dir.join("generation_config.json")).unwrap()
        );
        if max_shard_size.is_some() {
            let index = |d: &std::path::Path| -> serde_json::Value {
                serde_json::from_str(&std::fs::read_to_string(d.join(INDEX_FILE)).unwrap()).unwrap()
            };
            let (ours, theirs) = (index(&out), index(&dir));
            assert_eq!(ours["weight_map"], theirs["weight_map"], "{case}: same shards as transformers");
            assert_eq!(ours["metadata"], theirs["metadata"]);
        }
    }
}

#[test]
fn upscale_matches_transformers_state_dict_slicing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fixtures().join("upscale");
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("reference.json")).unwrap()).unwrap();
    let remove = reference["remove"].as_u64().unwrap() as usize;
    let out = tmp.path().join("up");
    let report =
        upscale(&root.join("base"), &out, &LayerSpec::Remove(remove), &WriteOptions::default()).unwrap();
    let layer_map: Vec<usize> = serde_json::from_value(reference["layer_map"].clone()).unwrap();
    assert_eq!(report.layer_map, layer_map);

    let (ours, theirs) = (Checkpoint::open(&out).unwrap(), Checkpoint::open(&root.join("expected")).unwrap());
    theirs.validate().unwrap();
    assert_eq!(ours.names(), theirs.names());
    for name in theirs.names() {
        assert!(ours.read_bytes(name).unwrap() == theirs.read_bytes(name).unwrap(), "{name}");
    }
    assert_eq!(without_extra(ours.config()), without_extra(theirs.config()));
}

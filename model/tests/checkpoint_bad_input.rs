//! Broken checkpoints and failing writes: each gives an Err whose message names the file and,
//! where it applies, the tensor or field; nothing panics, and a failed write leaves neither the
//! output folder nor its temporary folder behind.

mod checkpoint_util;

use checkpoint_util::*;
use solar_engine::DType;
use solar_model::checkpoint::*;
use solar_model::ModelError;
use std::path::{Path, PathBuf};

/// A valid tiny single-file checkpoint in `root/name`.
fn valid(root: &Path, name: &str) -> PathBuf {
    let cfg = tiny(1, true);
    save(root.join(name), &cfg, &random_model(&cfg, 11, DType::F32), &WriteOptions::default())
}

fn open_err(dir: &Path) -> String {
    Checkpoint::open(dir).unwrap_err().to_string()
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "`{p}` not in: {msg}");
    }
}

/// A folder with a valid config and one hand-written model.safetensors.
fn hand_written(root: &Path, name: &str, header: &str, data: &[u8]) -> PathBuf {
    let dir = root.join(name);
    write_config(&dir, &tiny(1, true));
    std::fs::write(dir.join(SINGLE_FILE), safetensors_bytes(header, data)).unwrap();
    dir
}

#[test]
fn missing_weights_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    write_config(&dir, &tiny(1, true));
    assert_mentions(&open_err(&dir), &["model.safetensors", "missing"]);
    assert_mentions(&open_err(&tmp.path().join("nope")), &["nope", "not a folder"]);
}

#[test]
fn truncated_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path(), "t");
    let file = dir.join(SINGLE_FILE);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    // The last tensor in the file (lm_head is tied away: the final norm) runs past the end.
    assert_mentions(&open_err(&dir), &["model.safetensors", "model.norm.weight", "past the end"]);
    std::fs::write(&file, &bytes[..5]).unwrap();
    assert_mentions(&open_err(&dir), &["model.safetensors", "truncated"]);
    std::fs::write(&file, b"").unwrap();
    assert_mentions(&open_err(&dir), &["model.safetensors", "truncated"]);
}

#[test]
fn header_length_past_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path(), "h");
    let file = dir.join(SINGLE_FILE);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[..8].copy_from_slice(&50_000_000u64.to_le_bytes());
    std::fs::write(&file, &bytes).unwrap();
    assert_mentions(&open_err(&dir), &["model.safetensors", "header length 50000000", "past the end"]);
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&file, &bytes).unwrap();
    assert_mentions(&open_err(&dir), &["model.safetensors", "header length"]);
}

#[test]
fn overlapping_and_out_of_range_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let overlap = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}"#;
    let dir = hand_written(tmp.path(), "overlap", overlap, &[0u8; 24]);
    assert_mentions(&open_err(&dir), &["model.safetensors", "tensor `b`", "overlap"]);

    let past = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[246],"data_offsets":[16,1000]}}"#;
    let dir = hand_written(tmp.path(), "past", past, &[0u8; 32]);
    assert_mentions(&open_err(&dir), &["model.safetensors", "tensor `b`", "[16, 1000]", "past the end"]);

    let wrong_size = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#;
    let dir = hand_written(tmp.path(), "size", wrong_size, &[0u8; 8]);
    assert_mentions(&open_err(&dir), &["model.safetensors", "tensor `a`", "needs 16"]);

    let dir = hand_written(tmp.path(), "json", "{not json", &[]);
    assert_mentions(&open_err(&dir), &["model.safetensors", "JSON"]);
}

#[test]
fn unsupported_dtypes() {
    let tmp = tempfile::tempdir().unwrap();
    for dtype in ["I64", "F64"] {
        let header = format!(
            r#"{{"model.embed_tokens.weight":{{"dtype":"{dtype}","shape":[2],"data_offsets":[0,16]}}}}"#
        );
        let dir = hand_written(tmp.path(), dtype, &header, &[0u8; 16]);
        assert_mentions(
            &open_err(&dir),
            &["model.safetensors", "model.embed_tokens.weight", dtype, "not supported"],
        );
    }
}

#[test]
fn missing_wrong_shape_and_extra_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(1, true);
    let model = random_model(&cfg, 12, DType::F32);
    let plan = |m: &[(String, solar_engine::Tensor)]| -> Vec<PlannedTensor> {
        m.iter()
            .map(|(n, t)| PlannedTensor { name: n.clone(), dtype: SafeDType::F32, shape: t.dims().to_vec() })
            .collect()
    };
    let zeros = |_: usize, sink: &mut TensorSink<'_>| {
        let n: usize = sink.shape().iter().product();
        sink.write_f32(&vec![0.0; n])
    };

    let mut p = plan(&model);
    p.retain(|t| t.name != "model.layers.0.mlp.up_proj.weight");
    let dir = tmp.path().join("missing");
    write_checkpoint(&dir, &cfg, &p, &WriteOptions::default(), None, zeros).unwrap();
    let err = Checkpoint::open(&dir).unwrap().validate().unwrap_err().to_string();
    assert_mentions(
        &err,
        &["model.safetensors", "model.layers.0.mlp.up_proj.weight", "missing", "[176, 64]"],
    );
    let err =
        Checkpoint::open(&dir).unwrap().load("model.layers.0.mlp.up_proj.weight").unwrap_err().to_string();
    assert_mentions(&err, &["model.safetensors", "model.layers.0.mlp.up_proj.weight"]);

    let mut p = plan(&model);
    p.iter_mut()
        .filter(|t| t.name == "model.layers.0.self_attn.k_proj.weight")
        .for_each(|t| t.shape = vec![64, 32]);
    let dir = tmp.path().join("shape");
    write_checkpoint(&dir, &cfg, &p, &WriteOptions::default(), None, zeros).unwrap();
    let err = Checkpoint::open(&dir).unwrap().validate().unwrap_err().to_string();
    assert_mentions(&err, &["model.safetensors", "k_proj", "[64, 32]", "[32, 64]"]);

    // A rotary inv_freq buffer is tolerated; any other stray tensor is named.
    let mut p = plan(&model);
    p.push(PlannedTensor {
        name: "model.layers.0.self_attn.rotary_emb.inv_freq".into(),
        dtype: SafeDType::F32,
        shape: vec![8],
    });
    let dir = tmp.path().join("inv_freq");
    write_checkpoint(&dir, &cfg, &p, &WriteOptions::default(), None, zeros).unwrap();
    Checkpoint::open(&dir).unwrap().validate().unwrap();
    p.push(PlannedTensor {
        name: "model.layers.1.mlp.up_proj.weight".into(),
        dtype: SafeDType::F32,
        shape: vec![176, 64],
    });
    let dir = tmp.path().join("extra");
    write_checkpoint(&dir, &cfg, &p, &WriteOptions::default(), None, zeros).unwrap();
    let err = Checkpoint::open(&dir).unwrap().validate().unwrap_err().to_string();
    assert_mentions(
        &err,
        &["model.safetensors", "model.layers.1.mlp.up_proj.weight", "not a tensor of this model"],
    );
}

#[test]
fn broken_index_files() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(2, false);
    let model = random_model(&cfg, 13, DType::F32);
    let opts = WriteOptions { max_shard_size: Some(100_000), ..Default::default() };
    let dir = save(tmp.path().join("sharded"), &cfg, &model, &opts);
    let ckpt = Checkpoint::open(&dir).unwrap();
    let n = ckpt.files().len();
    assert!(n >= 3, "{n} shards");
    drop(ckpt);

    let index_path = dir.join(INDEX_FILE);
    let index_text = std::fs::read_to_string(&index_path).unwrap();
    let second = format!("model-00002-of-{n:05}.safetensors");
    std::fs::rename(dir.join(&second), tmp.path().join("aside")).unwrap();
    assert_mentions(&open_err(&dir), &[INDEX_FILE, &second, "not in the folder"]);
    std::fs::rename(tmp.path().join("aside"), dir.join(&second)).unwrap();

    // The index places the embeddings in the last shard, which does not hold them.
    let mut index: serde_json::Value = serde_json::from_str(&index_text).unwrap();
    let last = format!("model-{n:05}-of-{n:05}.safetensors");
    index["weight_map"]["model.embed_tokens.weight"] = serde_json::json!(last);
    std::fs::write(&index_path, index.to_string()).unwrap();
    assert_mentions(&open_err(&dir), &["model.embed_tokens.weight"]);

    index["weight_map"]["model.embed_tokens.weight"] = serde_json::json!("../../etc/passwd");
    std::fs::write(&index_path, index.to_string()).unwrap();
    assert_mentions(&open_err(&dir), &[INDEX_FILE, "model.embed_tokens.weight", "not a file name"]);

    std::fs::write(&index_path, "{\"metadata\": {}}").unwrap();
    assert_mentions(&open_err(&dir), &[INDEX_FILE, "weight_map", "missing"]);
    std::fs::write(&index_path, "[1, 2").unwrap();
    assert_mentions(&open_err(&dir), &[INDEX_FILE, "not valid JSON"]);
}

#[test]
fn bad_config_is_surfaced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = valid(tmp.path(), "c");
    std::fs::write(dir.join("config.json"), "{ \"model_type\": ").unwrap();
    assert_mentions(&open_err(&dir), &["config.json", "not valid JSON"]);
    let mut cfg = tiny(1, true).to_json();
    cfg.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    assert_mentions(&open_err(&dir), &["config.json", "hidden_size", "missing"]);
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert_mentions(&open_err(&dir), &["config.json"]);
}

#[test]
fn failed_writes_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(1, false);
    let model = random_model(&cfg, 14, DType::F32);
    let plan: Vec<PlannedTensor> = model
        .iter()
        .map(|(n, t)| PlannedTensor { name: n.clone(), dtype: SafeDType::F32, shape: t.dims().to_vec() })
        .collect();
    let out = tmp.path().join("out");
    for max_shard_size in [None, Some(50_000)] {
        let opts = WriteOptions { max_shard_size, ..Default::default() };
        // The source fails on its third tensor.
        let err = write_checkpoint(&out, &cfg, &plan, &opts, None, |i, sink| {
            if i == 2 {
                return Err(ModelError::tensor(
                    Path::new("source.safetensors"),
                    &plan[i].name,
                    "read failed",
                ));
            }
            sink.write_tensor(&model[i].1)
        })
        .unwrap_err()
        .to_string();
        assert_mentions(&err, &["source.safetensors", &plan[2].name, "read failed"]);
        assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));

        // A source that gives too few elements is caught, naming the tensor.
        let err = write_checkpoint(&out, &cfg, &plan, &opts, None, |i, sink| match i {
            3 => sink.write_f32(&[1.0, 2.0]),
            _ => sink.write_tensor(&model[i].1),
        })
        .unwrap_err()
        .to_string();
        assert_mentions(&err, &[&plan[3].name, "given 2 of the"]);
        assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
    }

    // Too many elements, or a tensor of another shape.
    let err = write_checkpoint(&out, &cfg, &plan, &WriteOptions::default(), None, |i, sink| {
        sink.write_tensor(&model[i].1)?;
        sink.write_f32(&[0.0])
    })
    .unwrap_err()
    .to_string();
    assert_mentions(&err, &["model.safetensors", "model.embed_tokens.weight", "more than"]);
    let err = write_checkpoint(&out, &cfg, &plan, &WriteOptions::default(), None, |_, sink| {
        sink.write_tensor(&model[0].1)
    })
    .unwrap_err()
    .to_string();
    assert_mentions(&err, &[&plan[1].name, "shape [256, 64]"]);
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));

    // A failing overwrite keeps the old model.
    let out = save(out, &cfg, &model, &WriteOptions::default());
    let opts = WriteOptions { overwrite: true, ..Default::default() };
    let result = write_checkpoint(&out, &cfg, &plan, &opts, None, |i, sink| match i {
        0 => sink.write_tensor(&model[0].1),
        _ => Err(ModelError::Msg("disk full".into())),
    });
    assert!(result.is_err());
    assert_eq!(entries(tmp.path()), ["out"]);
    assert_same_f32(&Checkpoint::open(&out).unwrap(), &model);
}

#[test]
fn a_folder_without_config_json_says_what_it_holds_and_where_one_is() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    std::fs::create_dir_all(run.join("final")).unwrap();
    std::fs::write(run.join("metrics.jsonl"), "").unwrap();
    std::fs::write(run.join("final").join("config.json"), "{}").unwrap();
    let msg = solar_model::Llama::load_config(&run).unwrap_err().to_string();
    assert_mentions(&msg, &["config.json", "it holds final, metrics.jsonl", "did you mean", "run/final"]);
    let empty = root.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let msg = solar_model::Llama::load_config(&empty).unwrap_err().to_string();
    assert_mentions(&msg, &["empty/config.json", "it is empty", "has config.json beside its weights"]);
}

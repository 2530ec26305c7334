//! Checkpoint write -> read round trips: single file and shards, f32, bf16 and f16, streamed
//! pieces, the index file, the safetensors header metadata, copied-through files, and the
//! atomic replace of an existing folder.

mod checkpoint_util;

use checkpoint_util::*;
use half::{bf16, f16};
use serde_json::Value;
use solar_engine::DType;
use solar_model::checkpoint::*;
use solar_model::names::parameter_shapes;
use solar_model::LlamaConfig;

fn without_extra(cfg: LlamaConfig) -> LlamaConfig {
    LlamaConfig { extra: Default::default(), ..cfg }
}

#[test]
fn single_file_f32_round_trip_is_bitwise() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(2, false);
    let model = random_model(&cfg, 1, DType::F32);
    let dir = save(tmp.path().join("out"), &cfg, &model, &WriteOptions::default());

    assert_eq!(entries(&dir), ["config.json", "model.safetensors"]);
    let ckpt = Checkpoint::open(&dir).unwrap();
    ckpt.validate().unwrap();
    let names: Vec<String> = parameter_shapes(&cfg).into_iter().map(|(n, _)| n).collect();
    assert_eq!(ckpt.names(), names.as_slice(), "names in HF order");
    assert_same_f32(&ckpt, &model);
    assert_eq!(ckpt.info("lm_head.weight").unwrap().dtype, SafeDType::F32);
    let expected_cfg = LlamaConfig { torch_dtype: Some("float32".into()), ..cfg.clone() };
    assert_eq!(without_extra(ckpt.config().clone()), without_extra(expected_cfg));
    // transformers refuses safetensors files without format metadata.
    let header = read_header(&dir.join("model.safetensors"));
    assert_eq!(header["__metadata__"]["format"], "pt");
}

#[test]
fn f32_saved_as_bf16_rounds_to_nearest_even_and_reads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(1, true);
    let model = random_model(&cfg, 2, DType::F32);
    let opts = WriteOptions { dtype: Some(SafeDType::BF16), ..Default::default() };
    let dir = save(tmp.path().join("bf16"), &cfg, &model, &opts);

    let ckpt = Checkpoint::open(&dir).unwrap();
    ckpt.validate().unwrap();
    assert_eq!(ckpt.config().torch_dtype.as_deref(), Some("bfloat16"));
    assert!(ckpt.info("lm_head.weight").is_none(), "tied: no lm_head");
    for (name, t) in &model {
        assert_eq!(ckpt.info(name).unwrap().dtype, SafeDType::BF16);
        let want: Vec<u16> =
            t.to_vec::<f32>().unwrap().into_iter().map(|x| bf16::from_f32(x).to_bits()).collect();
        let got: Vec<u16> = ckpt
            .load_as(name, DType::BF16)
            .unwrap()
            .to_vec::<bf16>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(got, want, "{name}");
        // Loading as f32 widens the stored bf16 exactly.
        let wide: Vec<f32> = ckpt.load(name).unwrap().to_vec().unwrap();
        assert!(wide.iter().zip(&want).all(|(w, b)| w.to_bits() == (*b as u32) << 16), "{name}");
    }
}

#[test]
fn bf16_tensors_keep_their_dtype_and_f16_output_works() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(1, false);
    let model = random_model(&cfg, 3, DType::BF16);
    let dir = save(tmp.path().join("bf16"), &cfg, &model, &WriteOptions::default());
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert_eq!(ckpt.config().torch_dtype.as_deref(), Some("bfloat16"), "input dtype is the default");
    for (name, t) in &model {
        assert_eq!(ckpt.dtype_of(name).unwrap(), SafeDType::BF16);
        let got = ckpt.load_as(name, DType::BF16).unwrap().to_vec::<bf16>().unwrap();
        assert_eq!(got, t.to_vec::<bf16>().unwrap(), "{name}");
    }

    let opts = WriteOptions { dtype: Some(SafeDType::F16), ..Default::default() };
    let model = random_model(&cfg, 4, DType::F32);
    let dir = save(tmp.path().join("f16"), &cfg, &model, &opts);
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert_eq!(ckpt.config().torch_dtype.as_deref(), Some("float16"));
    for (name, t) in &model {
        let want: Vec<f32> =
            t.to_vec::<f32>().unwrap().into_iter().map(|x| f16::from_f32(x).to_f32()).collect();
        assert_eq!(ckpt.load(name).unwrap().to_vec::<f32>().unwrap(), want, "{name}");
    }
}

#[test]
fn sharded_round_trip_with_index() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(3, false);
    for (dtype, out) in [(None, SafeDType::F32), (Some(SafeDType::BF16), SafeDType::BF16)] {
        let model = random_model(&cfg, 5, DType::F32);
        let sizes: Vec<u64> =
            model.iter().map(|(_, t)| (t.elem_count() * out.size_in_bytes()) as u64).collect();
        let total: u64 = sizes.iter().sum();
        let max = total / 4;
        let opts = WriteOptions { dtype, max_shard_size: Some(max), ..Default::default() };
        let dir = save(tmp.path().join(format!("sharded-{out}")), &cfg, &model, &opts);

        // The count a greedy fill gives, worked out here independently of the writer.
        let (mut shards, mut current) = (1, 0);
        for &s in &sizes {
            if current > 0 && current + s > max {
                shards += 1;
                current = 0;
            }
            current += s;
        }
        assert!(shards >= 4, "{shards}");
        let index: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(INDEX_FILE)).unwrap()).unwrap();
        assert_eq!(index["metadata"]["total_size"], total);
        let map = index["weight_map"].as_object().unwrap();
        assert_eq!(map.len(), model.len());
        let mut files: Vec<&str> = map.values().map(|v| v.as_str().unwrap()).collect();
        files.sort();
        files.dedup();
        let expected: Vec<String> =
            (1..=shards).map(|i| format!("model-{i:05}-of-{shards:05}.safetensors")).collect();
        assert_eq!(files, expected);
        assert!(!dir.join(SINGLE_FILE).exists());
        for file in &expected {
            let header = read_header(&dir.join(file));
            assert_eq!(header["__metadata__"]["format"], "pt");
            let held: Vec<&String> =
                header.as_object().unwrap().keys().filter(|k| *k != "__metadata__").collect();
            let bytes: u64 =
                held.iter().map(|n| model.iter().position(|(m, _)| m == *n).map(|i| sizes[i]).unwrap()).sum();
            assert!(bytes <= max || held.len() == 1, "{file}: {bytes} bytes");
            for name in held {
                assert_eq!(map[name], file.as_str(), "{name}");
            }
        }

        let ckpt = Checkpoint::open(&dir).unwrap();
        ckpt.validate().unwrap();
        assert_eq!(ckpt.files().len(), shards);
        let names: Vec<String> = model.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(ckpt.names(), names.as_slice());
        for (name, t) in &model {
            let want: Vec<f32> = t.to_vec::<f32>().unwrap();
            let want: Vec<u32> = match out {
                SafeDType::BF16 => want.iter().map(|&x| bf16::from_f32(x).to_f32().to_bits()).collect(),
                _ => want.iter().map(|x| x.to_bits()).collect(),
            };
            let got: Vec<u32> =
                ckpt.load(name).unwrap().to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
            assert_eq!(got, want, "{name}");
        }
    }
}

#[test]
fn shard_counts_follow_the_greedy_rule() {
    assert_eq!(assign_shards(&[5, 5, 5], Some(10)), vec![vec![0, 1], vec![2]]);
    assert_eq!(assign_shards(&[20, 1, 1], Some(10)), vec![vec![0], vec![1, 2]]);
    assert_eq!(assign_shards(&[1, 20, 1], Some(10)), vec![vec![0], vec![1], vec![2]]);
    assert_eq!(assign_shards(&[5, 5, 5], None), vec![vec![0, 1, 2]]);

    // A limit every tensor fits under in one shard writes the single-file layout, no index.
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(1, true);
    let model = random_model(&cfg, 6, DType::F32);
    let opts = WriteOptions { max_shard_size: Some(1 << 30), ..Default::default() };
    let dir = save(tmp.path().join("one"), &cfg, &model, &opts);
    assert_eq!(entries(&dir), ["config.json", "model.safetensors"]);
    // A limit of one byte gives every tensor its own shard.
    let opts = WriteOptions { max_shard_size: Some(1), ..Default::default() };
    let dir = save(tmp.path().join("each"), &cfg, &model, &opts);
    let ckpt = Checkpoint::open(&dir).unwrap();
    assert_eq!(ckpt.files().len(), model.len());
    assert_same_f32(&ckpt, &model);
}

#[test]
fn streamed_pieces_and_copied_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_tokenizer_files(&src);
    let cfg = tiny(1, true);
    let model = random_model(&cfg, 7, DType::F32);
    let plan: Vec<PlannedTensor> = model
        .iter()
        .map(|(n, t)| PlannedTensor { name: n.clone(), dtype: SafeDType::F32, shape: t.dims().to_vec() })
        .collect();
    let out = tmp.path().join("out");
    // Odd piece sizes (7 elements) exercise the sink's bookkeeping across pieces.
    let report = write_checkpoint(&out, &cfg, &plan, &WriteOptions::default(), Some(&src), |i, sink| {
        let data = model[i].1.to_vec::<f32>()?;
        for piece in data.chunks(7) {
            let bytes: Vec<u8> = piece.iter().flat_map(|x| x.to_le_bytes()).collect();
            sink.write_bytes(SafeDType::F32, &bytes)?;
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(report.tensors, model.len());
    assert_eq!(report.copied.len(), 4);
    for name in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"] {
        assert_eq!(std::fs::read(src.join(name)).unwrap(), std::fs::read(out.join(name)).unwrap(), "{name}");
    }
    assert_same_f32(&Checkpoint::open(&out).unwrap(), &model);
}

#[test]
fn existing_output_is_refused_or_replaced_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(1, true);
    let first = random_model(&cfg, 8, DType::F32);
    let second = random_model(&cfg, 9, DType::F32);
    let out = save(tmp.path().join("out"), &cfg, &first, &WriteOptions::default());

    let err = save_model(&out, &cfg, &second, &WriteOptions::default(), None).unwrap_err().to_string();
    assert!(err.contains("out") && err.contains("already exists"), "{err}");
    assert_same_f32(&Checkpoint::open(&out).unwrap(), &first);

    let opts = WriteOptions { overwrite: true, ..Default::default() };
    save_model(&out, &cfg, &second, &opts, None).unwrap();
    assert_same_f32(&Checkpoint::open(&out).unwrap(), &second);
    assert_eq!(entries(tmp.path()), ["out"], "no temporary or old folder left");
}

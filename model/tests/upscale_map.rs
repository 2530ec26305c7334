//! Depth up-scaling on small checkpoints: the SOLAR layer map, mergekit-style slices, tied and
//! untied heads, sharded and bf16 bases; every output tensor equals its source byte for byte;
//! bad layer specs and broken bases fail before anything is written.

mod checkpoint_util;

use checkpoint_util::*;
use solar_engine::DType;
use solar_model::checkpoint::*;
use solar_model::dus::{upscale, LayerPlan, LayerSpec};
use solar_model::names::{layer_name, parameter_shapes, EMBED, FINAL_NORM, LAYER_SUFFIXES, LM_HEAD};
use std::path::Path;

/// Asserts `out` is `base` up-scaled with `map` (new layer i = base layer map[i]), byte for byte.
fn assert_upscaled(base: &Path, out: &Path, map: &[usize]) {
    let b = Checkpoint::open(base).unwrap();
    let o = Checkpoint::open(out).unwrap();
    o.validate().unwrap();
    assert_eq!(o.config().num_hidden_layers, map.len());
    let expected_cfg = solar_model::LlamaConfig {
        num_hidden_layers: map.len(),
        extra: Default::default(),
        ..b.config().clone()
    };
    assert_eq!(solar_model::LlamaConfig { extra: Default::default(), ..o.config().clone() }, expected_cfg);
    for (new, &src) in map.iter().enumerate() {
        for suffix in LAYER_SUFFIXES {
            let (n, s) = (layer_name(new, suffix), layer_name(src, suffix));
            assert_eq!(o.read_bytes(&n).unwrap(), b.read_bytes(&s).unwrap(), "{n} <- {s}");
            assert_eq!(o.info(&n).unwrap().dtype, b.info(&s).unwrap().dtype);
        }
    }
    let mut shared = vec![EMBED, FINAL_NORM];
    if !b.config().tie_word_embeddings {
        shared.push(LM_HEAD);
    }
    for name in shared {
        assert_eq!(o.read_bytes(name).unwrap(), b.read_bytes(name).unwrap(), "{name}");
    }
    let names: Vec<String> = parameter_shapes(o.config()).into_iter().map(|(n, _)| n).collect();
    assert_eq!(o.names(), names.as_slice(), "exactly the model's tensors, in HF order");
}

#[test]
fn solar_map_on_eight_layers() {
    let tmp = tempfile::tempdir().unwrap();
    for tied in [false, true] {
        let cfg = tiny(8, tied);
        let base = save(
            tmp.path().join(format!("base-{tied}")),
            &cfg,
            &random_model(&cfg, 21, DType::F32),
            &WriteOptions::default(),
        );
        write_tokenizer_files(&base);
        let out = tmp.path().join(format!("up-{tied}"));
        let report = upscale(&base, &out, &LayerSpec::Remove(2), &WriteOptions::default()).unwrap();

        // new i = base i for i < 6; new 6 + i = base 2 + i.
        let map: Vec<usize> = (0..6).chain(2..8).collect();
        assert_eq!(report.layer_map, map);
        assert_eq!((report.base_layers, report.new_layers), (8, 12));
        assert_eq!(report.num_parameters, tiny(12, tied).num_parameters());
        assert_upscaled(&base, &out, &map);
        for name in
            ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]
        {
            assert_eq!(
                std::fs::read(base.join(name)).unwrap(),
                std::fs::read(out.join(name)).unwrap(),
                "{name}"
            );
        }
        let o = Checkpoint::open(&out).unwrap();
        assert_eq!(o.info(LM_HEAD).is_some(), !tied);
        assert_eq!(o.config().torch_dtype.as_deref(), Some("float32"));
    }
}

#[test]
fn slices_stack_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(4, false);
    let base =
        save(tmp.path().join("base"), &cfg, &random_model(&cfg, 22, DType::F32), &WriteOptions::default());
    let spec = LayerSpec::parse_slices("2:4,0:1, 1:3").unwrap();
    let out = tmp.path().join("up");
    let report = upscale(&base, &out, &spec, &WriteOptions::default()).unwrap();
    assert_eq!(report.layer_map, vec![2, 3, 0, 1, 2]);
    assert_upscaled(&base, &out, &[2, 3, 0, 1, 2]);

    // --remove 0 is a plain doubling.
    let out = tmp.path().join("double");
    upscale(&base, &out, &LayerSpec::Remove(0), &WriteOptions::default()).unwrap();
    assert_upscaled(&base, &out, &[0, 1, 2, 3, 0, 1, 2, 3]);
}

#[test]
fn sharded_bf16_base_and_dtype_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(4, false);
    let model = random_model(&cfg, 23, DType::BF16);
    let opts = WriteOptions { max_shard_size: Some(60_000), ..Default::default() };
    let base = save(tmp.path().join("base"), &cfg, &model, &opts);
    assert!(base.join(INDEX_FILE).exists());

    // Sharded in, sharded out, bytes unchanged (bf16 stays bf16).
    let out = tmp.path().join("up");
    let report = upscale(&base, &out, &LayerSpec::Remove(1), &opts).unwrap();
    assert!(report.files.len() > 1);
    assert_upscaled(&base, &out, &[0, 1, 2, 1, 2, 3]);
    assert_eq!(Checkpoint::open(&out).unwrap().config().torch_dtype.as_deref(), Some("bfloat16"));

    // Asked for f32: every value widens exactly.
    let out = tmp.path().join("up32");
    let opts = WriteOptions { dtype: Some(SafeDType::F32), ..Default::default() };
    upscale(&base, &out, &LayerSpec::Remove(1), &opts).unwrap();
    let (b, o) = (Checkpoint::open(&base).unwrap(), Checkpoint::open(&out).unwrap());
    assert_eq!(o.info(EMBED).unwrap().dtype, SafeDType::F32);
    let src = layer_name(3, "mlp.down_proj.weight");
    let dst = layer_name(5, "mlp.down_proj.weight");
    let want: Vec<u32> = b.load(&src).unwrap().to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
    let got: Vec<u32> = o.load(&dst).unwrap().to_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
    assert_eq!(got, want);
}

#[test]
fn upscale_in_place_replaces_the_base() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(3, false);
    let base =
        save(tmp.path().join("m"), &cfg, &random_model(&cfg, 26, DType::F32), &WriteOptions::default());
    write_tokenizer_files(&base);
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for name in entries(&base) {
        std::fs::copy(base.join(&name), copy.join(&name)).unwrap();
    }
    let e = upscale(&base, &base, &LayerSpec::Remove(1), &WriteOptions::default()).unwrap_err().to_string();
    assert!(e.contains("already exists") && e.contains("--overwrite"), "{e}");
    let opts = WriteOptions { overwrite: true, ..Default::default() };
    upscale(&base, &base, &LayerSpec::Remove(1), &opts).unwrap();
    assert_upscaled(&copy, &base, &[0, 1, 1, 2]);
    assert!(base.join("tokenizer.json").exists());
    assert_eq!(entries(tmp.path()), ["copy", "m"]);
}

#[test]
fn bad_layer_specs_name_the_flag() {
    let msg = |r: solar_model::Result<LayerPlan>| r.unwrap_err().to_string();
    let e = msg(LayerPlan::remove(8, 8));
    assert!(e.contains("--remove 8") && e.contains("8 layers"), "{e}");
    let e = msg(LayerSpec::Remove(40).plan(32));
    assert!(e.contains("--remove 40") && e.contains("32 layers"), "{e}");
    for (text, bad) in [("0:4,6:9", "6:9"), ("3:3", "3:3"), ("5:2", "5:2")] {
        let e = msg(LayerSpec::parse_slices(text).unwrap().plan(8));
        assert!(e.contains("--slices") && e.contains(bad) && e.contains("8 layers"), "{e}");
    }
    for text in ["0-4", "a:b", "", "1:2,", "-1:3"] {
        let e = LayerSpec::parse_slices(text).unwrap_err().to_string();
        assert!(e.contains("--slices") && e.contains("a:b"), "{text}: {e}");
    }
}

#[test]
fn failures_leave_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(2, true);
    let base =
        save(tmp.path().join("base"), &cfg, &random_model(&cfg, 24, DType::F32), &WriteOptions::default());
    let out = tmp.path().join("up");

    let e = upscale(&base, &out, &LayerSpec::Remove(2), &WriteOptions::default()).unwrap_err().to_string();
    assert!(e.contains("--remove 2"), "{e}");
    assert_eq!(entries(tmp.path()), ["base"]);

    // A base missing a tensor fails validation, naming it, before any output exists.
    let mut broken = random_model(&cfg, 25, DType::F32);
    broken.retain(|(n, _)| n != "model.layers.1.mlp.gate_proj.weight");
    let bad = save(tmp.path().join("bad"), &cfg, &broken, &WriteOptions::default());
    let e = upscale(&bad, &out, &LayerSpec::Remove(1), &WriteOptions::default()).unwrap_err().to_string();
    assert!(e.contains("model.layers.1.mlp.gate_proj.weight") && e.contains("missing"), "{e}");
    assert_eq!(entries(tmp.path()), ["bad", "base"]);

    // A base truncated after opening: the read fails mid-stream and the output is removed.
    let file = base.join(SINGLE_FILE);
    let len = std::fs::metadata(&file).unwrap().len();
    let spec = LayerSpec::Remove(1);
    let opened = Checkpoint::open(&base).unwrap();
    opened.validate().unwrap();
    std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len - 64).unwrap();
    let mut buf = Vec::new();
    let e = opened.stream_bytes(FINAL_NORM, &mut buf, |_| Ok(())).unwrap_err().to_string();
    assert!(e.contains("model.safetensors") && e.contains(FINAL_NORM), "{e}");
    let e = upscale(&base, &out, &spec, &WriteOptions::default()).unwrap_err().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    assert_eq!(entries(tmp.path()), ["bad", "base"]);
}

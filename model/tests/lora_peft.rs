//! LoRA against PEFT. scripts/make_fixtures.py had PEFT build an adapter (all-linear, rsLoRA,
//! random B) on the llama_f32 fixture and save it, with PeftModel's logits on fixed inputs and
//! the logits of merge_and_unload's folded model (tests/fixtures/hf/lora/). Solar loads PEFT's
//! adapter and gives its logits (within 1e-4, as the other HF fixtures) and greedy tokens, folds it into the same
//! model as merge_and_unload, and an adapter Solar writes has PEFT's tensor names, shapes and
//! config fields.

use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use solar_model::checkpoint::SafeDType;
use solar_model::generate::GenerateOptions;
use solar_model::lora::peft_io::{load_adapter, save_adapter, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use solar_model::{Llama, ModelInput};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf").join(name)
}

fn reference(name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(fixture("lora/reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let values = match t.dtype() {
        Dtype::F32 => t.data().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        Dtype::I32 => t.data().chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        other => panic!("unexpected dtype {other:?}"),
    };
    (t.shape().to_vec(), values)
}

fn input() -> ModelInput {
    let (shape, ids) = reference("input_ids");
    let ids: Vec<u32> = ids.iter().map(|&x| x as u32).collect();
    ModelInput::rows(&ids, shape[0], shape[1]).unwrap()
}

fn worst(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
}

fn adapted() -> Llama {
    let base = Llama::load(&fixture("llama_f32/model")).unwrap();
    let lora = load_adapter(&fixture("lora/adapter"), &base.config).unwrap();
    base.with_lora(lora).unwrap()
}

#[test]
fn a_peft_adapter_gives_peft_logits_and_folds_into_merge_and_unloads_model() {
    let model = adapted();
    let spec = &model.lora().unwrap().spec;
    assert_eq!((spec.r, spec.alpha, spec.rslora, spec.targets.len()), (4, 6.0, true, 7));
    let input = input();
    let got = model.logits(None, &input).unwrap().to_vec_f64().unwrap();
    let (_, want) = reference("logits");
    let base = Llama::load(&fixture("llama_f32/model")).unwrap().logits(None, &input).unwrap();
    assert!(worst(&base.to_vec_f64().unwrap(), &want) > 1e-2, "the adapter must matter");
    let w = worst(&got, &want);
    assert!(w < 1e-4, "adapted logits differ from PeftModel's by {w}");

    // Greedy tokens from the adapted model (KV-cached decoding) as PeftModel.generate's.
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("lora/reference.json")).unwrap()).unwrap();
    let ints = |k: &str| -> Vec<u32> {
        meta[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let (prompt, greedy) = (ints("prompt"), ints("greedy"));
    let opts = GenerateOptions { max_new_tokens: greedy.len(), ignore_eos: true, ..Default::default() };
    assert_eq!(model.generate(&prompt, &opts).unwrap(), greedy, "greedy tokens");

    let folded = model.folded().unwrap().logits(None, &input).unwrap().to_vec_f64().unwrap();
    let (_, merged) = reference("merged_logits");
    let w = worst(&folded, &merged);
    assert!(w < 1e-4, "folded logits differ from merge_and_unload's by {w}");
}

fn keys_and_shapes(dir: &std::path::Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(dir.join(ADAPTER_WEIGHTS)).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(k, v)| (k, v.shape().to_vec())).collect()
}

fn config(dir: &std::path::Path) -> serde_json::Map<String, Value> {
    serde_json::from_str::<Value>(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG)).unwrap())
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

#[test]
fn an_adapter_solar_writes_has_peft_names_shapes_and_config_fields() {
    let model = adapted();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lora_peft_written");
    let _ = std::fs::remove_dir_all(&out);
    save_adapter(model.lora().unwrap(), &out, "llama_f32/model", SafeDType::F32, false, None).unwrap();
    let peft = fixture("lora/adapter");
    assert_eq!(keys_and_shapes(&out), keys_and_shapes(&peft), "tensor names and shapes");

    let (ours, theirs) = (config(&out), config(&peft));
    for k in ours.keys() {
        assert!(theirs.contains_key(k), "Solar writes `{k}`, which PEFT's adapter_config.json lacks");
    }
    let same = [
        "peft_type",
        "task_type",
        "r",
        "lora_alpha",
        "lora_dropout",
        "use_rslora",
        "bias",
        "fan_in_fan_out",
        "init_lora_weights",
        "inference_mode",
        "use_dora",
        "modules_to_save",
        "layers_to_transform",
        "rank_pattern",
        "alpha_pattern",
    ];
    for k in same {
        let num = |v: &Value| v.as_f64().map_or(v.clone(), Value::from);
        assert_eq!(num(&ours[k]), num(&theirs[k]), "config field `{k}`");
    }
    // PEFT wrote all-linear out as module paths; the modules named are the same.
    let modules = |v: &Value| -> std::collections::BTreeSet<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().rsplit('.').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(modules(&ours["target_modules"]), modules(&theirs["target_modules"]));

    // What Solar wrote reads back to the same adapter, bitwise.
    let again = load_adapter(&out, &model.config).unwrap();
    for ((n, a), (m, b)) in again.named_params().zip(model.lora().unwrap().named_params()) {
        assert_eq!(n, m);
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), "{n}");
    }
}

#[test]
fn adapters_solar_cannot_apply_are_refused_naming_the_field() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("lora_peft_refused");
    let cfg = Llama::load_config(&fixture("llama_f32/model")).unwrap();
    for (field, value, says) in [
        ("use_dora", Value::Bool(true), "use_dora"),
        ("peft_type", Value::from("IA3"), "peft_type"),
        ("target_modules", Value::from(vec!["lm_head"]), "lm_head"),
        ("r", Value::from(3), "shape"),
    ] {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(fixture("lora/adapter").join(ADAPTER_WEIGHTS), dir.join(ADAPTER_WEIGHTS)).unwrap();
        let mut c = config(&fixture("lora/adapter"));
        c.insert(field.into(), value);
        std::fs::write(dir.join(ADAPTER_CONFIG), Value::Object(c).to_string()).unwrap();
        let err = load_adapter(&dir, &cfg).err().unwrap_or_else(|| panic!("{field}: accepted")).to_string();
        assert!(err.contains(says), "{field}: {err}");
    }
}

//! Layer 4: Solar's Llama/Mistral against HF transformers. scripts/make_fixtures.py wrote small
//! random checkpoints (f32 single file, GQA sharded, tied embeddings in bf16, Mistral with a
//! sliding window) with transformers' logits, loss, every parameter gradient and greedy tokens
//! for fixed inputs. Logits must agree within 1e-4, the loss within 1e-5 relative, gradients
//! within 1e-4 relative to each tensor's scale, greedy tokens exactly.

use safetensors::{Dtype, SafeTensors};
use solar_engine::{ops, Tape, Tensor};
use solar_model::generate::GenerateOptions;
use solar_model::{Llama, ModelInput};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf").join(name)
}

struct Reference {
    bytes: Vec<u8>,
    meta: serde_json::Value,
}

impl Reference {
    fn load(case: &str) -> Reference {
        let dir = fixture(case);
        let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
        let meta =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
        Reference { bytes, meta }
    }
    fn tensor(&self, name: &str) -> (Vec<usize>, Vec<f64>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("reference has no {name}"));
        let data = t.data();
        let values = match t.dtype() {
            Dtype::F32 => data.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            Dtype::I32 => data.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            other => panic!("unexpected dtype {other:?}"),
        };
        (t.shape().to_vec(), values)
    }
    fn ints(&self, name: &str) -> Vec<i64> {
        self.tensor(name).1.iter().map(|&x| x as i64).collect()
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn check_case(case: &str) {
    let model = Llama::load(&fixture(case).join("model")).unwrap();
    let r = Reference::load(case);
    let (shape, _) = r.tensor("input_ids");
    let (b, t) = (shape[0], shape[1]);
    let ids: Vec<u32> = r.ints("input_ids").iter().map(|&x| x as u32).collect();
    let labels = r.ints("labels");
    let input = ModelInput::rows(&ids, b, t).unwrap();

    // Logits.
    let logits = model.logits(None, &input).unwrap().to_vec_f64().unwrap();
    let (_, want) = r.tensor("logits");
    let worst = logits.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(worst < 1e-4, "{case}: logits differ by {worst}");

    // Loss: HF shifts labels inside (position i predicts label i+1); -100 labels are ignored.
    let targets: Vec<i32> =
        (0..b * t).map(|i| if i % t == t - 1 { -100 } else { labels[i + 1] as i32 }).collect();
    let targets = Tensor::from_vec(targets, [b, t]).unwrap();
    let tape = Tape::new();
    let ce = model.loss(Some(&tape), &input, &targets).unwrap();
    let loss = ops::scale(&ce.loss_sum, 1.0 / ce.count as f64).unwrap();
    let want_loss = r.meta["loss"].as_f64().unwrap();
    let got_loss = loss.to_scalar().unwrap();
    assert!((got_loss - want_loss).abs() <= 1e-5 * want_loss.abs(), "{case}: loss {got_loss} vs {want_loss}");

    // Every parameter's gradient.
    let grads = tape.backward(&loss).unwrap();
    for (name, p) in model.named_params() {
        let got =
            grads.get(p).unwrap_or_else(|| panic!("{case}: no gradient for {name}")).to_vec_f64().unwrap();
        let (_, want) = r.tensor(&format!("grad.{name}"));
        let scale = max_abs(&want);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * scale + 1e-4 * w.abs(),
                "{case}: {name}[{i}]: {g} vs {w} (scale {scale})"
            );
        }
    }

    // Greedy generation with the KV cache.
    let prompt: Vec<u32> =
        r.meta["prompt"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let greedy: Vec<u32> =
        r.meta["greedy"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let opts = GenerateOptions { max_new_tokens: greedy.len(), ignore_eos: true, ..Default::default() };
    assert_eq!(model.generate(&prompt, &opts).unwrap(), greedy, "{case}: greedy tokens");
}

#[test]
fn hf_llama_f32_single_file() {
    check_case("llama_f32");
}

#[test]
fn hf_llama_gqa_sharded() {
    check_case("llama_gqa_sharded");
}

#[test]
fn hf_llama_tied_embeddings_bf16() {
    check_case("llama_tied_bf16");
}

#[test]
fn hf_mistral_sliding_window() {
    check_case("mistral_window");
}

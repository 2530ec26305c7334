//! LoRA in the model: gradients of every adapter (A and B of all seven projection kinds) against
//! central finite differences of the whole model's loss in f64; a fresh adapter (B = 0) leaves
//! the logits bitwise unchanged; the frozen base gets no gradient; folding W + s B A gives the
//! adapted model's logits; dropout masks repeat with the stream; PEFT's initialisation bounds.

use solar_engine::{DType, Rng, Tape, Tensor};
use solar_model::llama::next_token_targets;
use solar_model::lora::{Lora, LoraSpec, ALL_TARGETS};
use solar_model::presets::preset;
use solar_model::{Llama, LlamaConfig, ModelInput};

/// A model small enough to perturb every adapter element one at a time.
fn micro() -> LlamaConfig {
    LlamaConfig {
        vocab_size: 11,
        hidden_size: 8,
        intermediate_size: 12,
        num_attention_heads: 2,
        num_key_value_heads: 1,
        head_dim: 4,
        ..preset("tiny").unwrap()
    }
}

fn spec(r: usize, dropout: f64, rslora: bool) -> LoraSpec {
    LoraSpec { r, alpha: 3.0, dropout, targets: ALL_TARGETS.to_vec(), rslora }
}

/// Adapters with B set to random values too, so both A's and B's gradients are nonzero.
fn random_lora(cfg: &LlamaConfig, spec: LoraSpec, seed: u64) -> Lora {
    let mut lora = Lora::init(spec, cfg, seed).unwrap();
    let mut rng = Rng::new(seed + 1);
    for (name, p) in lora.named_params_mut() {
        if name.ends_with("lora_B.weight") {
            *p = Tensor::randn(p.dims().to_vec(), 0.3, DType::F32, &mut rng);
        }
    }
    lora
}

fn input() -> (ModelInput, Tensor) {
    let ids: Vec<u32> = vec![1, 4, 7, 2, 9, 3, 10, 5, 0, 6];
    let (b, t) = (2, 5);
    let targets = Tensor::from_vec(next_token_targets(&ids, b, t), [b, t]).unwrap();
    (ModelInput::rows(&ids, b, t).unwrap(), targets)
}

fn loss(model: &Llama, tape: Option<&Tape>) -> Tensor {
    let (inp, targets) = input();
    model.loss(tape, &inp, &targets).unwrap().loss_sum
}

#[test]
fn adapter_gradients_match_finite_differences_in_f64_for_every_projection_kind() {
    let cfg = micro();
    for rslora in [false, true] {
        let base = Llama::init(cfg.clone(), 3).unwrap();
        let mut model = base.with_lora(random_lora(&cfg, spec(2, 0.0, rslora), 5)).unwrap();
        model = model.to_f64_for_checks().unwrap();
        assert_eq!(model.compute_dtype(), DType::F64);
        let tape = Tape::new();
        let grads = tape.backward(&loss(&model, Some(&tape))).unwrap();
        // The frozen base has no gradient at all.
        for (name, p) in model.named_params() {
            assert!(grads.get(p).is_none(), "frozen {name} got a gradient");
        }
        let names: Vec<String> = model.trainable_params().iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names.len(), cfg.num_hidden_layers * 7 * 2);
        let h = 1e-6;
        for name in &names {
            let p = model.lora().unwrap().param(name).unwrap().clone();
            let analytic =
                grads.get(&p).unwrap_or_else(|| panic!("no gradient for {name}")).to_vec_f64().unwrap();
            let base_vals = p.to_vec_f64().unwrap();
            for j in 0..base_vals.len() {
                let mut at = |delta: f64| {
                    let mut v = base_vals.clone();
                    v[j] += delta;
                    let t = Tensor::from_vec(v, p.dims().to_vec()).unwrap();
                    for (n, q) in model.lora_mut().unwrap().named_params_mut() {
                        if n == name {
                            *q = t.clone();
                        }
                    }
                    loss(&model, None).to_scalar().unwrap()
                };
                let numeric = (at(h) - at(-h)) / (2.0 * h);
                at(0.0);
                let got = analytic[j];
                assert!(
                    (got - numeric).abs() <= 1e-7 + 1e-5 * numeric.abs(),
                    "{name}[{j}] rslora={rslora}: tape {got}, finite differences {numeric}"
                );
            }
        }
    }
}

#[test]
fn a_fresh_adapter_leaves_the_model_unchanged_and_initialises_a_as_peft() {
    let cfg = preset("tiny").unwrap();
    let (inp, _) = input();
    let base = Llama::init(cfg.clone(), 7).unwrap();
    let want = base.logits(None, &inp).unwrap().to_vec::<f32>().unwrap();
    let lora = Lora::init(spec(4, 0.0, false), &cfg, 1).unwrap();
    for (name, p) in lora.named_params() {
        let v = p.to_vec::<f32>().unwrap();
        if name.ends_with("lora_B.weight") {
            assert!(v.iter().all(|&x| x == 0.0), "{name} is not zero");
        } else {
            // uniform(-1/sqrt(in), 1/sqrt(in)): inside the bound and spread over it.
            let bound = 1.0 / (p.dims()[1] as f32).sqrt();
            let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
            assert!(max <= bound && max > 0.8 * bound, "{name}: max |a| {max}, bound {bound}");
        }
    }
    let model = base.with_lora(lora).unwrap();
    let got = model.logits(None, &inp).unwrap().to_vec::<f32>().unwrap();
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn folding_the_adapter_gives_the_adapted_logits_and_switching_it_off_gives_the_base() {
    let cfg = preset("tiny").unwrap();
    let (inp, _) = input();
    let base = Llama::init(cfg.clone(), 9).unwrap();
    let plain = base.logits(None, &inp).unwrap().to_vec::<f32>().unwrap();
    let mut model = base.with_lora(random_lora(&cfg, spec(3, 0.0, true), 2)).unwrap();
    let adapted = model.logits(None, &inp).unwrap().to_vec::<f32>().unwrap();
    let folded = model.folded().unwrap().logits(None, &inp).unwrap().to_vec::<f32>().unwrap();
    let differs = adapted.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-3);
    assert!(differs, "the random adapter should change the logits");
    for (i, (a, f)) in adapted.iter().zip(&folded).enumerate() {
        assert!((a - f).abs() <= 1e-4 + 1e-4 * a.abs(), "logit {i}: adapted {a}, folded {f}");
    }
    model.lora_mut().unwrap().set_enabled(false);
    let off = model.logits(None, &inp).unwrap().to_vec::<f32>().unwrap();
    assert!(off.iter().zip(&plain).all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn dropout_masks_follow_the_stream_and_vanish_without_one() {
    let cfg = preset("tiny").unwrap();
    let (inp, targets) = input();
    let model =
        Llama::init(cfg.clone(), 4).unwrap().with_lora(random_lora(&cfg, spec(2, 0.5, false), 8)).unwrap();
    let run = |stream: Option<u64>| {
        model.lora().unwrap().set_dropout_stream(stream.map(Rng::new));
        let tape = Tape::new();
        let l = model.loss(Some(&tape), &inp, &targets).unwrap().loss_sum.to_scalar().unwrap();
        model.lora().unwrap().set_dropout_stream(None);
        l
    };
    let (a, b, c, none) = (run(Some(1)), run(Some(1)), run(Some(2)), run(None));
    assert_eq!(a.to_bits(), b.to_bits(), "same stream, same masks");
    assert_ne!(a.to_bits(), c.to_bits(), "another stream, other masks");
    assert_ne!(a.to_bits(), none.to_bits(), "dropout off without a stream");
    let eval = model.loss(None, &inp, &targets).unwrap().loss_sum.to_scalar().unwrap();
    assert_eq!(eval.to_bits(), none.to_bits());
}

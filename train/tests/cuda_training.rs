//! GPU tests of the whole model and of training: a small Llama's loss and every parameter's
//! gradient on CUDA (bf16 compute, f32 master weights) against the CPU (f32), 20 AdamW steps on
//! both with losses within 2%, and two GPU runs giving bitwise the same weights. Skipped, saying
//! why, without a GPU.

use solar_engine::optim::{AdamW, AdamWConfig};
use solar_engine::{ops, Device, Rng, Tape, Tensor};
use solar_model::llama::next_token_targets;
use solar_model::names::is_norm;
use solar_model::presets::preset;
use solar_model::{Llama, LlamaConfig, ModelInput};

/// Head dim 64 (the attention kernels take 64 and 128), GQA, untied head.
fn config() -> LlamaConfig {
    let mut c = preset("tiny").unwrap();
    c.hidden_size = 256;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.head_dim = 64;
    c.intermediate_size = 512;
    c.num_hidden_layers = 2;
    c.vocab_size = 320;
    c.tie_word_embeddings = false;
    c
}

fn batch(b: usize, t: usize, seed: u64) -> (ModelInput, Tensor) {
    let mut rng = Rng::new(seed);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(320) as u32).collect();
    let targets = Tensor::from_vec(next_token_targets(&ids, b, t), [b, t]).unwrap();
    (ModelInput::rows(&ids, b, t).unwrap(), targets)
}

#[test]
fn cuda_model_loss_and_gradients_match_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let cpu = Llama::init(config(), 3).unwrap();
    let gpu = Llama::init(config(), 3).unwrap().to_device(Device::Cuda(0)).unwrap();
    let (input, targets) = batch(2, 37, 5);
    let grads = |m: &Llama| {
        let tape = Tape::new();
        let ce = m.loss(Some(&tape), &input, &targets).unwrap();
        let mean = ops::scale(&ce.loss_sum, 1.0 / ce.count as f64).unwrap();
        let g = tape.backward(&mean).unwrap();
        (mean.to_scalar().unwrap(), g)
    };
    let (lc, gc) = grads(&cpu);
    let (lg, gg) = grads(&gpu);
    eprintln!("loss cpu {lc:.6} gpu {lg:.6}");
    assert!((lc - lg).abs() <= 1e-2 * lc.abs(), "loss: cpu {lc}, gpu {lg}");
    for ((name, pc), (_, pg)) in cpu.named_params().zip(gpu.named_params()) {
        let a = gc.get(pc).unwrap_or_else(|| panic!("{name}: no CPU gradient")).to_vec_f64().unwrap();
        let b = gg.get(pg).unwrap_or_else(|| panic!("{name}: no GPU gradient")).to_vec_f64().unwrap();
        let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
        assert!(b.iter().all(|x| x.is_finite()), "{name}: non-finite GPU gradient");
        eprintln!("{name}: max |err| / max |grad| = {:.3e}", worst / scale);
        // bf16 activations: a few percent of the tensor's scale.
        assert!(worst <= 5e-2 * scale, "{name}: gradient differs by {worst:.3e} (scale {scale:.3e})");
    }
}

/// Trains `steps` AdamW steps on `device`; returns the losses and the final weights' bits.
fn train(device: Device, steps: usize) -> (Vec<f64>, Vec<u32>) {
    let mut model = Llama::init(config(), 7).unwrap().to_device(device).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut losses = Vec::new();
    for s in 0..steps {
        let (input, targets) = batch(4, 32, 100 + (s % 4) as u64);
        let tape = Tape::new();
        let ce = model.loss(Some(&tape), &input, &targets).unwrap();
        let mean = ops::scale(&ce.loss_sum, 1.0 / ce.count as f64).unwrap();
        let grads = tape.backward(&mean).unwrap();
        losses.push(mean.to_scalar().unwrap());
        opt.begin_step();
        for (name, p) in model.named_params_mut() {
            let g = grads.get_id(p.id()).unwrap().clone();
            opt.update(p, &g, !is_norm(name), 3e-3).unwrap();
        }
    }
    let bits = model.named_params().flat_map(|(_, p)| p.to_vec::<f32>().unwrap()).map(f32::to_bits).collect();
    (losses, bits)
}

#[test]
fn cuda_twenty_steps_track_cpu_and_repeat_bitwise() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let (lc, _) = train(Device::Cpu, 20);
    let (lg, wg) = train(Device::Cuda(0), 20);
    for (i, (a, b)) in lc.iter().zip(&lg).enumerate() {
        eprintln!("step {:>2}: cpu {a:.5} gpu {b:.5}", i + 1);
        assert!((a - b).abs() <= 0.02 * a.abs(), "step {}: cpu {a}, gpu {b} (more than 2% apart)", i + 1);
    }
    assert!(lg[19] < lg[0], "the GPU run did not learn: {} -> {}", lg[0], lg[19]);
    let (lg2, wg2) = train(Device::Cuda(0), 20);
    assert_eq!(lg, lg2, "two GPU runs gave different losses");
    assert!(wg == wg2, "two GPU runs gave different weights");
}

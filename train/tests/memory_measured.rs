//! The memory a training run reports is the memory it took, and trainer/memory.rs predicts it:
//! metrics.jsonl's `peak_alloc_bytes` (the engine's own high-water of tensor storage,
//! solar_engine::alloc_stats) against `estimate_plan`'s tensor part, for a full fine-tune and
//! with --recompute, with LoRA (r 8 on q_proj and v_proj) and LoRA + recompute, on a small
//! model on the CPU. One test in its own binary: the engine's
//! counters are per process, and another test training beside it would add to them.
//!
//! Tolerance: the prediction must hold the measurement from above (it is what --dry-run
//! promises a run will not exceed) and the measurement must reach 70% of it (measured here:
//! 83% without recompute, 81% with it). Why not closer: the
//! estimate charges every layer for everything a tape could keep (the layer input, both
//! normed inputs, q/k/v and rotated copies, residual sums: 5C + 3(H + 2Hkv)D + 3F per token)
//! and a whole layer's f32 gradients during backward, plus all gradients and both moments at
//! once, while the engine frees what it can as soon as it can: the unrotated q and k, the
//! projections' outputs once added, each saved tensor as the backward passes it, and the
//! moments exist only from the first update on.
//! Last, the counters themselves: a host tensor and a device buffer are counted exactly while
//! they live (the device side on the emulator without a GPU).

use serde_json::{Map, Value};
use solar_engine::{Device, Rng};
use solar_model::lora::{Lora, LoraSpec, DEFAULT_TARGETS};
use solar_model::presets::preset;
use solar_model::Llama;
use solar_train::data::rows::LmRow;
use solar_train::trainer::config::TrainConfig;
use solar_train::trainer::memory::{estimate_plan, Plan};
use solar_train::trainer::objective::Objective;
use solar_train::trainer::{train, RunOptions};

fn lora_spec() -> LoraSpec {
    LoraSpec { r: 8, alpha: 16.0, dropout: 0.0, targets: DEFAULT_TARGETS.to_vec(), rslora: false }
}

fn measured_peak(recompute: bool, lora: Option<&LoraSpec>, batch: usize, seq_len: usize) -> u64 {
    let o = std::env::temp_dir().join(format!(
        "solar-memory-{}-{recompute}-{}",
        std::process::id(),
        lora.is_some()
    ));
    let _ = std::fs::remove_dir_all(&o);
    let mut rng = Rng::new(4);
    let rows: Vec<LmRow> = (0..2 * batch)
        .map(|_| LmRow::single((0..seq_len).map(|_| 3 + rng.below(300) as u32).collect(), |_| true))
        .collect();
    let c = TrainConfig { steps: Some(2), batch, seq_len, log_every: 0, ..Default::default() };
    let model = Llama::init(preset("small").unwrap(), 3).unwrap();
    let model = match lora {
        Some(spec) => {
            model.with_lora(Lora::init(spec.clone(), &preset("small").unwrap(), 5).unwrap()).unwrap()
        }
        None => model,
    };
    let opts = RunOptions { out: o.clone(), recompute, lora: lora.cloned(), ..Default::default() };
    train(model, &Objective::Lm { rows, eval: None }, &c, &opts, Map::new()).unwrap();
    let text = std::fs::read_to_string(o.join("metrics.jsonl")).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let _ = std::fs::remove_dir_all(&o);
    lines
        .iter()
        .map(|l| l["peak_alloc_bytes"].as_u64().expect("peak_alloc_bytes on every line"))
        .max()
        .unwrap()
}

#[test]
fn prediction_bounds_the_measured_peak() {
    let (batch, seq_len) = (4, 128);
    let cfg = preset("small").unwrap();
    let mut peaks = Vec::new();
    let spec = lora_spec();
    for (recompute, lora) in [(false, None), (true, None), (false, Some(&spec)), (true, Some(&spec))] {
        let plan = Plan::of_run(recompute, lora, &cfg);
        let predicted = estimate_plan(&cfg, batch, seq_len, Device::Cpu, plan).unwrap();
        let measured = measured_peak(recompute, lora, batch, seq_len);
        let recompute = format!("{recompute} lora {}", lora.is_some());
        eprintln!(
            "recompute {recompute}: measured {measured} bytes, predicted tensors {} ({}), ratio {:.3}",
            predicted.tensors(),
            predicted.describe(),
            measured as f64 / predicted.tensors() as f64
        );
        assert!(
            measured <= predicted.tensors(),
            "recompute {recompute}: measured {measured} above the prediction"
        );
        assert!(
            10 * measured >= 7 * predicted.tensors(),
            "recompute {recompute}: measured {measured} under 70% of the prediction"
        );
        peaks.push(measured);
    }
    assert!(peaks[1] < peaks[0] && peaks[3] < peaks[2], "recompute must lower the peak: {peaks:?}");
    counters_follow_allocations();
}

/// The counters themselves: a tensor's bytes are counted while it lives, on its device.
fn counters_follow_allocations() {
    use solar_engine::{alloc_stats, DType, Tensor};
    let before = alloc_stats::CPU.current();
    let t = Tensor::zeros([1000, 3], DType::F32);
    let view = t.reshape([3000]).unwrap(); // shares the storage: not counted twice
    assert_eq!(alloc_stats::CPU.current(), before + 12_000);
    assert!(alloc_stats::CPU.peak() >= before + 12_000);
    drop((t, view));
    assert_eq!(alloc_stats::CPU.current(), before);
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let before = alloc_stats::CUDA.current();
    let g = Tensor::zeros([1000, 3], DType::F32).to_device(Device::Cuda(0)).unwrap();
    assert_eq!(alloc_stats::CUDA.current(), before + 12_000, "a device buffer of 3000 f32");
    alloc_stats::CUDA.reset_peak();
    let bf = g.to_dtype(DType::BF16).unwrap();
    assert_eq!(alloc_stats::CUDA.peak(), before + 18_000, "plus 3000 bf16");
    drop((g, bf));
    assert_eq!(alloc_stats::CUDA.current(), before);
}

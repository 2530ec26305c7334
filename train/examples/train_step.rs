//! One training step of a small Llama, timed: forward, backward and an AdamW update of every
//! parameter, on random token ids. benches/train_step_vs_pytorch.sh runs it beside PyTorch eager
//! on the same shapes; the loss goes through the fused lm_head + cross-entropy, as training does.
//!
//!   train_step [--vocab 32000] [--hidden 256] [--layers 4] [--heads 8] [--kv-heads 4]
//!              [--ffn 688] [--batch 8] [--seq 128] [--steps 5] [--threads 2] [--device cpu|cuda]
//! On CUDA the step is timed to its end (the loss read back synchronizes the stream).
//!
//! Prints one JSON object: the shapes, every timed step's seconds, the median and tokens/s.

use solar_engine::optim::{AdamW, AdamWConfig};
use solar_engine::{ops, Device, Rng, Tape, Tensor};
use solar_model::names::is_norm;
use solar_model::presets::preset;
use solar_model::{Llama, ModelInput};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

const FLAGS: [&str; 10] =
    ["vocab", "hidden", "layers", "heads", "kv-heads", "ffn", "batch", "seq", "steps", "threads"];

fn parse_args() -> Result<(BTreeMap<&'static str, usize>, Device), String> {
    let defaults = [32000, 256, 4, 8, 4, 688, 8, 128, 5, 2];
    let mut opts: BTreeMap<&'static str, usize> = FLAGS.iter().copied().zip(defaults).collect();
    let mut device = Device::Cpu;
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        if pair[0] == "--device" {
            device = pair.get(1).ok_or("--device needs a value")?.parse()?;
            continue;
        }
        let name = pair[0].strip_prefix("--").and_then(|n| FLAGS.iter().find(|f| **f == n));
        let (Some(name), Some(value)) = (name, pair.get(1)) else {
            return Err(format!("usage: train_step [--{} N]...; got '{}'", FLAGS.join(" N] [--"), pair[0]));
        };
        let v: usize =
            value.parse().map_err(|_| format!("--{name}: expected a positive integer, got '{value}'"))?;
        if v == 0 {
            return Err(format!("--{name} must be at least 1"));
        }
        opts.insert(name, v);
    }
    // Whole head dims and whole query groups per kv head (written without `%` so it builds with
    // the workspace's Rust 1.85, which lacks is_multiple_of, and clippy stays quiet).
    let (h, kv) = (opts["heads"], opts["kv-heads"]);
    if opts["hidden"] / h * h != opts["hidden"] || h / kv * kv != h {
        return Err("--hidden must divide by --heads, and --heads by --kv-heads".into());
    }
    Ok((opts, device))
}

/// One step: the mean loss over every next token, its gradients, an AdamW update.
fn step(
    model: &mut Llama,
    opt: &mut AdamW,
    input: &ModelInput,
    targets: &Tensor,
) -> solar_model::Result<f64> {
    let tape = Tape::new();
    let ce = model.loss(Some(&tape), input, targets)?;
    let loss = ops::scale(&ce.loss_sum, 1.0 / ce.count as f64)?;
    let grads = tape.backward(&loss)?;
    opt.begin_step();
    for (name, p) in model.named_params_mut() {
        if let Some(g) = grads.get_id(p.id()) {
            let g = g.clone();
            opt.update(p, &g, !is_norm(name), 1e-4)?;
        }
    }
    Ok(loss.to_scalar()?)
}

fn run(o: &BTreeMap<&'static str, usize>, device: Device) -> solar_model::Result<serde_json::Value> {
    let mut cfg = preset("tiny").expect("the tiny preset exists");
    cfg.vocab_size = o["vocab"];
    cfg.hidden_size = o["hidden"];
    cfg.num_hidden_layers = o["layers"];
    cfg.num_attention_heads = o["heads"];
    cfg.num_key_value_heads = o["kv-heads"];
    cfg.head_dim = o["hidden"] / o["heads"];
    cfg.intermediate_size = o["ffn"];
    cfg.max_position_embeddings = cfg.max_position_embeddings.max(o["seq"]);
    let mut model = Llama::init(cfg, 0)?.to_device(device)?;
    let (b, t) = (o["batch"], o["seq"]);
    let mut rng = Rng::new(1);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(o["vocab"] as u64) as u32).collect();
    let input = ModelInput::rows(&ids, b, t)?;
    let targets = Tensor::from_vec(solar_model::llama::next_token_targets(&ids, b, t), [b, t])?;
    let mut opt = AdamW::new(AdamWConfig::default());
    // The first step pays for page faults and the thread pool's start.
    let first_loss = step(&mut model, &mut opt, &input, &targets)?;
    let mut times = Vec::new();
    for _ in 0..o["steps"] {
        let start = Instant::now();
        step(&mut model, &mut opt, &input, &targets)?;
        times.push(start.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    Ok(serde_json::json!({
        "engine": "solar", "device": device.to_string(), "config": o, "first_loss": first_loss, "step_s": times,
        "median_s": median, "tokens_per_s": (b * t) as f64 / median,
    }))
}

fn main() -> ExitCode {
    let (opts, device) = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("train_step: {e}");
            return ExitCode::from(2);
        }
    };
    match solar_engine::with_threads(opts["threads"], || run(&opts, device)) {
        Ok(Ok(report)) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("train_step: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("train_step: {e}");
            ExitCode::FAILURE
        }
    }
}

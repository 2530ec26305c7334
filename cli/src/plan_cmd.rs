//! `solar-train plan`: the memory each device of a training run would need, and whether it
//! fits, from config.json alone (no weights, no data, no device touched). The arithmetic is
//! solar_train::trainer::plan's; this file reads the flags and prints a table or, with --json,
//! one JSON object on stdout (DESIGN.md section 5: nothing else goes there).
//! The layout follows the global --device: cpu sizes the CPU backend's f32 step, anything else
//! (the default, cuda, emu) CUDA's bf16 + f32 master layout.

use crate::common::{parse_size, CliError, Common, DeviceChoice};
use clap::Args;
use serde_json::{json, Map, Value};
use solar_engine::Device;
use solar_model::lora::{parse_targets, LoraSpec, DEFAULT_TARGETS};
use solar_model::presets::{preset, PRESETS};
use solar_model::LlamaConfig;
use solar_train::trainer::memory::Plan;
use solar_train::trainer::plan::{advice, plan_devices, DeviceMemory};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[command(
    after_help = "Example:\n  solar-train plan --preset solar-10.7b --devices 8 --memory 80GB --zero 1 --seq-len 4096 --batch 1"
)]
pub struct PlanArgs {
    /// A model folder: only its config.json is read.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// A config.json file.
    #[arg(long, value_name = "FILE")]
    pub config_json: Option<PathBuf>,
    /// A named shape (tiny, small, mistral-7b, solar-10.7b).
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Data-parallel devices.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub devices: u64,
    /// Memory of each device (e.g. 80GB, 24GiB); without it the table has no verdict.
    #[arg(long, visible_alias = "device-memory", value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
    /// ZeRO stage: 0 replicates everything, 1 shards the optimizer state, 2 also the
    /// gradients [default: 1 with more than one device, else 0].
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=2))]
    pub zero: Option<u64>,
    /// Tokens per row.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Micro-batch rows per device.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Activation recompute: each layer keeps only its input.
    #[arg(long)]
    pub recompute: bool,
    /// LoRA rank: gradients and optimizer state cover the adapters only.
    #[arg(long)]
    pub lora_r: Option<usize>,
    /// LoRA's target projections (as the trainers take them) [default: q_proj,v_proj].
    #[arg(long, value_name = "LIST")]
    pub lora_targets: Option<String>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl PlanArgs {
    /// Usage errors, before any file is read (exit 2).
    pub fn check(&self) -> Result<(), String> {
        let given = [self.model.is_some(), self.config_json.is_some(), self.preset.is_some()];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err("plan takes one of --model DIR, --config-json FILE or --preset NAME".into());
        }
        if let Some(name) = &self.preset {
            if preset(name).is_none() {
                let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
                return Err(format!("--preset '{name}': unknown (one of {})", names.join(", ")));
            }
        }
        if self.batch == 0 || self.seq_len == 0 {
            return Err("--batch and --seq-len must be at least 1".into());
        }
        self.lora().map(|_| ())
    }

    fn lora(&self) -> Result<Option<LoraSpec>, String> {
        let Some(r) = self.lora_r else {
            return match self.lora_targets {
                Some(_) => Err("--lora-targets needs --lora-r".into()),
                None => Ok(None),
            };
        };
        let targets = match &self.lora_targets {
            Some(t) => parse_targets(t).map_err(|e| format!("--lora-targets: {e}"))?,
            None => DEFAULT_TARGETS.to_vec(),
        };
        let spec = LoraSpec { r, alpha: 8.0, dropout: 0.0, targets, rslora: false };
        spec.validate().map_err(|e| format!("--lora-r: {e}"))?;
        Ok(Some(spec))
    }

    fn config(&self) -> Result<(LlamaConfig, String), CliError> {
        if let Some(name) = &self.preset {
            return Ok((preset(name).expect("checked by usage"), name.clone()));
        }
        let file = match (&self.model, &self.config_json) {
            (Some(dir), _) => dir.join("config.json"),
            (_, Some(f)) => f.clone(),
            _ => unreachable!("checked by usage"),
        };
        Ok((LlamaConfig::from_file(&file)?, file.display().to_string()))
    }
}

pub fn run(args: &PlanArgs, common: &Common) -> Result<(), CliError> {
    let (cfg, source) = args.config()?;
    let device = match common.device {
        DeviceChoice::Fixed(Device::Cpu) => Device::Cpu,
        _ => Device::Cuda(0),
    };
    let zero = args.zero.unwrap_or(if args.devices > 1 { 1 } else { 0 }) as u8;
    let plan = Plan::of_run(args.recompute, args.lora().map_err(CliError)?.as_ref(), &cfg);
    let p = plan_devices(&cfg, args.batch, args.seq_len, device, plan, args.devices, zero)
        .map_err(|e| CliError(format!("{source}: cannot size a training step: {e}")))?;
    let d = p.per_device;
    let fits = args.memory.map(|m| d.total() <= m);
    let advice = args.memory.and_then(|m| advice(&d, m, args.recompute, zero));
    let layout = if device == Device::Cpu { "cpu" } else { "cuda" };
    if args.json {
        let obj = json!({
            "model": source,
            "parameters": cfg.checked_num_parameters().unwrap_or(0),
            "trained_parameters": p.trained,
            "device": layout,
            "devices": args.devices,
            "zero": zero,
            "seq_len": args.seq_len,
            "batch": args.batch,
            "recompute": args.recompute,
            "lora_r": args.lora_r,
            "per_device": bytes(&d),
            "replicated": bytes(&p.replicated),
            "memory": args.memory,
            "fits": fits,
            "advice": advice,
        });
        println!("{obj}");
        return Ok(());
    }
    println!(
        "{source}: {} parameters ({} trained), {layout}, {} device(s), ZeRO-{zero}, batch {} x seq-len {}{}",
        cfg.checked_num_parameters().unwrap_or(0),
        p.trained,
        args.devices,
        args.batch,
        args.seq_len,
        if args.recompute { ", --recompute" } else { "" }
    );
    println!("{:<16} {:>12} {:>12}", "GiB per device", "as run", "ZeRO-0");
    for ((name, b), (_, whole)) in d.rows().into_iter().zip(p.replicated.rows()) {
        println!("{name:<16} {:>12} {:>12}", gib2(b), gib2(whole));
    }
    println!("{:<16} {:>12} {:>12}", "total", gib2(d.total()), gib2(p.replicated.total()));
    match args.memory {
        Some(m) => {
            println!("{:<16} {:>12}", "memory given", gib2(m));
            match advice {
                None => println!("verdict: fits ({} GiB free)", gib2(m - d.total())),
                Some(a) => println!("verdict: does not fit ({a})"),
            }
        }
        None => println!("verdict: unknown (give --memory SIZE per device)"),
    }
    Ok(())
}

/// Each component's bytes and the total, as a JSON object.
fn bytes(d: &DeviceMemory) -> Value {
    let mut m: Map<String, Value> = d.rows().iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    m.insert("total".into(), json!(d.total()));
    Value::Object(m)
}

/// Bytes as GiB with two decimals.
fn gib2(b: u64) -> String {
    format!("{:.2}", b as f64 / (1u64 << 30) as f64)
}

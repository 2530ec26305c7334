//! The memory of one device in a data-parallel run of N devices, from `memory::estimate_plan`'s
//! single-device step and ZeRO sharding (Rajbhandari et al., "ZeRO: Memory Optimizations
//! Toward Training Trillion Parameter Models", 2020), for `solar-train plan`. Nothing here
//! trains or talks to other devices: it is the arithmetic a run would have to fit.
//!
//! Stages, as the paper defines them, for N devices:
//!   ZeRO-0: every device holds everything (plain data parallel).
//!   ZeRO-1: the optimizer state is partitioned: f32 master weights and both Adam moments on
//!           CUDA, the moments on the CPU (whose weights are already f32: no master copy).
//!   ZeRO-2: the gradients are partitioned too.
//! Weights, activations (each device runs its own micro-batch) and op scratch stay whole.
//! Rounding: a partitioned state is one flat buffer of the trained parameters, padded to a
//! multiple of N, so each device holds ceil(P / N) parameters' worth of it, times the bytes
//! each parameter takes there (the last device's padding is charged too: it is allocated).

use super::memory::{estimate_plan, Plan, StepMemory};
use solar_engine::Device;
use solar_model::LlamaConfig;

/// The CUDA context (kernels, cuBLAS/NVRTC modules, the driver's own state) on one GPU: an
/// assumption, about what a CUDA 12/13 context takes on an H100, not a measurement by Solar.
pub const CUDA_CONTEXT_BYTES: u64 = 1 << 30;
/// NCCL's communication buffers and the caching allocator's slack when devices talk to each
/// other: an assumption too (NCCL's default 4 MiB buffers per channel and peer, plus slack).
pub const COLLECTIVE_RESERVE_BYTES: u64 = 512 << 20;

/// One device's bytes, by component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    pub weights: u64,
    pub gradients: u64,
    /// The f32 master weights (CUDA full fine-tunes only; 0 on the CPU and with LoRA).
    pub master_weights: u64,
    /// Both AdamW moments.
    pub moments: u64,
    pub activations: u64,
    pub scratch: u64,
    /// What the runtime holds beyond tensors (CUDA context, collectives): 0 on the CPU.
    pub runtime_reserve: u64,
}

impl DeviceMemory {
    pub fn total(&self) -> u64 {
        [
            self.gradients,
            self.master_weights,
            self.moments,
            self.activations,
            self.scratch,
            self.runtime_reserve,
        ]
        .into_iter()
        .fold(self.weights, u64::saturating_add)
    }

    /// (name, bytes) of every component, in the order a table prints them.
    pub fn rows(&self) -> [(&'static str, u64); 7] {
        [
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("master_weights", self.master_weights),
            ("moments", self.moments),
            ("activations", self.activations),
            ("scratch", self.scratch),
            ("runtime_reserve", self.runtime_reserve),
        ]
    }
}

/// What `plan` found: one device's memory whole (one process) and as the run shards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DevicePlan {
    pub replicated: DeviceMemory,
    pub per_device: DeviceMemory,
    /// The parameters whose gradients and optimizer state exist (all, or LoRA's adapters).
    pub trained: u64,
}

/// Each device's part of a flat buffer of `trained` parameters of `bytes` bytes in all:
/// ceil(trained / n) parameters' worth (see the header for why the padding counts).
pub fn shard(bytes: u64, trained: u64, n: u64) -> u64 {
    if trained == 0 || n <= 1 {
        return bytes;
    }
    let per_param = bytes / trained; // exact: each state is trained x a width
    trained.div_ceil(n).saturating_mul(per_param)
}

/// The memory of each of `devices` devices training `cfg` with micro-batches of `rows` x
/// `seq_len`, at ZeRO stage `zero` (0, 1 or 2).
pub fn plan_devices(
    cfg: &LlamaConfig,
    rows: usize,
    seq_len: usize,
    device: Device,
    plan: Plan,
    devices: u64,
    zero: u8,
) -> Result<DevicePlan, String> {
    if zero > 2 {
        return Err(format!("ZeRO stage {zero}: 0, 1 or 2"));
    }
    let step: StepMemory = estimate_plan(cfg, rows, seq_len, device, plan)?;
    let p = cfg.checked_num_parameters().map_err(|(field, msg)| format!("config.json {field}: {msg}"))?;
    let trained = plan.trainable.unwrap_or(p);
    // CUDA full fine-tunes keep an f32 master copy (4 bytes a parameter) inside `optimizer`.
    let master = match (device, plan.trainable) {
        (Device::Cuda(_), None) => p.saturating_mul(4),
        _ => 0,
    };
    let runtime_reserve = match device {
        Device::Cpu => 0,
        Device::Cuda(_) if devices > 1 => CUDA_CONTEXT_BYTES + COLLECTIVE_RESERVE_BYTES,
        Device::Cuda(_) => CUDA_CONTEXT_BYTES,
    };
    let replicated = DeviceMemory {
        weights: step.weights,
        gradients: step.gradients,
        master_weights: master,
        moments: step.optimizer - master,
        activations: step.activations,
        scratch: step.scratch,
        runtime_reserve,
    };
    let n = devices.max(1);
    let per_device = DeviceMemory {
        gradients: if zero >= 2 { shard(replicated.gradients, trained, n) } else { replicated.gradients },
        master_weights: if zero >= 1 { shard(master, trained, n) } else { master },
        moments: if zero >= 1 { shard(replicated.moments, trained, n) } else { replicated.moments },
        ..replicated
    };
    Ok(DevicePlan { replicated, per_device, trained })
}

/// What to change when `need` does not fit in `avail` bytes (the advice check_fits gives, plus
/// the data-parallel ways out); None when it fits.
pub fn advice(need: &DeviceMemory, avail: u64, recompute: bool, zero: u8) -> Option<String> {
    if need.total() <= avail {
        return None;
    }
    let fixed = need.total() - need.activations;
    let mut ways = Vec::new();
    if fixed < avail {
        let room = (avail - fixed) as f64 / need.activations.max(1) as f64;
        ways.push(format!(
            "activations must shrink about {:.0}x: lower --batch (keep the step the same size with --grad-accum) or --seq-len",
            (1.0 / room).ceil().max(2.0)
        ));
        if !recompute {
            ways.push("add --recompute".into());
        }
    } else {
        ways.push("weights, gradients and optimizer state alone do not fit".into());
    }
    ways.push(if zero < 2 { "more --devices, or --zero 2".into() } else { "more --devices".to_string() });
    Some(ways.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use solar_model::presets::preset;

    /// Shards by hand for a tiny config with odd widths, whose parameter count neither 2 nor
    /// 3 divides.
    #[test]
    fn zero_stages_shard_by_hand() {
        let cfg = LlamaConfig {
            hidden_size: 65,
            intermediate_size: 175,
            vocab_size: 321,
            ..preset("tiny").unwrap()
        };
        let p = cfg.checked_num_parameters().unwrap();
        assert!(
            !p.is_multiple_of(2) && !p.is_multiple_of(3),
            "pick a config that N does not divide: P = {p}"
        );
        let (rows, t) = (2, 16);
        for device in [Device::Cpu, Device::Cuda(0)] {
            let one = estimate_plan(&cfg, rows, t, device, Plan::default()).unwrap();
            let (g, m, w) = match device {
                Device::Cpu => (4, 0, 8),
                Device::Cuda(_) => (2, 4, 8),
            };
            for n in [1u64, 2, 3] {
                let part = p.div_ceil(n);
                for zero in [0u8, 1, 2] {
                    let d = plan_devices(&cfg, rows, t, device, Plan::default(), n, zero).unwrap().per_device;
                    let sharded =
                        |z: u8, whole: u64, width: u64| if zero >= z { part * width } else { whole };
                    assert_eq!(d.weights, one.weights, "{device} N {n} ZeRO {zero}");
                    assert_eq!(d.gradients, sharded(2, p * g, g), "{device} N {n} ZeRO {zero}");
                    assert_eq!(d.master_weights, sharded(1, p * m, m), "{device} N {n} ZeRO {zero}");
                    assert_eq!(d.moments, sharded(1, p * w, w), "{device} N {n} ZeRO {zero}");
                    assert_eq!((d.activations, d.scratch), (one.activations, one.scratch));
                    let reserve = match (device, n) {
                        (Device::Cpu, _) => 0,
                        (_, 1) => CUDA_CONTEXT_BYTES,
                        _ => CUDA_CONTEXT_BYTES + COLLECTIVE_RESERVE_BYTES,
                    };
                    assert_eq!(d.runtime_reserve, reserve);
                    // Padding: N shards together cover the whole state, and at most N - 1
                    // parameters more.
                    if zero >= 1 && n > 1 {
                        assert!(n * d.moments >= p * w && n * d.moments < (p + n) * w);
                        assert_ne!(n * d.moments, p * w, "N {n} does not divide P {p}: padding is charged");
                    }
                }
            }
        }
    }

    #[test]
    fn lora_shards_only_the_adapters_state() {
        let cfg = preset("small").unwrap();
        let spec = solar_model::lora::LoraSpec {
            r: 3,
            alpha: 8.0,
            dropout: 0.0,
            targets: solar_model::lora::DEFAULT_TARGETS.to_vec(),
            rslora: false,
        };
        let plan = Plan::of_run(false, Some(&spec), &cfg);
        let t = plan.trainable.unwrap();
        let d = plan_devices(&cfg, 1, 8, Device::Cuda(0), plan, 3, 2).unwrap();
        assert_eq!(d.trained, t);
        assert_eq!(d.per_device.master_weights, 0, "LoRA keeps no master copy");
        assert_eq!(d.per_device.moments, t.div_ceil(3) * 8);
        assert_eq!(d.per_device.gradients, t.div_ceil(3) * 4);
        assert_eq!(d.per_device.weights, d.replicated.weights);
    }

    #[test]
    fn advice_names_the_ways_out() {
        let cfg = preset("small").unwrap();
        let d = plan_devices(&cfg, 4, 128, Device::Cpu, Plan::default(), 2, 1).unwrap().per_device;
        assert_eq!(advice(&d, d.total(), false, 1), None);
        let a = advice(&d, d.total() - 1, false, 1).unwrap();
        assert!(a.contains("--recompute") && a.contains("--zero 2") && a.contains("--grad-accum"), "{a}");
        let a = advice(&d, 1, true, 2).unwrap();
        assert!(
            a.contains("alone do not fit") && !a.contains("--recompute") && !a.contains("--zero 2"),
            "{a}"
        );
        assert!(plan_devices(&cfg, 4, 128, Device::Cpu, Plan::default(), 2, 3).is_err());
    }
}

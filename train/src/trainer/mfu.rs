//! Model FLOPs utilization (MFU) on the GPU: the FLOPs a training step's model math needs,
//! per second, over the device's peak dense bf16 tensor-core FLOPs. It is only ever reported
//! for a real CUDA device whose peak is known (the table below, or SOLAR_PEAK_TFLOPS): on the
//! CPU, on the emulator and on an unknown GPU there is no MFU, never a guessed one.
//!
//! The count follows PaLM (Chowdhery et al. 2022, appendix B), also used by nanoGPT and llm.c,
//! so a number here compares with the numbers those report. Per token of a sequence of length
//! T, forward + backward:
//!
//!   6 * N  +  12 * L * A * T
//!
//! N: the weights that multiply activations, i.e. per layer q, k, v, o (C x H*D, C x KV*D
//! twice, H*D x C) and the MLP (3 x C x F), plus the lm_head (V x C, counted when tied too: the
//! matmul runs either way). The input embedding is a lookup and the norms are elementwise, so
//! neither is in N. Each weight costs 2 FLOPs per token forward (multiply, add) and 4 backward
//! (gradients of input and weight): 6N.
//! The attention term: per layer Q K^T and scores x V are 2 * A * T FLOPs each per token
//! forward (A = H * D), times 3 for forward + backward: 12 * L * A * T. PaLM counts the full
//! T x T score matrix although a causal mask leaves half of it unused; this keeps that
//! convention (as nanoGPT and llm.c do) rather than the causal half (6 * L * A * T), because an
//! MFU is only worth reading next to other MFUs. T is each row's length (packed rows: the row,
//! not its documents), capped at the sliding window where the model has one.

use solar_engine::Device;
use solar_model::LlamaConfig;

/// Environment variable: the device's peak dense bf16 TFLOPS, for a GPU the table lacks (or to
/// override it, e.g. for a power-capped card).
pub const PEAK_ENV: &str = "SOLAR_PEAK_TFLOPS";

/// What one step's FLOPs are computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelFlops {
    /// N: parameters that multiply activations (see the file header).
    pub matmul_params: u64,
    /// 12 * L * A: attention FLOPs per token per token of context.
    pub attn_per_ctx: u64,
    /// The sliding window, if attention sees at most this many tokens.
    pub window: Option<usize>,
}

impl ModelFlops {
    pub fn new(c: &LlamaConfig) -> ModelFlops {
        let (cw, f, v) = (c.hidden_size as u64, c.intermediate_size as u64, c.vocab_size as u64);
        let q = (c.num_attention_heads * c.head_dim) as u64;
        let kv = (c.num_key_value_heads * c.head_dim) as u64;
        // q and o: C x A each; k and v: C x KV*D each; gate, up, down: C x F each.
        let layer = 2 * cw * q + 2 * cw * kv + 3 * cw * f;
        let matmul_params = c.num_hidden_layers as u64 * layer + v * cw;
        ModelFlops {
            matmul_params,
            attn_per_ctx: 12 * c.num_hidden_layers as u64 * q,
            window: c.sliding_window,
        }
    }

    /// Training FLOPs (forward + backward) per token at context length `t`.
    pub fn per_token(&self, t: usize) -> f64 {
        6.0 * self.matmul_params as f64 + self.attn_per_ctx as f64 * self.context(t) as f64
    }

    fn context(&self, t: usize) -> usize {
        self.window.map_or(t, |w| t.min(w))
    }

    /// Training FLOPs of a step over rows of these lengths.
    pub fn step<I: IntoIterator<Item = usize>>(&self, row_lens: I) -> f64 {
        row_lens.into_iter().map(|t| t as f64 * self.per_token(t)).sum()
    }
}

/// Peak dense (no sparsity) bf16 tensor TFLOPS by CUDA device name, from NVIDIA's data sheets
/// (the sheets print sparse figures too, at twice these): H100 SXM and H200 989.4, H100 PCIe
/// 756.5, H100 NVL and H200 NVL 835.5 (H100/H200 product briefs); A100 312 (A100 data sheet,
/// SXM and PCIe alike); L40S 362.05, L4 121 (their data sheets); RTX 4090 165.2 with f32
/// accumulation (Ada Lovelace architecture whitepaper); A10 125 (A10 data sheet).
/// Each entry: the words a name must hold (split at spaces and dashes, any case), most
/// specific first.
const PEAKS: &[(&[&str], f64)] = &[
    (&["H100", "PCIE"], 756.5),
    (&["H100", "NVL"], 835.5),
    (&["H100"], 989.4),
    (&["H200", "NVL"], 835.5),
    (&["H200"], 989.4),
    (&["A100"], 312.0),
    (&["L40S"], 362.05),
    (&["L4"], 121.0),
    (&["RTX", "4090"], 165.2),
    (&["A10"], 125.0),
];

/// The table's peak TFLOPS for a CUDA device name, if it knows the device.
pub fn table_peak(name: &str) -> Option<f64> {
    let words: Vec<String> =
        name.split(|c: char| c.is_whitespace() || c == '-').map(|w| w.to_ascii_uppercase()).collect();
    PEAKS.iter().find(|(need, _)| need.iter().all(|n| words.iter().any(|w| w == n))).map(|&(_, p)| p)
}

/// The peak to divide by for a device: SOLAR_PEAK_TFLOPS if set to a positive number, else
/// the table's, for a real CUDA device only. `name` is the device's name, None on the emulator
/// (and for the CPU it is not asked). Returns peak FLOPS (not TFLOPS) and where it came from.
pub fn peak_flops(device: Device, name: Option<&str>, env: Option<&str>) -> Option<(f64, String)> {
    let name = match device {
        Device::Cpu => return None,
        Device::Cuda(_) => name?,
    };
    if let Some(v) = env.and_then(|s| s.trim().parse::<f64>().ok()).filter(|v| v.is_finite() && *v > 0.0) {
        return Some((v * 1e12, format!("{PEAK_ENV}={v}")));
    }
    table_peak(name).map(|p| (p * 1e12, format!("{name}: {p} dense bf16 TFLOPS")))
}

/// The device's peak as `peak_flops` finds it, reading the device name and the environment.
/// Errors opening the device are not this function's to report: no MFU then.
pub fn device_peak(device: Device) -> Option<(f64, String)> {
    let name = match device {
        Device::Cpu => None,
        Device::Cuda(n) => {
            let gpu = solar_engine::cuda::Gpu::get(n).ok()?;
            (!gpu.is_emulator()).then(|| gpu.name.clone())
        }
    };
    peak_flops(device, name.as_deref(), std::env::var(PEAK_ENV).ok().as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> LlamaConfig {
        LlamaConfig::from_json_str(json, std::path::Path::new("config.json")).unwrap()
    }

    #[test]
    fn tiny_config_matches_a_hand_count() {
        // C 8, F 12, L 2, H 2 x D 4 (A 8), KV 1 x D 4, V 10, untied.
        let c = config(
            r#"{"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 12,
                "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1}"#,
        );
        let f = ModelFlops::new(&c);
        // Per layer: q 8*8 + k 8*4 + v 8*4 + o 8*8 = 192, MLP 3*8*12 = 288: 480; two layers 960;
        // lm_head 10*8 = 80. The embedding (another 80) and the norms are not in N.
        assert_eq!(f.matmul_params, 1040);
        // Attention: 12 * L 2 * A 8 = 192 per token of context.
        assert_eq!(f.attn_per_ctx, 192);
        // A row of 5 tokens: 5 * (6 * 1040 + 192 * 5) = 5 * 7200.
        assert_eq!(f.step([5]), 36000.0);
        // Two rows add; the count is per row, not per padded batch.
        assert_eq!(f.step([5, 3]), 36000.0 + 3.0 * (6240.0 + 576.0));
        // A sliding window of 4 caps the context the attention term sees.
        let w = ModelFlops { window: Some(4), ..f };
        assert_eq!(w.step([5]), 5.0 * (6240.0 + 192.0 * 4.0));
    }

    #[test]
    fn solar_10_7b_is_6n_plus_the_attention_term() {
        // SOLAR-10.7B: 48 layers of Mistral-7B's shape, 10,731,524,096 parameters in all.
        let c = config(
            r#"{"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
                "intermediate_size": 14336, "num_hidden_layers": 48, "num_attention_heads": 32,
                "num_key_value_heads": 8}"#,
        );
        assert_eq!(c.num_parameters(), 10_731_524_096);
        let f = ModelFlops::new(&c);
        // N = all parameters less the input embedding (32000 x 4096) and the norms (two per
        // layer and the final one, 4096 each).
        let n = 10_731_524_096u64 - 32000 * 4096 - (2 * 48 + 1) * 4096;
        assert_eq!(f.matmul_params, n);
        // The familiar ~6N: 63.6 GFLOPs per token before attention; 12 * 48 * 4096 * 4096 more
        // at a 4096-token context.
        assert_eq!(f.per_token(0), 6.0 * n as f64);
        assert!((f.per_token(0) / 63.6e9 - 1.0).abs() < 1e-3);
        assert_eq!(f.per_token(4096) - f.per_token(0), (12u64 * 48 * 4096 * 4096) as f64);
    }

    #[test]
    fn peak_comes_from_the_table_or_the_override_and_never_for_cpu_or_emulator() {
        assert_eq!(table_peak("NVIDIA H100 80GB HBM3"), Some(989.4));
        assert_eq!(table_peak("NVIDIA H100 PCIe"), Some(756.5));
        assert_eq!(table_peak("NVIDIA H200"), Some(989.4));
        assert_eq!(table_peak("NVIDIA A100-SXM4-80GB"), Some(312.0));
        assert_eq!(table_peak("NVIDIA L40S"), Some(362.05));
        assert_eq!(table_peak("NVIDIA L4"), Some(121.0));
        assert_eq!(table_peak("NVIDIA GeForce RTX 4090"), Some(165.2));
        // Unknown devices get no peak: "L40" is not "L4" or "L40S", "A10G" not "A10".
        assert_eq!(table_peak("NVIDIA L40"), None);
        assert_eq!(table_peak("NVIDIA A10G"), None);
        assert_eq!(table_peak("NVIDIA GeForce RTX 3090"), None);
        let cuda = Device::Cuda(0);
        assert_eq!(peak_flops(cuda, Some("NVIDIA H100 PCIe"), None).unwrap().0, 756.5e12);
        assert_eq!(peak_flops(cuda, Some("NVIDIA L40"), None), None);
        assert_eq!(peak_flops(cuda, Some("NVIDIA L40"), Some("181")).unwrap().0, 181e12);
        // The override wins over the table; a bad override is ignored.
        assert_eq!(peak_flops(cuda, Some("NVIDIA H100 PCIe"), Some(" 500 ")).unwrap().0, 500e12);
        assert_eq!(peak_flops(cuda, Some("NVIDIA L40"), Some("fast")), None);
        assert_eq!(peak_flops(cuda, Some("NVIDIA L40"), Some("-1")), None);
        // The emulator (no name) and the CPU never claim a peak, override or not.
        assert_eq!(peak_flops(cuda, None, Some("100")), None);
        assert_eq!(peak_flops(Device::Cpu, None, Some("100")), None);
    }
}

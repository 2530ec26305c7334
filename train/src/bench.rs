//! The op benchmark suite behind `solar-train bench`: times every op on a representative shape
//! and reports the median time with a throughput: GFLOP/s for compute-bound ops (matmul,
//! attention, the fused lm_head loss), GB/s for memory-bound ones. GB/s counts the fewest
//! bytes the op must read and write, so a low number means it moves more memory than it needs.
//! The cases themselves (shapes, inputs, work counts) live in bench/cases.rs; the criterion
//! benchmarks in benches/ time the same cases, so the two never drift apart.

mod cases;
pub mod gpu;

pub use cases::{cases, Case, Runner, Work};

use serde::Serialize;
use solar_engine::{Device, Error, Result};
use std::time::Instant;

/// Every op name `--op` accepts, in suite order (each has a CPU and a GPU case).
pub const OP_NAMES: &[&str] = &[
    "matmul",
    "attention",
    "attention_fwd_bwd",
    "rmsnorm",
    "rope",
    "swiglu",
    "embedding",
    "cross_entropy",
    "cross_entropy_fwd_bwd",
    "linear_cross_entropy_fwd_bwd",
    "sequence_logprobs",
    "adamw",
];

/// One timed case. Exactly one of `tflops` and `gbps` is present.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    pub op: String,
    /// What the shape means for this op, e.g. "square" or "x^T dy (weight grad)".
    pub case: String,
    /// matmul: [M, N, K]; attention: [B, T, H, Hkv, D]; linear_cross_entropy: [N, V, C];
    /// others: the main input's shape.
    pub shape: Vec<usize>,
    pub dtype: String,
    pub median_s: f64,
    /// How many timed runs the median is over.
    pub runs: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tflops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbps: Option<f64>,
    /// GPU only: percent of the device's ceiling (measured copy bandwidth for GB/s rows, the
    /// spec dense bf16 peak for TFLOP/s rows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pct_of_ceiling: Option<f64>,
    /// Why the case could not run (GPU suite: the other rows still run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What `bench --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub device: String,
    pub threads: usize,
    /// GPU only: the device's name, measured copy bandwidth and spec bf16 peak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuInfo>,
    pub results: Vec<BenchResult>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GpuInfo {
    pub name: String,
    pub arch: String,
    /// Device-to-device copy, bytes read plus written per second.
    pub copy_gbps: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_bf16_tflops: Option<f64>,
}

/// How to time the suite.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub device: Device,
    /// Only cases of this op (one of `OP_NAMES`); all when `None`.
    pub op: Option<String>,
    /// Exactly this many timed runs after one warm-up run; adaptive when `None`.
    pub repeats: Option<usize>,
    /// Seeds the random inputs.
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { device: Device::Cpu, op: None, repeats: None, seed: 0 }
    }
}

/// Adaptive timing aims for about this much time per case, within the run-count bounds below.
const TARGET_S: f64 = 0.5;
const MIN_RUNS: usize = 5;
const MAX_RUNS: usize = 50;

/// Errors on a name that is not in `OP_NAMES`, listing the known ones.
/// Ops with a GPU case only: matmul_wgmma, the experimental Hopper GEMM.
pub const GPU_ONLY_OPS: &[&str] = &["matmul_wgmma"];

pub fn check_op_name(name: &str) -> Result<()> {
    if OP_NAMES.contains(&name) || GPU_ONLY_OPS.contains(&name) {
        Ok(())
    } else {
        Err(Error::invalid(
            "bench",
            format!(
                "unknown op '{name}'; known ops: {} (CUDA only: {})",
                OP_NAMES.join(", "),
                GPU_ONLY_OPS.join(", ")
            ),
        ))
    }
}

/// Times every GPU case (or those of `opts.op`) on `opts.device`, calling `progress` with each
/// label first; also measures the copy bandwidth the memory-bound rows are judged against.
pub fn run_gpu_suite(
    opts: &BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<(GpuInfo, Vec<BenchResult>)> {
    let Device::Cuda(n) = opts.device else {
        return Err(Error::invalid("bench", "run_gpu_suite needs a CUDA device"));
    };
    if let Some(op) = &opts.op {
        check_op_name(op)?;
    }
    let g = solar_engine::cuda::Gpu::get(n)?;
    let copy_gbps = solar_engine::cuda::timing::copy_gbps(&g, 1 << 30, 20)?;
    let info = GpuInfo {
        name: g.name.clone(),
        arch: g.arch.clone(),
        copy_gbps,
        peak_bf16_tflops: gpu::spec_bf16_tflops(&g.name),
    };
    let repeats = opts.repeats.unwrap_or(20);
    let mut results = Vec::new();
    for case in gpu::gpu_cases() {
        if opts.op.as_deref().is_some_and(|op| op != case.op) {
            continue;
        }
        progress(&format!("{} ({})", case.op, case.label));
        results.push(gpu::time_gpu_case(&case, &g, opts.seed, repeats, copy_gbps));
    }
    Ok((info, results))
}

/// Times every case of the suite (or of `opts.op`), calling `progress` before each one.
pub fn run_suite(opts: &BenchOptions, mut progress: impl FnMut(&Case)) -> Result<Vec<BenchResult>> {
    opts.device.ensure_available()?;
    if let Some(op) = &opts.op {
        check_op_name(op)?;
        if GPU_ONLY_OPS.contains(&op.as_str()) {
            return Err(Error::invalid("bench", format!("{op} is a CUDA kernel (sm_90): use --device cuda")));
        }
    }
    let mut results = Vec::new();
    for case in cases() {
        if opts.op.as_deref().is_some_and(|op| op != case.op) {
            continue;
        }
        progress(&case);
        results.push(time_case(&case, opts)?);
    }
    Ok(results)
}

/// Builds the case's inputs, warms it up and returns the median of the timed runs.
pub fn time_case(case: &Case, opts: &BenchOptions) -> Result<BenchResult> {
    let mut run = case.prepare(opts.seed)?;
    // The first run pays for page faults, thread-pool start-up and allocator growth.
    let start = Instant::now();
    run()?;
    let first = start.elapsed().as_secs_f64();
    let runs = match opts.repeats {
        Some(n) => n.max(1),
        None => {
            run()?;
            ((TARGET_S / first.max(1e-9)) as usize).clamp(MIN_RUNS, MAX_RUNS)
        }
    };
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        run()?;
        times.push(start.elapsed().as_secs_f64());
    }
    let median_s = median(&mut times);
    let (tflops, gbps) = match case.work {
        Work::Flops(f) => (Some(f / median_s / 1e12), None),
        Work::Bytes(b) => (None, Some(b / median_s / 1e9)),
    };
    Ok(BenchResult {
        op: case.op.to_string(),
        case: case.label.clone(),
        shape: case.shape.clone(),
        dtype: "f32".to_string(),
        median_s,
        runs,
        tflops,
        gbps,
        pct_of_ceiling: None,
        error: None,
    })
}

/// The median of `xs` (the mean of the middle two for an even count); 0 when empty.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The human-readable table: one aligned row per result.
pub fn format_table(results: &[BenchResult]) -> String {
    let header = ["op", "case", "shape", "dtype", "median", "throughput", "% ceiling"].map(String::from);
    let mut rows = vec![header];
    for r in results {
        let shape = r.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
        let rate = match (r.tflops, r.gbps, &r.error) {
            (_, _, Some(e)) => format!("error: {e}"),
            (Some(t), _, _) if t >= 1.0 => format!("{t:.1} TFLOP/s"),
            (Some(t), _, _) => format!("{:.1} GFLOP/s", t * 1e3),
            (_, Some(g), _) => format!("{g:.1} GB/s"),
            _ => String::new(),
        };
        let pct = r.pct_of_ceiling.map_or(String::new(), |p| format!("{p:.0}%"));
        let median = if r.error.is_some() { String::new() } else { format_seconds(r.median_s) };
        rows.push([r.op.clone(), r.case.clone(), shape, r.dtype.clone(), median, rate, pct]);
    }
    let mut widths = [0usize; 7];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            // Numbers read best right-aligned; names left-aligned.
            .map(|(i, (cell, w))| if i >= 4 { format!("{cell:>w$}") } else { format!("{cell:<w$}") })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Seconds with a unit that keeps three or four significant digits.
pub fn format_seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.3} ms", s * 1e3)
    } else {
        format!("{:.1} us", s * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn every_case_has_a_known_op_and_every_op_a_case() {
        let all = cases();
        for case in &all {
            assert!(OP_NAMES.contains(&case.op), "{} is not in OP_NAMES", case.op);
        }
        for op in OP_NAMES {
            assert!(all.iter().any(|c| c.op == *op), "no case for {op}");
        }
        assert!(all.iter().any(|c| c.op == "matmul" && c.shape == [1024, 1024, 1024]));
        let gpu = gpu::gpu_cases();
        for case in &gpu {
            assert!(OP_NAMES.contains(&case.op) || GPU_ONLY_OPS.contains(&case.op), "GPU op {}", case.op);
        }
        for op in GPU_ONLY_OPS {
            assert!(gpu.iter().any(|c| c.op == *op), "no GPU case for {op}");
        }
    }

    #[test]
    fn a_gpu_only_op_on_the_cpu_says_to_use_cuda() {
        let opts = BenchOptions { op: Some("matmul_wgmma".into()), ..Default::default() };
        let msg = run_suite(&opts, |_| {}).unwrap_err().to_string();
        assert!(msg.contains("--device cuda"), "{msg}");
    }

    #[test]
    fn unknown_op_is_an_error_listing_the_known_ones() {
        let opts = BenchOptions { op: Some("conv2d".into()), ..Default::default() };
        let msg = run_suite(&opts, |_| {}).unwrap_err().to_string();
        assert!(msg.contains("conv2d") && msg.contains("rmsnorm"), "{msg}");
    }

    #[test]
    fn a_quick_run_gives_a_positive_time_and_rate() {
        let opts = BenchOptions { op: Some("rmsnorm".into()), repeats: Some(1), ..Default::default() };
        let results = run_suite(&opts, |_| {}).unwrap();
        assert_eq!(results.len(), 1);
        let r = &results[0];
        assert!(r.median_s > 0.0 && r.gbps.unwrap() > 0.0 && r.tflops.is_none());
        let table = format_table(&results);
        assert!(table.starts_with("op") && table.contains("GB/s"), "{table}");
    }
}

//! The GPU benchmark suite behind `solar-train bench --device cuda`: SOLAR-sized shapes in bf16,
//! each timed with CUDA events (device time), the median over runs after a warm-up, with its
//! inputs rotated over several copies so that together they exceed L2 (every run reads from
//! DRAM, as in training). Each row reports TFLOP/s or GB/s and the percent of the device's
//! ceiling: the measured copy bandwidth for memory-bound ops, the spec dense bf16 peak for
//! compute-bound ones. A case whose op fails (say, a kernel missing) reports the error in its
//! row instead of ending the suite.
//! Shapes: SOLAR 10.7B's layer (C 4096, F 14336, H 32, Hkv 8, D 128, V 32000) on 4096 tokens.

use super::{BenchResult, Work};
use solar_engine::cuda::matmul_sm90::{with_gemm_kernel, GemmKernel};
use solar_engine::cuda::{timing, Gpu};
use solar_engine::ops::{self, AttentionMask};
use solar_engine::optim::{AdamW, AdamWConfig};
use solar_engine::{DType, Device, Result, Rng, Tape, Tensor};
use std::sync::Arc;

const C: usize = 4096;
const F: usize = 14336;
const V: usize = 32000;
const TOKENS: usize = 4096;
const BF16: f64 = 2.0;
const F32: f64 = 4.0;

/// Runs one timed call on input set `i` (of however many were built).
type GpuRunner = Box<dyn FnMut(usize) -> Result<()>>;

pub struct GpuCase {
    pub op: &'static str,
    pub label: String,
    pub shape: Vec<usize>,
    pub work: Work,
    /// Bytes of one input set (decides how many sets exceed L2).
    pub set_bytes: usize,
    /// Builds `sets` input sets (the closure is called with the set index) on the device.
    build: BuildInputs,
}

/// Makes one input set on a device from the bench's seeded stream (the usize is the set index).
type BuildInputs = Box<dyn Fn(&mut Rng, Device, usize) -> Result<GpuRunner>>;

fn uniform_on(shape: &[usize], rng: &mut Rng, dtype: DType, dev: Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> =
        (0..n).map(|_| (rng.next_u64() >> 40) as f32 * (2.0 / (1u64 << 24) as f32) - 1.0).collect();
    Tensor::from_vec(data, shape)?.to_dtype(dtype)?.to_device(dev)
}

fn ids_on(shape: &[usize], bound: usize, rng: &mut Rng, dev: Device) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<i32> = (0..n).map(|_| rng.below(bound as u64) as i32).collect();
    Tensor::from_vec(data, shape)?.to_device(dev)
}

/// A case whose input sets are built by `one` (one set per call) and timed by `run`.
fn case<S: 'static>(
    op: &'static str,
    label: &str,
    shape: &[usize],
    work: Work,
    set_bytes: usize,
    one: impl Fn(&mut Rng, Device) -> Result<S> + 'static,
    run: impl Fn(&mut S) -> Result<()> + Clone + 'static,
) -> GpuCase {
    let build = move |rng: &mut Rng, dev: Device, sets: usize| -> Result<GpuRunner> {
        let mut all: Vec<S> = (0..sets).map(|_| one(rng, dev)).collect::<Result<_>>()?;
        let run = run.clone();
        Ok(Box::new(move |i: usize| {
            let n = all.len();
            run(&mut all[i % n])
        }) as GpuRunner)
    };
    GpuCase { op, label: label.into(), shape: shape.to_vec(), work, set_bytes, build: Box::new(build) }
}

fn matmul(label: &str, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> GpuCase {
    matmul_on(GemmKernel::MmaSync, label, m, n, k, ta, tb)
}

/// The same product on the experimental wgmma kernel (sm_90 only; elsewhere the row is an
/// error saying so), as op "matmul_wgmma" so the two kernels sit side by side.
fn matmul_wgmma(label: &str, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> GpuCase {
    matmul_on(GemmKernel::Wgmma, label, m, n, k, ta, tb)
}

fn matmul_on(kernel: GemmKernel, label: &str, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> GpuCase {
    let bytes = (BF16 * (m * k + k * n + m * n) as f64) as usize;
    case(
        if kernel == GemmKernel::Wgmma { "matmul_wgmma" } else { "matmul" },
        label,
        &[m, n, k],
        Work::Flops(2.0 * (m * n * k) as f64),
        bytes,
        move |rng, dev| {
            let a = uniform_on(&if ta { [k, m] } else { [m, k] }, rng, DType::BF16, dev)?;
            let b = uniform_on(&if tb { [n, k] } else { [k, n] }, rng, DType::BF16, dev)?;
            Ok((a, b))
        },
        move |(a, b)| with_gemm_kernel(kernel, || ops::matmul_t(a, b, ta, tb).map(drop)),
    )
}

/// Causal GQA attention, B 2, T 2048, H 32, Hkv 8, D 128 (the shape): T(T+1)/2 pairs a
/// head, 4D FLOPs each forward and 10D more backward.
fn attention(backward: bool) -> GpuCase {
    let (b, t, h, hkv, d) = (2, 2048, 32, 8, 128);
    let pairs = (b * h * t * (t + 1) / 2) as f64;
    let flops = if backward { 14.0 } else { 4.0 } * d as f64 * pairs;
    let (op, label) = if backward {
        ("attention_fwd_bwd", "causal GQA, fwd + bwd")
    } else {
        ("attention", "causal GQA, fwd")
    };
    let bytes = (BF16 * (b * t * (h + 2 * hkv) * d) as f64) as usize;
    case(
        op,
        label,
        &[b, t, h, hkv, d],
        Work::Flops(flops),
        bytes,
        move |rng, dev| {
            Ok((
                uniform_on(&[b, t, h, d], rng, DType::BF16, dev)?,
                uniform_on(&[b, t, hkv, d], rng, DType::BF16, dev)?,
                uniform_on(&[b, t, hkv, d], rng, DType::BF16, dev)?,
            ))
        },
        move |(q, k, v)| {
            let mask = AttentionMask::default();
            if !backward {
                return ops::attention(q, k, v, &mask).map(drop);
            }
            let tape = Tape::new();
            let (q, k, v) = (tape.watch(q), tape.watch(k), tape.watch(v));
            let out = ops::attention(&q, &k, &v, &mask)?;
            // d(sum(out * g)) with a fixed random g would be cleaner; scaling keeps it one kernel.
            let loss = ops::sum(&out.to_dtype(DType::F32)?)?;
            tape.backward(&loss).map(drop)
        },
    )
}

fn rmsnorm() -> GpuCase {
    let n = 4 * TOKENS;
    let bytes = BF16 * (2 * n * C + C) as f64;
    case(
        "rmsnorm",
        "forward",
        &[n, C],
        Work::Bytes(bytes),
        bytes as usize,
        move |rng, dev| {
            Ok((uniform_on(&[n, C], rng, DType::BF16, dev)?, uniform_on(&[C], rng, DType::BF16, dev)?))
        },
        |(x, w)| ops::rmsnorm(x, w, 1e-5).map(drop),
    )
}

fn rope() -> GpuCase {
    let (b, t, h, d) = (4, 2048, 32, 128);
    let bytes = BF16 * (2 * b * t * h * d) as f64 + 4.0 * (b * t) as f64;
    case(
        "rope",
        "forward, queries",
        &[b, t, h, d],
        Work::Bytes(bytes),
        bytes as usize,
        move |rng, dev| {
            let pos: Vec<u32> = (0..b * t).map(|i| (i % t) as u32).collect();
            Ok((
                uniform_on(&[b, t, h, d], rng, DType::BF16, dev)?,
                Tensor::from_vec(pos, [b, t])?.to_device(dev)?,
            ))
        },
        |(x, pos)| ops::rope(x, pos, 10000.0).map(drop),
    )
}

fn swiglu() -> GpuCase {
    let n = TOKENS;
    let bytes = BF16 * (3 * n * F) as f64;
    case(
        "swiglu",
        "forward",
        &[n, F],
        Work::Bytes(bytes),
        bytes as usize,
        move |rng, dev| {
            Ok((uniform_on(&[n, F], rng, DType::BF16, dev)?, uniform_on(&[n, F], rng, DType::BF16, dev)?))
        },
        |(g, u)| ops::swiglu(g, u).map(drop),
    )
}

fn embedding() -> GpuCase {
    let n = 4 * TOKENS;
    let bytes = 4.0 * n as f64 + BF16 * (2 * n * C) as f64;
    case(
        "embedding",
        "forward, table 32000x4096",
        &[n, C],
        Work::Bytes(bytes),
        (BF16 * (V * C) as f64) as usize,
        move |rng, dev| Ok((ids_on(&[n], V, rng, dev)?, uniform_on(&[V, C], rng, DType::BF16, dev)?)),
        |(ids, table)| ops::embedding(ids, table).map(drop),
    )
}

/// Cross-entropy forward + backward over [4096, 32000] bf16 logits: read twice, gradient written.
fn cross_entropy() -> GpuCase {
    let bytes = BF16 * (3 * TOKENS * V) as f64;
    case(
        "cross_entropy_fwd_bwd",
        "forward + backward",
        &[TOKENS, V],
        Work::Bytes(bytes),
        bytes as usize,
        move |rng, dev| {
            Ok((uniform_on(&[TOKENS, V], rng, DType::BF16, dev)?, ids_on(&[TOKENS], V, rng, dev)?))
        },
        |(logits, targets)| {
            let tape = Tape::new();
            let l = tape.watch(logits);
            let ce = ops::cross_entropy(&l, targets)?;
            tape.backward(&ce.loss_sum).map(drop)
        },
    )
}

fn linear_cross_entropy() -> GpuCase {
    let flops = 8.0 * (TOKENS * V * C) as f64;
    let bytes = (BF16 * (TOKENS * C + V * C) as f64) as usize;
    case(
        "linear_cross_entropy_fwd_bwd",
        "fused lm_head, fwd + bwd",
        &[TOKENS, V, C],
        Work::Flops(flops),
        bytes,
        move |rng, dev| {
            Ok((
                uniform_on(&[TOKENS, C], rng, DType::BF16, dev)?,
                uniform_on(&[V, C], rng, DType::BF16, dev)?,
                ids_on(&[TOKENS], V, rng, dev)?,
            ))
        },
        |(h, w, t)| {
            let tape = Tape::new();
            let (h, w) = (tape.watch(h), tape.watch(w));
            let ce = ops::linear_cross_entropy(&h, &w, t)?;
            tape.backward(&ce.loss_sum).map(drop)
        },
    )
}

/// One AdamW step over 64M f32 master weights: reads p, g, m, v; writes p, m, v.
fn adamw() -> GpuCase {
    let n = 64 << 20;
    let bytes = F32 * (7 * n) as f64;
    case(
        "adamw",
        "64M f32 master weights",
        &[n],
        Work::Bytes(bytes),
        bytes as usize,
        move |rng, dev| {
            Ok((
                uniform_on(&[n], rng, DType::F32, dev)?,
                uniform_on(&[n], rng, DType::F32, dev)?,
                AdamW::new(AdamWConfig::default()),
            ))
        },
        |(p, g, opt)| {
            opt.begin_step();
            opt.update(p, g, true, 1e-4)
        },
    )
}

pub fn gpu_cases() -> Vec<GpuCase> {
    let matmuls: [(&str, usize, usize, usize, bool, bool); 5] = [
        ("4096^3 (A B)", 4096, 4096, 4096, false, false),
        ("SOLAR gate/up: x W^T, 4096 tok 4096 -> 14336", TOKENS, F, C, false, true),
        ("SOLAR down: x W^T, 4096 tok 14336 -> 4096", TOKENS, C, F, false, true),
        ("SOLAR dW: dy^T x, 14336 x 4096 over 4096 tok", F, C, TOKENS, true, false),
        ("SOLAR dx: dy W, 4096 tok 14336 -> 4096", TOKENS, C, F, false, false),
    ];
    let mut cases: Vec<GpuCase> =
        matmuls.iter().map(|&(l, m, n, k, ta, tb)| matmul(l, m, n, k, ta, tb)).collect();
    cases.extend(matmuls.iter().map(|&(l, m, n, k, ta, tb)| matmul_wgmma(l, m, n, k, ta, tb)));
    cases.extend([
        attention(false),
        attention(true),
        rmsnorm(),
        rope(),
        swiglu(),
        embedding(),
        cross_entropy(),
        linear_cross_entropy(),
        adamw(),
    ]);
    cases
}

/// Dense bf16 tensor-core peak in TFLOP/s from the device name (spec sheets), if known.
pub fn spec_bf16_tflops(name: &str) -> Option<f64> {
    let n = name.to_uppercase();
    if n.contains("H100") || n.contains("H200") || n.contains("H800") || n.contains("GH200") {
        Some(if n.contains("PCIE") { 756.0 } else { 989.0 })
    } else if n.contains("A100") || n.contains("A800") {
        Some(312.0)
    } else {
        None
    }
}

/// Times one case on `gpu`: warm-up, then `repeats` runs rotating over enough input sets to
/// exceed 2x L2; the result (or the error) as a row.
pub fn time_gpu_case(
    case: &GpuCase,
    gpu: &Arc<Gpu>,
    seed: u64,
    repeats: usize,
    copy_gbps: f64,
) -> BenchResult {
    let sets = (2 * timing::l2_bytes(gpu)).div_ceil(case.set_bytes.max(1)).clamp(1, 8);
    let mut row = BenchResult {
        op: case.op.to_string(),
        case: case.label.clone(),
        shape: case.shape.clone(),
        dtype: "bf16".into(),
        median_s: 0.0,
        runs: 0,
        tflops: None,
        gbps: None,
        pct_of_ceiling: None,
        error: None,
    };
    let outcome = (|| -> Result<f64> {
        let mut run = (case.build)(&mut Rng::new(seed), Device::Cuda(gpu.ordinal), sets)?;
        for i in 0..sets.max(2) {
            run(i)?; // warm-up: kernel compilation, module loading, pool growth
        }
        gpu.synchronize()?;
        let mut ms = Vec::with_capacity(repeats);
        for i in 0..repeats.max(1) {
            ms.push(timing::time_ms(gpu, || run(i))?);
        }
        Ok(super::median(&mut ms) * 1e-3)
    })();
    match outcome {
        Ok(s) => {
            row.median_s = s;
            row.runs = repeats.max(1);
            match case.work {
                Work::Flops(f) => {
                    let t = f / s / 1e12;
                    row.tflops = Some(t);
                    row.pct_of_ceiling = spec_bf16_tflops(&gpu.name).map(|p| 100.0 * t / p);
                }
                Work::Bytes(b) => {
                    let g = b / s / 1e9;
                    row.gbps = Some(g);
                    row.pct_of_ceiling = Some(100.0 * g / copy_gbps);
                }
            }
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    row
}

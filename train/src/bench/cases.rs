//! The benchmark cases: one representative shape per op (four for matmul), its random inputs
//! and how much work one run does. Shapes follow a small SOLAR-like layer: hidden C = 1024,
//! FFN width F = 2816, vocab V = 32000, a batch of 4 x 512 = 2048 tokens for the element-wise
//! ops. Both `solar-train bench` and the criterion benchmarks time exactly these closures.
//! Work counts: FLOPs for matmul, attention and the fused lm_head loss (multiply-add = 2), otherwise the fewest bytes
//! the op must read and write (f32 = 4 bytes, token ids and positions 4 bytes).

use solar_engine::ops::{self, AttentionMask};
use solar_engine::optim::{AdamW, AdamWConfig};
use solar_engine::{Result, Rng, Tape, Tensor};
use std::hint::black_box;

/// One timed call of the op on the case's inputs (built once, reused by every run).
pub type Runner = Box<dyn FnMut() -> Result<()>>;

/// Builds a case's inputs from a seeded generator and returns its runner.
type Builder = Box<dyn Fn(&mut Rng) -> Result<Runner>>;

/// How much one run does, for the throughput column.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    Flops(f64),
    Bytes(f64),
}

pub struct Case {
    pub op: &'static str,
    pub label: String,
    pub shape: Vec<usize>,
    pub work: Work,
    build: Builder,
}

impl Case {
    /// Builds the inputs from `seed` and returns the closure to time.
    pub fn prepare(&self, seed: u64) -> Result<Runner> {
        (self.build)(&mut Rng::new(seed))
    }
}

const HIDDEN: usize = 1024; // C
const FFN: usize = 2816; // F
const VOCAB: usize = 32000; // V
const BATCH: usize = 4; // B, for the element-wise ops
const SEQ: usize = 512; // T
const TOKENS: usize = BATCH * SEQ;
const F32: f64 = 4.0;

/// Every case, in `OP_NAMES` order.
pub fn cases() -> Vec<Case> {
    vec![
        matmul_case("square", 1024, 1024, 1024, false, false),
        matmul_case("x W (FFN up, 512 tokens)", 512, FFN, HIDDEN, false, false),
        matmul_case("x^T dy (weight grad, A transposed)", HIDDEN, FFN, 512, true, false),
        matmul_case("dy W^T (input grad, B transposed)", 512, HIDDEN, FFN, false, true),
        attention_case(false),
        attention_case(true),
        rmsnorm_case(),
        rope_case(),
        swiglu_case(),
        embedding_case(),
        cross_entropy_case(false),
        cross_entropy_case(true),
        linear_cross_entropy_case(),
        sequence_logprobs_case(),
        adamw_case(),
    ]
}

/// Uniform values in [-1, 1), filled straight in f32: the big tables would take seconds
/// through the engine's f64 Box-Muller path, and the values do not affect the timing.
fn uniform(shape: &[usize], rng: &mut Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> =
        (0..n).map(|_| (rng.next_u64() >> 40) as f32 * (2.0 / (1u64 << 24) as f32) - 1.0).collect();
    Tensor::from_vec(data, shape)
}

/// Token ids uniform in [0, bound).
fn token_ids(shape: &[usize], bound: usize, rng: &mut Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let data: Vec<i32> = (0..n).map(|_| rng.below(bound as u64) as i32).collect();
    Tensor::from_vec(data, shape)
}

fn case(
    op: &'static str,
    label: &str,
    shape: &[usize],
    work: Work,
    build: impl Fn(&mut Rng) -> Result<Runner> + 'static,
) -> Case {
    Case { op, label: label.to_string(), shape: shape.to_vec(), work, build: Box::new(build) }
}

/// C [M, N] = op(A) op(B) with inner size K; the shape is reported as [M, N, K].
fn matmul_case(label: &str, m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Case {
    let work = Work::Flops(2.0 * (m * n * k) as f64);
    case("matmul", label, &[m, n, k], work, move |rng| {
        let a = uniform(&if ta { [k, m] } else { [m, k] }, rng)?; // [M, K] or [K, M]
        let b = uniform(&if tb { [n, k] } else { [k, n] }, rng)?; // [K, N] or [N, K]
        Ok(Box::new(move || {
            black_box(ops::matmul_t(&a, &b, ta, tb)?);
            Ok(())
        }))
    })
}

/// Causal GQA attention at B=1, T=512, H=8, Hkv=2, D=64. A query sees T(T+1)/2 (query, key)
/// pairs per head; each costs 4D FLOPs forward (q.k and p v) and 10D backward (recomputing
/// q.k, then dO.v, dq, dk and dv), flash-attention's usual count.
fn attention_case(backward: bool) -> Case {
    let (b, t, h, hkv, d) = (1, 512, 8, 2, 64);
    let pairs = (b * h * t * (t + 1) / 2) as f64;
    let per_pair = if backward { 14.0 } else { 4.0 };
    let (op, label) = if backward {
        ("attention_fwd_bwd", "causal GQA, forward + backward")
    } else {
        ("attention", "causal GQA, forward")
    };
    case(op, label, &[b, t, h, hkv, d], Work::Flops(per_pair * d as f64 * pairs), move |rng| {
        let q = uniform(&[b, t, h, d], rng)?; // [B, T, H, D]
        let k = uniform(&[b, t, hkv, d], rng)?; // [B, T, Hkv, D]
        let v = uniform(&[b, t, hkv, d], rng)?; // [B, T, Hkv, D]
        let mask = AttentionMask::default();
        Ok(Box::new(move || {
            if !backward {
                black_box(ops::attention(&q, &k, &v, &mask)?);
                return Ok(());
            }
            let tape = Tape::new();
            let (q, k, v) = (tape.watch(&q), tape.watch(&k), tape.watch(&v));
            let out = ops::attention(&q, &k, &v, &mask)?;
            black_box(tape.backward(&ops::sum(&out)?)?);
            Ok(())
        }))
    })
}

/// RMSNorm over C of 2048 tokens: reads x and w, writes y.
fn rmsnorm_case() -> Case {
    let bytes = F32 * (2 * TOKENS * HIDDEN + HIDDEN) as f64;
    case("rmsnorm", "forward", &[TOKENS, HIDDEN], Work::Bytes(bytes), |rng| {
        let x = uniform(&[TOKENS, HIDDEN], rng)?; // [N, C]
        let w = uniform(&[HIDDEN], rng)?; // [C]
        Ok(Box::new(move || {
            black_box(ops::rmsnorm(&x, &w, 1e-5)?);
            Ok(())
        }))
    })
}

/// RoPE on queries [B, T, H, D] with H * D = C: reads x and positions, writes y.
fn rope_case() -> Case {
    let (h, d) = (16, 64);
    let n = BATCH * SEQ * h * d;
    let bytes = F32 * (2 * n + TOKENS) as f64;
    case("rope", "forward", &[BATCH, SEQ, h, d], Work::Bytes(bytes), move |rng| {
        let x = uniform(&[BATCH, SEQ, h, d], rng)?; // [B, T, H, D]
        let pos: Vec<u32> = (0..TOKENS).map(|i| (i % SEQ) as u32).collect();
        let pos = Tensor::from_vec(pos, [BATCH, SEQ].as_slice())?; // [B, T]
        Ok(Box::new(move || {
            black_box(ops::rope(&x, &pos, 10000.0)?);
            Ok(())
        }))
    })
}

/// SwiGLU on the FFN activations [N, F]: reads gate and up, writes the product.
fn swiglu_case() -> Case {
    let bytes = F32 * (3 * TOKENS * FFN) as f64;
    case("swiglu", "forward", &[TOKENS, FFN], Work::Bytes(bytes), |rng| {
        let gate = uniform(&[TOKENS, FFN], rng)?; // [N, F]
        let up = uniform(&[TOKENS, FFN], rng)?; // [N, F]
        Ok(Box::new(move || {
            black_box(ops::swiglu(&gate, &up)?);
            Ok(())
        }))
    })
}

/// Embedding lookup of 2048 ids in a [V, C] table: reads the ids and their rows, writes [N, C].
fn embedding_case() -> Case {
    let bytes = F32 * (TOKENS + 2 * TOKENS * HIDDEN) as f64;
    case("embedding", "forward, table 32000x1024", &[TOKENS, HIDDEN], Work::Bytes(bytes), |rng| {
        let table = uniform(&[VOCAB, HIDDEN], rng)?; // [V, C]
        let ids = token_ids(&[TOKENS], VOCAB, rng)?; // [N]
        Ok(Box::new(move || {
            black_box(ops::embedding(&ids, &table)?);
            Ok(())
        }))
    })
}

/// Cross-entropy of 512 rows over V: the forward reads the logits once; the backward reads
/// them again and writes their gradient.
fn cross_entropy_case(backward: bool) -> Case {
    let n = 512;
    let passes = if backward { 3 } else { 1 };
    let bytes = F32 * (passes * n * VOCAB + n) as f64;
    let (op, label) =
        if backward { ("cross_entropy_fwd_bwd", "forward + backward") } else { ("cross_entropy", "forward") };
    case(op, label, &[n, VOCAB], Work::Bytes(bytes), move |rng| {
        let logits = uniform(&[n, VOCAB], rng)?; // [N, V]
        let targets = token_ids(&[n], VOCAB, rng)?; // [N]
        Ok(Box::new(move || {
            if !backward {
                black_box(ops::cross_entropy(&logits, &targets)?.loss_sum);
                return Ok(());
            }
            let tape = Tape::new();
            let logits = tape.watch(&logits);
            let ce = ops::cross_entropy(&logits, &targets)?;
            black_box(tape.backward(&ce.loss_sum)?);
            Ok(())
        }))
    })
}

/// The fused lm_head + cross-entropy of 512 rows [N, C] against a [V, C] head, forward and
/// backward: the logits h W^T once forward, then again with dh and dW backward (2NVC each).
fn linear_cross_entropy_case() -> Case {
    let n = 512;
    let flops = 8.0 * (n * VOCAB * HIDDEN) as f64;
    let label = "fused lm_head, forward + backward";
    case("linear_cross_entropy_fwd_bwd", label, &[n, VOCAB, HIDDEN], Work::Flops(flops), move |rng| {
        let h = uniform(&[n, HIDDEN], rng)?; // [N, C]
        let w = uniform(&[VOCAB, HIDDEN], rng)?; // [V, C]
        let targets = token_ids(&[n], VOCAB, rng)?; // [N]
        Ok(Box::new(move || {
            let tape = Tape::new();
            let (h, w) = (tape.watch(&h), tape.watch(&w));
            let ce = ops::linear_cross_entropy(&h, &w, &targets)?;
            black_box(tape.backward(&ce.loss_sum)?);
            Ok(())
        }))
    })
}

/// DPO's per-sequence log-probs of 2 x 256 tokens over V: reads logits and labels.
fn sequence_logprobs_case() -> Case {
    let (b, t) = (2, 256);
    let bytes = F32 * (b * t * VOCAB + b * t + b) as f64;
    case("sequence_logprobs", "forward", &[b, t, VOCAB], Work::Bytes(bytes), move |rng| {
        let logits = uniform(&[b, t, VOCAB], rng)?; // [B, T, V]
        let labels = token_ids(&[b, t], VOCAB, rng)?; // [B, T]
        Ok(Box::new(move || {
            black_box(ops::sequence_logprobs(&logits, &labels)?.logps);
            Ok(())
        }))
    })
}

/// One AdamW step of a [C, F] weight: reads p, g, m, v and writes p, m, v.
fn adamw_case() -> Case {
    let n = HIDDEN * FFN;
    let bytes = F32 * (7 * n) as f64;
    case("adamw", "one step of a 1024x2816 weight", &[HIDDEN, FFN], Work::Bytes(bytes), |rng| {
        let mut param = uniform(&[HIDDEN, FFN], rng)?; // [C, F]
        let grad = uniform(&[HIDDEN, FFN], rng)?; // [C, F]
        let mut opt = AdamW::new(AdamWConfig::default());
        Ok(Box::new(move || {
            opt.begin_step();
            opt.update(&mut param, &grad, true, 1e-4)
        }))
    })
}

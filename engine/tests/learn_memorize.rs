//! A small network built only from the engine's ops (embedding, RMSNorm, RoPE, attention with
//! GQA, SwiGLU, cross-entropy) and trained with AdamW memorizes a fixed set of random token
//! sequences: the loss must fall below a hundredth of its start within 150 steps. This ties the
//! forward ops, every backward, the tape and the optimizer together.

use solar_engine::ops::{self, AttentionMask};
use solar_engine::optim::{clip_grad_norm, AdamW, AdamWConfig};
use solar_engine::{DType, Result, Rng, Tape, Tensor};

const V: usize = 24; // vocab
const C: usize = 32; // channels
const H: usize = 4; // query heads
const HKV: usize = 2; // kv heads
const D: usize = C / H; // head dim
const F: usize = 64; // ffn width
const B: usize = 4; // sequences
const T: usize = 12; // tokens per sequence

struct Net {
    /// (tensor, weight decay on?) in a fixed order: embed, norms, projections, head.
    params: Vec<(Tensor, bool)>,
}

impl Net {
    fn new(rng: &mut Rng) -> Net {
        let mut p = |shape: &[usize], std: f64| Tensor::randn(shape, std, DType::F32, rng);
        let params = vec![
            (p(&[V, C], 0.5), true),                // 0 embed
            (Tensor::ones([C], DType::F32), false), // 1 attn norm
            (p(&[H * D, C], 0.2), true),            // 2 wq
            (p(&[HKV * D, C], 0.2), true),          // 3 wk
            (p(&[HKV * D, C], 0.2), true),          // 4 wv
            (p(&[C, H * D], 0.2), true),            // 5 wo
            (Tensor::ones([C], DType::F32), false), // 6 mlp norm
            (p(&[F, C], 0.2), true),                // 7 gate
            (p(&[F, C], 0.2), true),                // 8 up
            (p(&[C, F], 0.2), true),                // 9 down
            (Tensor::ones([C], DType::F32), false), // 10 final norm
            (p(&[V, C], 0.2), true),                // 11 lm head
        ];
        Net { params }
    }

    /// Mean next-token loss over `tokens` [B, T].
    fn loss(&self, tape: &Tape, tokens: &[u32]) -> Result<Tensor> {
        let w: Vec<Tensor> = self.params.iter().map(|(t, _)| tape.watch(t)).collect();
        let lin = |x: &Tensor, w: &Tensor| ops::matmul_t(x, w, false, true);
        let ids = Tensor::from_vec(tokens.to_vec(), [B, T])?;
        let pos = Tensor::from_vec((0..(B * T) as u32).map(|i| i % T as u32).collect::<Vec<_>>(), [B, T])?;
        let x = ops::embedding(&ids, &w[0])?; // [B, T, C]
        let h = ops::rmsnorm(&x, &w[1], 1e-5)?;
        let q = ops::rope(&lin(&h, &w[2])?.reshape([B, T, H, D])?, &pos, 10000.0)?;
        let k = ops::rope(&lin(&h, &w[3])?.reshape([B, T, HKV, D])?, &pos, 10000.0)?;
        let v = lin(&h, &w[4])?.reshape([B, T, HKV, D])?;
        let a = ops::attention(&q, &k, &v, &AttentionMask::default())?.reshape([B, T, H * D])?;
        let x = ops::add(&x, &lin(&a, &w[5])?)?;
        let h = ops::rmsnorm(&x, &w[6], 1e-5)?;
        let x = ops::add(&x, &lin(&ops::swiglu(&lin(&h, &w[7])?, &lin(&h, &w[8])?)?, &w[9])?)?;
        let logits = lin(&ops::rmsnorm(&x, &w[10], 1e-5)?, &w[11])?.reshape([B * T, V])?;
        // Targets: the next token; the last position of each sequence is ignored.
        let targets: Vec<i32> =
            (0..B * T).map(|i| if i % T == T - 1 { -100 } else { tokens[i + 1] as i32 }).collect();
        ops::cross_entropy_mean(&logits, &Tensor::from_vec(targets, [B * T])?)
    }
}

#[test]
fn a_small_network_memorizes_random_sequences() {
    let mut rng = Rng::new(7);
    let tokens: Vec<u32> = (0..B * T).map(|_| rng.below(V as u64) as u32).collect();
    let mut net = Net::new(&mut rng);
    let mut opt = AdamW::new(AdamWConfig { beta1: 0.9, beta2: 0.98, eps: 1e-8, weight_decay: 0.01 });
    let ids: Vec<_> = net.params.iter().map(|(t, _)| t.id()).collect();
    let mut first = None;
    let mut last = f64::NAN;
    for step in 0..150 {
        let tape = Tape::new();
        let loss = net.loss(&tape, &tokens).unwrap();
        let value = loss.to_scalar().unwrap();
        first.get_or_insert(value);
        last = value;
        if step == 149 {
            break;
        }
        let mut grads = tape.backward(&loss).unwrap();
        clip_grad_norm(&mut grads, &ids, 1.0).unwrap();
        opt.step(net.params.iter_mut().map(|(t, d)| (t, *d)), &grads, 1e-2).unwrap();
    }
    let first = first.unwrap();
    eprintln!("loss {first:.4} -> {last:.4} in 150 steps");
    // Uniform guessing over 24 tokens costs ln 24 = 3.18 nats.
    assert!(first > 2.5, "initial loss {first} should be near ln(24)");
    assert!(last < first / 100.0, "loss fell from {first} to {last}: less than 100x in 150 steps");
}

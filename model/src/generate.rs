//! Text generation with a KV cache. The prompt is run once (prefill) and each new token costs
//! one step over the cache; both go through the same layer code with `attention_decode`, whose
//! queries sit at the end of the cached keys. Sampling: greedy at temperature 0, otherwise
//! softmax(logits / T) cut to the smallest top-p set (nucleus), drawn from a seeded stream.

use crate::error::Result;
use crate::llama::Llama;
use crate::names;
use solar_engine::ops;
use solar_engine::{DType, Rng, Tensor};

/// Per layer, the keys and values of every token so far: [1, T, Hkv, D] flattened.
pub struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub fn new(layers: usize) -> KvCache {
        KvCache { keys: vec![Vec::new(); layers], values: vec![Vec::new(); layers], len: 0 }
    }
    /// Tokens cached so far.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    /// Keep going past an end-of-sequence token.
    pub ignore_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions { max_new_tokens: 32, temperature: 0.0, top_p: 1.0, seed: 0, ignore_eos: false }
    }
}

impl Llama {
    /// Runs `ids` (the next tokens of one sequence) through the model over `cache`, appending
    /// their keys and values; returns the logits of the last token [V].
    pub fn forward_cached(&self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let cfg = &self.config;
        let (t, past) = (ids.len(), cache.len);
        let (hkv, d) = (cfg.num_key_value_heads, cfg.head_dim);
        let positions = Tensor::from_vec((past..past + t).map(|i| i as u32).collect::<Vec<_>>(), [1, t])?;
        let positions = self.on_device(&positions)?;
        let ids = Tensor::from_vec(ids.to_vec(), [1, t])?;
        let mut x = ops::embedding(&ids, &self.w(None, names::EMBED)?)?;
        let host_f32 = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.to_dtype(DType::F32)?.to_vec::<f32>()?) };
        let dims = [1, t, past + t, cfg.num_attention_heads, hkv, d];
        for l in 0..cfg.num_hidden_layers {
            x = self.block(None, l, &x, &positions, |l, q, k, v| {
                cache.keys[l].extend(host_f32(k)?);
                cache.values[l].extend(host_f32(v)?);
                // The cache lives on the host (f32) and decode attention runs there over it in
                // place; on CUDA the query goes over and the result comes back.
                let o = ops::attention_decode_slices(
                    &host_f32(q)?,
                    &cache.keys[l],
                    &cache.values[l],
                    dims,
                    cfg.sliding_window,
                )?;
                self.activation(&Tensor::from_vec(o, q.dims())?)
            })?;
        }
        cache.len += t;
        let c = cfg.hidden_size;
        let last = Tensor::from_vec(host_f32(&x)?[(t - 1) * c..].to_vec(), [1, c])?;
        let hn = ops::rmsnorm(&self.activation(&last)?, &self.w(None, names::FINAL_NORM)?, cfg.rms_norm_eps)?;
        host_f32(&ops::matmul_t(&hn, &self.head(None)?, false, true)?)
    }

    /// Generates up to `max_new_tokens` after `prompt`; returns the new tokens only.
    pub fn generate(&self, prompt: &[u32], opts: &GenerateOptions) -> Result<Vec<u32>> {
        self.generate_streaming(prompt, opts, |_| Ok(()))
    }

    /// `generate`, handing each new token to `on_token` as soon as it is chosen (so a
    /// terminal can show it before the next one is computed); an error from it stops.
    pub fn generate_streaming(
        &self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(crate::ModelError::Msg("generate: the prompt has no tokens".into()));
        }
        let mut cache = KvCache::new(self.config.num_hidden_layers);
        let mut rng = Rng::new(opts.seed);
        let mut logits = self.forward_cached(prompt, &mut cache)?;
        let mut out = Vec::new();
        for step in 0..opts.max_new_tokens {
            let next = sample(&logits, opts.temperature, opts.top_p, &mut rng);
            out.push(next);
            on_token(next)?;
            if !opts.ignore_eos && self.config.eos_token_ids.contains(&next) {
                break;
            }
            if step + 1 < opts.max_new_tokens {
                logits = self.forward_cached(&[next], &mut cache)?;
            }
        }
        Ok(out)
    }
}

/// Picks the next token: argmax (first on ties) at temperature 0, else nucleus sampling.
pub fn sample(logits: &[f32], temperature: f64, top_p: f64, rng: &mut Rng) -> u32 {
    if temperature <= 0.0 {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut probs: Vec<(usize, f64)> =
        logits.iter().enumerate().map(|(i, &x)| (i, ((x as f64 - m) / temperature).exp())).collect();
    let z: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= z);
    // Largest first, ties by index, so the draw is reproducible.
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0;
    let mut mass = 0.0;
    for p in &probs {
        kept += 1;
        mass += p.1;
        if mass >= top_p {
            break;
        }
    }
    let mut u = rng.uniform() * mass;
    for p in &probs[..kept] {
        u -= p.1;
        if u <= 0.0 {
            return p.0 as u32;
        }
    }
    probs[kept - 1].0 as u32
}

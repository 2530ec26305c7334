//! What the ops and the CUDA launchers both speak, below both: the sizes of a matmul and of an
//! attention call, AdamW's per-step constants, and the host-side bucketing of token ids that
//! both backends' embedding backward build on. `ops` fills these in and hands them to a
//! launcher; `cuda` reads them; neither imports the other's internals for them.

/// Sizes of one matmul call after validation: A [batch, M, K] ([batch, K, M] transposed),
/// B [batch, K, N] ([batch, N, K] transposed) or one 2-D B shared by the batch, C [batch, M, N].
#[derive(Clone, Copy, Debug)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// B is 2-D and shared by every batch.
    pub b_shared: bool,
}

/// Sizes and the window of one attention call: q [B, T, H, D], k and v [B, T, Hkv, D]
/// (document ids travel separately, on the device).
#[derive(Clone, Copy, Debug)]
pub struct AttnDims {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub hkv: usize,
    pub d: usize,
    /// Mistral's sliding window (query i sees keys j with i - j < window); None: no window.
    pub window: Option<usize>,
}

impl AttnDims {
    /// Elements of q, out and dq: B*T*H*D.
    pub fn q_len(&self) -> usize {
        self.b * self.t * self.h * self.d
    }
    /// Elements of k and v: B*T*Hkv*D.
    pub fn kv_len(&self) -> usize {
        self.b * self.t * self.hkv * self.d
    }
    /// Rows of the statistics (logsumexp, delta): B*H*T.
    pub fn rows(&self) -> usize {
        self.b * self.h * self.t
    }
}

/// One AdamW step's constants, rounded to f32 exactly as the CPU update rounds them (computed
/// in f64 first), so the CUDA step is bitwise the CPU's for f32 gradients.
#[derive(Clone, Copy, Debug)]
pub struct AdamWHyper {
    /// 1 - lr * weight_decay (1: no decay).
    pub keep: f32,
    pub b1: f32,
    pub b2: f32,
    pub eps: f32,
    /// lr / (1 - beta1^t).
    pub step_size: f32,
    /// sqrt(1 - beta2^t).
    pub bc2_sqrt: f32,
    /// Multiplies the gradient first (1: none); a grad-norm clip can fold in here.
    pub gscale: f32,
}

/// Positions bucketed by token id with a counting sort, position order kept in a bucket:
/// `order[start[v]..start[v + 1]]` are the positions holding id v. Both backends' embedding
/// backward build on it.
pub fn bucket_by_id(ids: &[usize], vocab: usize) -> (Vec<usize>, Vec<usize>) {
    let mut start = vec![0usize; vocab + 1];
    for &i in ids {
        start[i + 1] += 1;
    }
    for v in 0..vocab {
        start[v + 1] += start[v];
    }
    let mut fill = start.clone();
    let mut order = vec![0usize; ids.len()];
    for (n, &i) in ids.iter().enumerate() {
        order[fill[i]] = n;
        fill[i] += 1;
    }
    (start, order)
}

//! Oracle losses and the optimizer step, in f64 loops. Targets use `None` for ignored rows.

fn log_softmax_row(row: &[f64]) -> Vec<f64> {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
    row.iter().map(|x| x - m - z.ln()).collect()
}

/// (summed loss, counted rows) of logits [N, V] against targets [N].
pub fn cross_entropy(logits: &[f64], targets: &[Option<usize>], v: usize) -> (f64, usize) {
    let mut sum = 0.0;
    let mut count = 0;
    for (r, t) in targets.iter().enumerate() {
        if let Some(t) = t {
            sum -= log_softmax_row(&logits[r * v..(r + 1) * v])[*t];
            count += 1;
        }
    }
    (sum, count)
}

/// d(summed loss)/d logits, times `g`.
pub fn cross_entropy_grad(logits: &[f64], targets: &[Option<usize>], v: usize, g: f64) -> Vec<f64> {
    let mut dx = vec![0.0; logits.len()];
    for (r, t) in targets.iter().enumerate() {
        if let Some(t) = t {
            let ls = log_softmax_row(&logits[r * v..(r + 1) * v]);
            for i in 0..v {
                let onehot = if i == *t { 1.0 } else { 0.0 };
                dx[r * v + i] = g * (ls[i].exp() - onehot);
            }
        }
    }
    dx
}

/// Summed log-probs per sequence [B] for logits [B, T, V] and labels [B, T].
pub fn sequence_logprobs(logits: &[f64], labels: &[Option<usize>], b: usize, t: usize, v: usize) -> Vec<f64> {
    (0..b)
        .map(|s| {
            (s * t..(s + 1) * t)
                .filter_map(|r| labels[r].map(|l| log_softmax_row(&logits[r * v..(r + 1) * v])[l]))
                .sum()
        })
        .collect()
}

/// d(sum_b g_b logp_b)/d logits.
pub fn sequence_logprobs_grad(
    logits: &[f64],
    labels: &[Option<usize>],
    t: usize,
    v: usize,
    g: &[f64],
) -> Vec<f64> {
    let mut dx = vec![0.0; logits.len()];
    for (r, l) in labels.iter().enumerate() {
        if let Some(l) = l {
            let ls = log_softmax_row(&logits[r * v..(r + 1) * v]);
            for i in 0..v {
                let onehot = if i == *l { 1.0 } else { 0.0 };
                dx[r * v + i] = g[r / t] * (onehot - ls[i].exp());
            }
        }
    }
    dx
}

/// One AdamW step written from the paper's algorithm (bias-corrected m-hat and v-hat, then
/// decoupled decay), in place. `t` is 1-based.
#[allow(clippy::too_many_arguments)]
pub fn adamw_step(
    p: &mut [f64],
    g: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    wd: f64,
    t: u64,
    decay: bool,
) {
    for i in 0..p.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        let mhat = m[i] / (1.0 - b1.powi(t as i32));
        let vhat = v[i] / (1.0 - b2.powi(t as i32));
        let decayed = if decay { p[i] - lr * wd * p[i] } else { p[i] };
        p[i] = decayed - lr * mhat / (vhat.sqrt() + eps);
    }
}

//! The loop oracle: every op written as plainly as possible in f64, with no parallelism, no
//! blocking and no cleverness, so it is obviously right. Tests hold the fast path (`ops`) to it.
//! These functions take and return flat row-major slices with the shapes in their comments.

mod attention;
mod losses;

pub use attention::{attention_bwd, attention_fwd};
pub use losses::{adamw_step, cross_entropy, cross_entropy_grad, sequence_logprobs, sequence_logprobs_grad};

/// C [batch, M, N] = op(A) op(B); A is [batch, M, K] ([batch, K, M] if ta); B is [batch?, K, N]
/// ([batch?, N, K] if tb), shared by every batch when `b_shared`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    a: &[f64],
    b: &[f64],
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    b_shared: bool,
) -> Vec<f64> {
    let mut c = vec![0.0; batch * m * n];
    for bi in 0..batch {
        let a0 = bi * m * k;
        let b0 = if b_shared { 0 } else { bi * k * n };
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for l in 0..k {
                    let av = if ta { a[a0 + l * m + i] } else { a[a0 + i * k + l] };
                    let bv = if tb { b[b0 + j * k + l] } else { b[b0 + l * n + j] };
                    s += av * bv;
                }
                c[bi * m * n + i * n + j] = s;
            }
        }
    }
    c
}

/// out [N, C] = table [V, C] rows picked by ids [N].
pub fn embedding(ids: &[usize], table: &[f64], c: usize) -> Vec<f64> {
    ids.iter().flat_map(|&i| table[i * c..(i + 1) * c].to_vec()).collect()
}

/// d table [V, C] from d out [N, C].
pub fn embedding_grad(ids: &[usize], g: &[f64], vocab: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; vocab * c];
    for (n, &i) in ids.iter().enumerate() {
        for e in 0..c {
            out[i * c + e] += g[n * c + e];
        }
    }
    out
}

/// y [N, C] = x / sqrt(mean(x^2) + eps) * w.
pub fn rmsnorm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let c = w.len();
    let mut y = vec![0.0; x.len()];
    for r in 0..x.len() / c {
        let row = &x[r * c..(r + 1) * c];
        let ms: f64 = row.iter().map(|v| v * v).sum::<f64>() / c as f64;
        for i in 0..c {
            y[r * c + i] = row[i] / (ms + eps).sqrt() * w[i];
        }
    }
    y
}

/// (dx, dw) of RMSNorm by the quotient rule written out per element.
pub fn rmsnorm_grad(x: &[f64], w: &[f64], dy: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>) {
    let c = w.len();
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; c];
    for r in 0..x.len() / c {
        let row = &x[r * c..(r + 1) * c];
        let ms: f64 = row.iter().map(|v| v * v).sum::<f64>() / c as f64;
        let s = (ms + eps).sqrt();
        for i in 0..c {
            dw[i] += dy[r * c + i] * row[i] / s;
            // d y_j / d x_i = w_j (delta_ij / s - x_j x_i / (c s^3))
            for j in 0..c {
                let delta = if i == j { 1.0 } else { 0.0 };
                dx[r * c + i] +=
                    dy[r * c + j] * w[j] * (delta / s - row[j] * row[i] / (c as f64 * s * s * s));
            }
        }
    }
    (dx, dw)
}

/// RoPE on x [N, H, D] at positions [N] (HF rotate_half); `inverse` rotates back.
pub fn rope(x: &[f64], pos: &[usize], h: usize, d: usize, theta: f64, inverse: bool) -> Vec<f64> {
    let half = d / 2;
    let mut y = vec![0.0; x.len()];
    for (n, &p) in pos.iter().enumerate() {
        for hh in 0..h {
            let base = (n * h + hh) * d;
            for i in 0..half {
                let angle = p as f64 / theta.powf(2.0 * i as f64 / d as f64);
                let (s, c) = angle.sin_cos();
                let s = if inverse { -s } else { s };
                let (a, b) = (x[base + i], x[base + i + half]);
                y[base + i] = a * c - b * s;
                y[base + i + half] = b * c + a * s;
            }
        }
    }
    y
}

/// silu(g) * u and its gradients (dg, du).
pub fn swiglu(g: &[f64], u: &[f64]) -> Vec<f64> {
    g.iter().zip(u).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect()
}
pub fn swiglu_grad(g: &[f64], u: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut dg = vec![0.0; g.len()];
    let mut du = vec![0.0; g.len()];
    for i in 0..g.len() {
        let s = 1.0 / (1.0 + (-g[i]).exp());
        du[i] = dy[i] * g[i] * s;
        dg[i] = dy[i] * u[i] * (s + g[i] * s * (1.0 - s));
    }
    (dg, du)
}

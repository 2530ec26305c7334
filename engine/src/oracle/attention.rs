//! Oracle attention: the full T x T score matrix per (batch, head), an explicit mask, a
//! softmax, and the textbook backward through it. Shapes as in ops::attention.

use crate::ops::attention::AttnGeom;

fn probs(q: &[f64], k: &[f64], g: &AttnGeom, b: usize, h: usize) -> Vec<f64> {
    let (t, d) = (g.t, g.d);
    let kvh = h / (g.h / g.hkv);
    let mut p = vec![0.0; t * t];
    for i in 0..t {
        let mut row = vec![f64::NEG_INFINITY; t];
        for j in 0..t {
            if g.visible(b, i, j) {
                let mut s = 0.0;
                for e in 0..d {
                    s += q[((b * t + i) * g.h + h) * d + e] * k[((b * t + j) * g.hkv + kvh) * d + e];
                }
                row[j] = s / (d as f64).sqrt();
            }
        }
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
        for j in 0..t {
            p[i * t + j] = (row[j] - m).exp() / z;
        }
    }
    p
}

/// out [B, T, H, D].
pub fn attention_fwd(q: &[f64], k: &[f64], v: &[f64], g: &AttnGeom) -> Vec<f64> {
    let (t, d) = (g.t, g.d);
    let mut out = vec![0.0; q.len()];
    for b in 0..g.b {
        for h in 0..g.h {
            let kvh = h / (g.h / g.hkv);
            let p = probs(q, k, g, b, h);
            for i in 0..t {
                for j in 0..t {
                    for e in 0..d {
                        out[((b * t + i) * g.h + h) * d + e] +=
                            p[i * t + j] * v[((b * t + j) * g.hkv + kvh) * d + e];
                    }
                }
            }
        }
    }
    out
}

/// (dq, dk, dv) through the full softmax.
pub fn attention_bwd(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dout: &[f64],
    g: &AttnGeom,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (t, d) = (g.t, g.d);
    let scale = 1.0 / (d as f64).sqrt();
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    for b in 0..g.b {
        for h in 0..g.h {
            let kvh = h / (g.h / g.hkv);
            let p = probs(q, k, g, b, h);
            let qi = |i: usize, e: usize| ((b * t + i) * g.h + h) * d + e;
            let kj = |j: usize, e: usize| ((b * t + j) * g.hkv + kvh) * d + e;
            // dP = dO V^T; dS_ij = P_ij (dP_ij - sum_l P_il dP_il)
            let mut dp = vec![0.0; t * t];
            for i in 0..t {
                for j in 0..t {
                    for e in 0..d {
                        dp[i * t + j] += dout[qi(i, e)] * v[kj(j, e)];
                    }
                }
            }
            for i in 0..t {
                let row_dot: f64 = (0..t).map(|l| p[i * t + l] * dp[i * t + l]).sum();
                for j in 0..t {
                    let ds = p[i * t + j] * (dp[i * t + j] - row_dot);
                    for e in 0..d {
                        dq[qi(i, e)] += ds * scale * k[kj(j, e)];
                        dk[kj(j, e)] += ds * scale * q[qi(i, e)];
                        dv[kj(j, e)] += p[i * t + j] * dout[qi(i, e)];
                    }
                }
            }
        }
    }
    (dq, dk, dv)
}

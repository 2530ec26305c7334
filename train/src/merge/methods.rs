//! The per-tensor math of each merge method, on flat f32 slices, written to agree with mergekit
//! (merge_methods/linear.py, slerp.py, generalized_task_arithmetic.py, sparsify.py). Sums run
//! in f64 so the result does not depend on how many models are merged or in which order beyond
//! the last f32 rounding.
//!
//! Randomness (DARE's drops) comes from `dare_rng`, seeded by the run's seed, the tensor name and
//! the model's position, so a tensor's mask does not depend on which tensors came before it.

use solar_engine::Rng;

/// mergekit's SLERP: below this |cos| the tensors are far enough from parallel for the sine
/// formula; above it they are treated as parallel and lerped.
pub const SLERP_DOT_THRESHOLD: f64 = 0.9995;
const SLERP_EPS: f64 = 1e-8;
/// mergekit's guard for a near-zero L1 norm when rescaling (sparsify.rescaled_masked_tensor).
const RESCALE_EPS: f64 = 1e-7;

/// sum_i w_i x_i, divided by sum_i w_i when `normalize` (mergekit's linear).
pub fn linear(inputs: &[&[f32]], weights: &[f64], normalize: bool) -> Vec<f32> {
    let n = inputs.first().map_or(0, |x| x.len());
    let total: f64 = weights.iter().sum();
    let scale = if normalize { 1.0 / total } else { 1.0 };
    (0..n)
        .map(|e| {
            let s: f64 = inputs.iter().zip(weights).map(|(x, w)| w * x[e] as f64).sum();
            (s * scale) as f32
        })
        .collect()
}

/// Spherical interpolation of two flattened tensors: directions from normalized copies, the
/// sine weights applied to the unnormalized tensors; plain lerp when |cos| > 0.9995. t = 0 is `a`.
pub fn slerp(t: f64, a: &[f32], b: &[f32]) -> Vec<f32> {
    let norm = |v: &[f32]| v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    // mergekit only divides by a norm above eps; a zero tensor keeps its (zero) direction.
    let (na, nb) = (norm(a), norm(b));
    let (ia, ib) = (if na > SLERP_EPS { 1.0 / na } else { 1.0 }, if nb > SLERP_EPS { 1.0 / nb } else { 1.0 });
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 * ia) * (y as f64 * ib)).sum();
    let (s0, s1) = if dot.abs() > SLERP_DOT_THRESHOLD {
        (1.0 - t, t)
    } else {
        let theta0 = dot.acos();
        let sin0 = theta0.sin();
        let theta_t = theta0 * t;
        ((theta0 - theta_t).sin() / sin0, theta_t.sin() / sin0)
    };
    a.iter().zip(b).map(|(&x, &y)| (s0 * x as f64 + s1 * y as f64) as f32).collect()
}

/// How many entries TIES keeps: mergekit's int(density * numel).
pub fn kept_count(density: f64, n: usize) -> usize {
    (density * n as f64) as usize
}

/// TIES' trim: zeroes all but the `k` largest magnitudes. Equal magnitudes at the cut keep the
/// earlier index, so the result is deterministic.
pub fn keep_top_magnitude(delta: &mut [f32], k: usize) {
    if k >= delta.len() {
        return;
    }
    if k == 0 {
        delta.fill(0.0);
        return;
    }
    let mut mags: Vec<f32> = delta.iter().map(|x| x.abs()).collect();
    let (_, &mut cut, _) = mags.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    // Everything strictly above the cut stays; entries equal to it fill the rest in index order.
    let above = delta.iter().filter(|x| x.abs().total_cmp(&cut).is_gt()).count();
    let mut equal_left = k - above;
    for x in delta.iter_mut() {
        match x.abs().total_cmp(&cut) {
            std::cmp::Ordering::Greater => {}
            std::cmp::Ordering::Equal if equal_left > 0 => equal_left -= 1,
            _ => *x = 0.0,
        }
    }
}

/// The DARE generator for one tensor of one model (its position among the task vectors).
pub fn dare_rng(seed: u64, tensor: &str, model: usize) -> Rng {
    // FNV-1a of the name: stable across runs and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tensor.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    Rng::new(seed ^ h ^ (model as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// DARE's drop: each entry survives when a uniform draw in [0, 1) falls below `density`
/// (one draw per entry, in order).
pub fn random_drop(delta: &mut [f32], density: f64, rng: &mut Rng) {
    for x in delta.iter_mut() {
        if rng.uniform() >= density {
            *x = 0.0;
        }
    }
}

pub fn l1(v: &[f32]) -> f64 {
    v.iter().map(|x| x.abs() as f64).sum()
}

/// mergekit's rescale after sparsifying: scale the survivors back to the L1 norm `before` had
/// (the 1/density of the DARE paper, in expectation), unless either norm is about zero.
pub fn rescale_l1(kept: &mut [f32], before: f64) {
    let after = l1(kept);
    if before < RESCALE_EPS || after < RESCALE_EPS {
        return;
    }
    let s = before / after;
    kept.iter_mut().for_each(|x| *x = (*x as f64 * s) as f32);
}

/// How task vectors are combined once sparsified (mergekit's GTA task).
#[derive(Clone, Copy, Debug)]
pub struct Combine {
    /// TIES: elect a sign per entry from the weighted sum (0 counts as +) and keep only the
    /// weighted deltas of that sign.
    pub elect_sign: bool,
    /// Divide by the sum of weights (of the agreeing entries, with a sign election).
    pub normalize: bool,
    pub lambda: f64,
}

/// base + lambda * merge(weighted deltas), entry by entry.
pub fn combine(base: &[f32], deltas: &[Vec<f32>], weights: &[f64], how: Combine) -> Vec<f32> {
    let total: f64 = weights.iter().sum();
    let plain_divisor = if total.abs() < 1e-8 { 1.0 } else { total };
    (0..base.len())
        .map(|e| {
            let mut sum = 0.0f64;
            let mut divisor = plain_divisor;
            if how.elect_sign {
                let elected = deltas.iter().zip(weights).map(|(d, w)| d[e] as f64 * w).sum::<f64>();
                let sign = if elected >= 0.0 { 1.0 } else { -1.0 };
                let mut agreeing = 0.0f64;
                for (d, w) in deltas.iter().zip(weights) {
                    let wd = d[e] as f64 * w;
                    // An entry of zero has sign 0, which agrees with neither side.
                    if wd != 0.0 && wd.signum() == sign {
                        sum += wd;
                        agreeing += w;
                    }
                }
                divisor = if agreeing == 0.0 { 1.0 } else { agreeing };
            } else {
                sum = deltas.iter().zip(weights).map(|(d, w)| d[e] as f64 * w).sum();
            }
            let merged = if how.normalize { sum / divisor } else { sum };
            (base[e] as f64 + how.lambda * merged) as f32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slerp_ends_and_parallel_tensors() {
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 2.0]);
        assert_eq!(slerp(0.0, &a, &b), vec![1.0, 0.0]);
        let mid = slerp(0.5, &a, &b);
        let s = std::f64::consts::FRAC_PI_4.sin() / std::f64::consts::FRAC_PI_2.sin();
        assert!((mid[0] as f64 - s).abs() < 1e-6 && (mid[1] as f64 - 2.0 * s).abs() < 1e-6);
        assert_eq!(slerp(0.25, &[2.0, 2.0], &[4.0, 4.0]), vec![2.5, 2.5]);
    }

    #[test]
    fn top_magnitude_keeps_k_and_breaks_ties_by_index() {
        let mut d = [0.5f32, -3.0, 1.0, -1.0, 2.0];
        keep_top_magnitude(&mut d, 3);
        assert_eq!(d, [0.0, -3.0, 1.0, 0.0, 2.0]);
    }

    #[test]
    fn ties_elects_plus_on_zero_and_divides_by_agreeing_weights() {
        let base = [0.0f32; 3];
        let deltas = vec![vec![1.0f32, 2.0, -1.0], vec![-1.0, -1.0, 0.0]];
        let how = Combine { elect_sign: true, normalize: true, lambda: 1.0 };
        // entry 0: 1 - 1 = 0 -> +; only model 0 agrees. entry 1: + wins. entry 2: - (model 1 is 0).
        assert_eq!(combine(&base, &deltas, &[1.0, 1.0], how), vec![1.0, 2.0, -1.0]);
    }
}

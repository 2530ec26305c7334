//! The paper's claims judged with their uncertainty. Every accuracy is k of n held-out
//! examples and carries a 95% Wilson score interval (right near 0 and 1, where the normal
//! approximation is not); the held-out loss comparison uses the mean of per-document paired
//! differences with a normal 95% interval. A claim "holds" when the intervals separate in
//! its favour, "does not hold" when they separate against it, and is "not resolved at this
//! size" when they overlap: a run this small cannot say more, and the report must not either.

use super::report::Row;
use crate::eval::dpo::DpoEval;
use serde::Serialize;

/// z of a two-sided 95% interval.
const Z: f64 = 1.959_963_984_540_054;

/// A proportion k/n with its 95% interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Interval {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

/// The Wilson score interval of `k` successes in `n` trials (n = 0: the whole [0, 1]).
pub fn wilson(k: usize, n: usize) -> Interval {
    if n == 0 {
        return Interval { value: f64::NAN, lo: 0.0, hi: 1.0, n };
    }
    let (nf, p) = (n as f64, k.min(n) as f64 / n as f64);
    let z2 = Z * Z;
    let centre = (p + z2 / (2.0 * nf)) / (1.0 + z2 / nf);
    let half = Z / (1.0 + z2 / nf) * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    Interval { value: p, lo: (centre - half).max(0.0), hi: (centre + half).min(1.0), n }
}

/// The interval of an accuracy `acc` measured on `n` examples (k recovered by rounding).
pub fn accuracy_interval(acc: f64, n: usize) -> Interval {
    wilson((acc * n as f64).round().max(0.0) as usize, n)
}

/// The mean of `d` with a normal 95% interval (its standard error from the sample).
pub fn mean_interval(d: &[f64]) -> Interval {
    let n = d.len();
    let mean = d.iter().sum::<f64>() / n.max(1) as f64;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n.max(2) - 1) as f64;
    let half = Z * (var / n.max(1) as f64).sqrt();
    Interval { value: mean, lo: mean - half, hi: mean + half, n }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Holds,
    DoesNotHold,
    NotResolved,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::DoesNotHold => "does not hold",
            Verdict::NotResolved => "not resolved at this size",
        }
    }
}

/// Whether `a` is above `b`: holds when a's interval lies wholly above b's, does not hold
/// when wholly below, not resolved when they overlap.
pub fn above(a: &Interval, b: &Interval) -> Verdict {
    if a.lo > b.hi {
        Verdict::Holds
    } else if a.hi < b.lo {
        Verdict::DoesNotHold
    } else {
        Verdict::NotResolved
    }
}

/// A claim of the paper, in miniature, and what this run says of it.
#[derive(Clone, Debug)]
pub struct Claim {
    pub claim: String,
    pub verdict: Verdict,
    pub numbers: String,
}

fn show(i: &Interval) -> String {
    format!("{:.3} [{:.3}, {:.3}]", i.value, i.lo, i.hi)
}

fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter().find(|r| r.stage == name).expect("every stage is evaluated")
}

/// Exact match over both tasks pooled: the two tasks' examples together.
pub fn pooled_em(r: &Row) -> Interval {
    let (a, b) = (r.interval("add_em"), r.interval("reverse_em"));
    let k = (a.value * a.n as f64).round() + (b.value * b.n as f64).round();
    wilson(k as usize, a.n + b.n)
}

/// The paper's claims against this run's numbers. `dpo` is the DPO model against its SFT
/// reference on held-out pairs.
pub fn check_claims(rows: &[Row], dpo: &DpoEval) -> Vec<Claim> {
    let (up, base) = (row(rows, "upscaled_pretrained"), row(rows, "base_pretrained"));
    let diffs: Vec<f64> = up.doc_losses.iter().zip(&base.doc_losses).map(|(u, b)| u - b).collect();
    let d = mean_interval(&diffs);
    let loss_verdict = above(&Interval { value: 0.0, lo: 0.0, hi: 0.0, n: 0 }, &d);

    let pre = [pooled_em(base), pooled_em(up)];
    let pre_best = if pre[1].value > pre[0].value { pre[1] } else { pre[0] };
    let sft = pooled_em(row(rows, "sft_both"));

    let dpo_em = pooled_em(row(rows, "dpo"));
    let reward = accuracy_interval(dpo.rewards_accuracies, dpo.pairs);
    let chance = Interval { value: 0.5, lo: 0.5, hi: 0.5, n: 0 };
    let dpo_verdict = match (above(&reward, &chance), above(&sft, &dpo_em)) {
        (_, Verdict::Holds) | (Verdict::DoesNotHold, _) => Verdict::DoesNotHold,
        (Verdict::Holds, _) => Verdict::Holds,
        _ => Verdict::NotResolved,
    };

    let (add, rev) = (pooled_em(row(rows, "sft_add")), pooled_em(row(rows, "sft_reverse")));
    let best = if add.value >= rev.value { add } else { rev };
    let avg = pooled_em(row(rows, "merge_average"));
    vec![
        Claim {
            claim: "Depth up-scaling then continued pretraining ends below the base trained as long (held-out loss)."
                .into(),
            verdict: loss_verdict,
            numbers: format!(
                "up-scaled {:.4} vs base {:.4}; per-document difference {:.4} [{:.4}, {:.4}] over {} documents",
                up.get("heldout_loss"),
                base.get("heldout_loss"),
                d.value,
                d.lo,
                d.hi,
                d.n
            ),
        },
        Claim {
            claim: "SFT raises task accuracy over the pretrained models (exact match, both tasks pooled).".into(),
            verdict: above(&sft, &pre_best),
            numbers: format!("after SFT {} vs the better pretrained model {} (n = {})", show(&sft), show(&pre_best), sft.n),
        },
        Claim {
            claim: "DPO raises reward accuracy on held-out pairs above chance without a measurable drop in task accuracy."
                .into(),
            verdict: dpo_verdict,
            numbers: format!(
                "rewards/accuracies against the SFT model {} over {} pairs (the SFT model against itself: 0); \
                 exact match {} -> {}",
                show(&reward),
                reward.n,
                show(&sft),
                show(&dpo_em)
            ),
        },
        Claim {
            claim: "Averaging two specialists beats the better specialist over both tasks (exact match, pooled).".into(),
            verdict: above(&avg, &best),
            numbers: format!(
                "average {} vs specialists {} (add) and {} (reverse)",
                show(&avg),
                show(&add),
                show(&rev)
            ),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_published_values() {
        // Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662; 0/10 -> 0 to 0.2775.
        let i = wilson(81, 263);
        assert!((i.lo - 0.2553).abs() < 5e-4 && (i.hi - 0.3662).abs() < 5e-4, "{i:?}");
        let z = wilson(0, 10);
        assert!(z.lo == 0.0 && (z.hi - 0.2775).abs() < 5e-4, "{z:?}");
    }

    #[test]
    fn verdicts_follow_separation() {
        let (a, b) = (wilson(150, 200), wilson(100, 200));
        assert_eq!(above(&a, &b), Verdict::Holds);
        assert_eq!(above(&b, &a), Verdict::DoesNotHold);
        assert_eq!(above(&wilson(105, 200), &b), Verdict::NotResolved);
    }
}

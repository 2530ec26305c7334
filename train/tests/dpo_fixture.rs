//! DPO against the TRL formulas computed in torch (scripts/make_fixtures.py, tests/fixtures/hf/dpo):
//! a random policy and a different reference, five pairs of differing prompt and completion
//! lengths, and for sigmoid (beta 0.1 and 0.5, label smoothing 0 and 0.1), IPO and hinge the
//! per-pair losses and the mean metrics TRL logs, plus the gradient of one variant's mean loss.
//!
//! Tolerances: both sides sum f32 log-probs over up to 7 tokens of |logp| <= 41, so each log-prob
//! carries about 1e-6 relative rounding; the formulas then run in f64. Log-probs, rewards,
//! margins and mean losses agree to 1e-5 relative (plus 1e-6 absolute for values near 0, such as
//! a hinge loss of 0.06 left after 1 - beta h cancels); accuracies exactly. Gradients pass through
//! a whole backward in f32, held like the model's own HF gradient test: 1e-4 of each tensor's
//! largest entry.

mod dpo_common;

use dpo_common::{assert_close, fixture, fixture_pairs, floats, reference_json};
use serde_json::Value;
use solar_engine::{ops, Tape};
use solar_model::Llama;
use solar_train::data::rows::PairRow;
use solar_train::dpo::{dpo_loss_sum, reference_logps, DpoConfig, DpoLoss, RefLogps};
use solar_train::eval::dpo::eval_dpo;

struct Fixture {
    policy: Llama,
    reference: Llama,
    pairs: Vec<PairRow>,
    r: Value,
}

fn load() -> Fixture {
    let r = reference_json("dpo");
    Fixture {
        policy: Llama::load(&fixture("dpo/policy")).unwrap(),
        reference: Llama::load(&fixture("dpo/reference")).unwrap(),
        pairs: fixture_pairs(&r),
        r,
    }
}

fn config_of(v: &Value) -> DpoConfig {
    DpoConfig {
        beta: v["beta"].as_f64().unwrap(),
        loss: v["loss_type"].as_str().unwrap().parse().unwrap(),
        label_smoothing: v["label_smoothing"].as_f64().unwrap(),
    }
}

#[test]
fn reference_logps_match_torch_at_any_batch_size() {
    let f = load();
    let want_c = floats(&f.r["logps"]["reference/chosen"]);
    let want_r = floats(&f.r["logps"]["reference/rejected"]);
    // Batch 1 pads nothing; 2 and 5 pad rows of different lengths together.
    for batch in [1, 2, 5] {
        let refs = reference_logps(&f.reference, &f.pairs, batch).unwrap();
        assert_eq!(refs.len(), 5);
        for (i, r) in refs.iter().enumerate() {
            assert_close(&format!("batch {batch} pair {i} chosen"), r.chosen, want_c[i], 0.0, 1e-5);
            assert_close(&format!("batch {batch} pair {i} rejected"), r.rejected, want_r[i], 0.0, 1e-5);
        }
    }
    // Policy log-probs through the same path.
    let pol = reference_logps(&f.policy, &f.pairs, 5).unwrap();
    for (i, p) in pol.iter().enumerate() {
        assert_close("policy chosen", p.chosen, floats(&f.r["logps"]["policy/chosen"])[i], 0.0, 1e-5);
        assert_close("policy rejected", p.rejected, floats(&f.r["logps"]["policy/rejected"])[i], 0.0, 1e-5);
    }
}

#[test]
fn every_variant_matches_trl_losses_and_metrics() {
    let f = load();
    let refs = reference_logps(&f.reference, &f.pairs, 2).unwrap();
    let variants = f.r["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 8);
    for v in variants {
        let cfg = config_of(v);
        let name = format!("{:?} beta {} e {}", cfg.loss, cfg.beta, cfg.label_smoothing);
        let want = &v["metrics"];
        // Pair by pair: each per-pair loss is the micro-batch sum of a single pair.
        for (i, want_loss) in floats(&v["losses"]).into_iter().enumerate() {
            let tape = Tape::new();
            let (loss, sums) = dpo_loss_sum(&f.policy, &tape, &[&f.pairs[i]], &[&refs[i]], &cfg).unwrap();
            assert_close(&format!("{name}: pair {i} loss"), loss.to_scalar().unwrap(), want_loss, 1e-6, 1e-5);
            assert_eq!(sums.count, 1);
        }
        // All pairs in two micro-batches (3 + 2), summed as a trainer would.
        let mut total = solar_train::dpo::DpoSums::default();
        let mut loss_sum = 0.0;
        for (chunk, rchunk) in f.pairs.chunks(3).zip(refs.chunks(3)) {
            let tape = Tape::new();
            let p: Vec<&PairRow> = chunk.iter().collect();
            let r: Vec<&RefLogps> = rchunk.iter().collect();
            let (loss, sums) = dpo_loss_sum(&f.policy, &tape, &p, &r, &cfg).unwrap();
            loss_sum += loss.to_scalar().unwrap();
            total.add(&sums);
        }
        assert_eq!(total.count, 5);
        let means = total.means();
        assert_close(
            &format!("{name}: loss tensor"),
            loss_sum / 5.0,
            want["loss"].as_f64().unwrap(),
            1e-6,
            1e-5,
        );
        for key in [
            "loss",
            "rewards/chosen",
            "rewards/rejected",
            "rewards/margins",
            "logps/chosen",
            "logps/rejected",
        ] {
            assert_close(&format!("{name}: {key}"), means[key], want[key].as_f64().unwrap(), 1e-6, 1e-5);
        }
        assert_eq!(
            means["rewards/accuracies"],
            want["rewards/accuracies"].as_f64().unwrap(),
            "{name}: accuracies"
        );
        // eval_dpo gives the same means through its own batching, with no tape.
        let e = eval_dpo(&f.policy, &f.reference, &f.pairs, &cfg, 4).unwrap();
        assert_eq!(e.pairs, 5);
        assert_close(&format!("{name}: eval loss"), e.loss, want["loss"].as_f64().unwrap(), 1e-6, 1e-5);
        assert_close(
            &format!("{name}: eval margins"),
            e.rewards_margins,
            want["rewards/margins"].as_f64().unwrap(),
            1e-6,
            1e-5,
        );
        assert_eq!(e.rewards_accuracies, want["rewards/accuracies"].as_f64().unwrap());
    }
}

#[test]
fn gradient_of_the_mean_loss_matches_torch() {
    let f = load();
    let v = &f.r["variants"][f.r["grad_variant"].as_u64().unwrap() as usize];
    let cfg = config_of(v);
    assert_eq!((cfg.loss, cfg.label_smoothing), (DpoLoss::Sigmoid, 0.1));
    let refs = reference_logps(&f.reference, &f.pairs, 5).unwrap();
    let tape = Tape::new();
    let p: Vec<&PairRow> = f.pairs.iter().collect();
    let r: Vec<&RefLogps> = refs.iter().collect();
    let (loss_sum, _) = dpo_loss_sum(&f.policy, &tape, &p, &r, &cfg).unwrap();
    let grads = tape.backward(&ops::scale(&loss_sum, 1.0 / 5.0).unwrap()).unwrap();
    let want = Llama::load(&fixture("dpo/policy_grad")).unwrap();
    let mut checked = 0;
    for (name, param) in f.policy.named_params() {
        let got = grads.get(param).unwrap_or_else(|| panic!("no gradient for {name}")).to_vec_f64().unwrap();
        let w = want.param(name).unwrap().to_vec_f64().unwrap();
        let scale = w.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "{name}: torch's gradient is all zero");
        for (i, (g, x)) in got.iter().zip(&w).enumerate() {
            assert!((g - x).abs() <= 1e-4 * scale, "{name}[{i}]: got {g}, want {x} (scale {scale})");
        }
        checked += 1;
    }
    assert_eq!(checked, 21);
}

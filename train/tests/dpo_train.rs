//! A short DPO run learns its preferences: a tiny random policy, a frozen copy as the reference
//! (as after SFT), and pairs whose rejected answer is the chosen one with a token corrupted.
//! 30 full-batch AdamW steps on the mean sigmoid loss must lower the loss and rank the chosen
//! answer above the rejected one on at least 3 of 4 pairs (TRL's rewards/accuracies >= 0.75).

mod dpo_common;

use dpo_common::{corrupted_pairs, tiny_model};
use solar_engine::optim::{AdamW, AdamWConfig};
use solar_engine::{ops, Tape};
use solar_model::names::is_norm;
use solar_model::Llama;
use solar_train::data::rows::PairRow;
use solar_train::dpo::{dpo_loss_sum, reference_logps, DpoConfig, DpoLoss, RefLogps};
use solar_train::eval::dpo::eval_dpo;

/// One full-batch step on the mean loss; returns the loss before the step.
fn step(policy: &mut Llama, opt: &mut AdamW, pairs: &[PairRow], refs: &[RefLogps], cfg: &DpoConfig) -> f64 {
    let tape = Tape::new();
    let p: Vec<&PairRow> = pairs.iter().collect();
    let r: Vec<&RefLogps> = refs.iter().collect();
    let (sum, sums) = dpo_loss_sum(policy, &tape, &p, &r, cfg).unwrap();
    let grads = tape.backward(&ops::scale(&sum, 1.0 / sums.count as f64).unwrap()).unwrap();
    opt.begin_step();
    for (name, param) in policy.named_params_mut() {
        if let Some(g) = grads.get_id(param.id()) {
            let g = g.clone();
            opt.update(param, &g, !is_norm(name), 5e-3).unwrap();
        }
    }
    sum.to_scalar().unwrap() / sums.count as f64
}

fn run(cfg: DpoConfig) {
    let reference = tiny_model(21);
    let mut policy = tiny_model(21);
    let pairs = corrupted_pairs();
    let refs = reference_logps(&reference, &pairs, 4).unwrap();
    let before = eval_dpo(&policy, &reference, &pairs, &cfg, 2).unwrap();
    assert_eq!(before.rewards_accuracies, 0.0, "the policy starts as the reference: no margin yet");
    let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.0, ..Default::default() });
    let losses: Vec<f64> = (0..30).map(|_| step(&mut policy, &mut opt, &pairs, &refs, &cfg)).collect();
    let after = eval_dpo(&policy, &reference, &pairs, &cfg, 2).unwrap();
    assert!(after.loss < 0.8 * losses[0], "{cfg:?}: loss {} -> {}", losses[0], after.loss);
    assert!(after.rewards_accuracies >= 0.75, "{cfg:?}: accuracies {}", after.rewards_accuracies);
    assert!(after.rewards_margins > 0.0 && after.rewards_chosen > after.rewards_rejected, "{after:?}");
}

#[test]
fn sigmoid_dpo_learns_the_preferences() {
    run(DpoConfig::default());
}

#[test]
fn ipo_and_hinge_learn_them_too() {
    run(DpoConfig { loss: DpoLoss::Ipo, beta: 0.5, ..Default::default() });
    run(DpoConfig { loss: DpoLoss::Hinge, ..Default::default() });
}

//! DPO with LoRA learns its preferences with the base frozen: the reference is the policy with
//! its adapters switched off (its log-probs equal the plain base's bitwise, so no second model is
//! needed), 30 full-batch AdamW steps on the adapters alone lower the loss and rank the chosen
//! answer above the rejected one on at least 3 of 4 pairs, and the base weights end bitwise as
//! they started.

mod dpo_common;

use dpo_common::{corrupted_pairs, tiny_model};
use solar_engine::optim::{AdamW, AdamWConfig};
use solar_engine::{ops, Tape};
use solar_model::lora::{Lora, LoraSpec, ALL_TARGETS};
use solar_train::data::rows::PairRow;
use solar_train::dpo::{dpo_loss_sum, reference_logps, DpoConfig, RefLogps};
use solar_train::eval::dpo::eval_dpo;

#[test]
fn lora_dpo_against_the_adapters_off_base_learns_and_leaves_the_base_alone() {
    let spec = LoraSpec { r: 4, alpha: 8.0, dropout: 0.0, targets: ALL_TARGETS.to_vec(), rslora: false };
    let base = tiny_model(21);
    let mut policy = tiny_model(21);
    let lora = Lora::init(spec, &policy.config, 3).unwrap();
    policy = policy.with_lora(lora).unwrap();
    let pairs = corrupted_pairs();

    policy.lora_mut().unwrap().set_enabled(false);
    let refs = reference_logps(&policy, &pairs, 4).unwrap();
    policy.lora_mut().unwrap().set_enabled(true);
    let plain = reference_logps(&base, &pairs, 4).unwrap();
    for (a, b) in refs.iter().zip(&plain) {
        assert_eq!((a.chosen.to_bits(), a.rejected.to_bits()), (b.chosen.to_bits(), b.rejected.to_bits()));
    }

    let cfg = DpoConfig::default();
    let mut opt = AdamW::new(AdamWConfig { weight_decay: 0.0, ..Default::default() });
    let mut losses = Vec::new();
    for _ in 0..30 {
        let tape = Tape::new();
        let p: Vec<&PairRow> = pairs.iter().collect();
        let r: Vec<&RefLogps> = refs.iter().collect();
        let (sum, sums) = dpo_loss_sum(&policy, &tape, &p, &r, &cfg).unwrap();
        let grads = tape.backward(&ops::scale(&sum, 1.0 / sums.count as f64).unwrap()).unwrap();
        for (name, w) in policy.named_params() {
            assert!(grads.get(w).is_none(), "frozen {name} got a gradient");
        }
        opt.begin_step();
        for (_, param) in policy.trainable_params_mut() {
            let g = grads.get_id(param.id()).expect("every adapter has a gradient").clone();
            opt.update(param, &g, true, 1e-2).unwrap();
        }
        losses.push(sum.to_scalar().unwrap() / sums.count as f64);
    }
    // B = 0: the policy starts as the reference (up to the rounding of another batch layout).
    assert!((losses[0] - std::f64::consts::LN_2).abs() < 1e-6, "first loss {}", losses[0]);
    let after = eval_dpo(&policy, &base, &pairs, &cfg, 2).unwrap();
    assert!(after.loss < 0.8 * losses[0], "loss {} -> {}", losses[0], after.loss);
    assert!(after.rewards_accuracies >= 0.75, "accuracies {}", after.rewards_accuracies);
    for ((name, a), (_, b)) in policy.named_params().zip(base.named_params()) {
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap(), "{name} moved");
    }
}

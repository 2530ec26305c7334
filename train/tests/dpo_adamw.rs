//! The optimizer DPO (and every trainer) steps with, against torch.optim.AdamW: five full-batch
//! steps on a small Llama from tests/fixtures/hf/adamw (lr 1e-2, betas (0.9, 0.95), eps 1e-8,
//! weight decay 0.1 on matrices and embeddings, none on norms; no clipping, no schedule). The
//! loss before each step and the final weights must match.
//!
//! Tolerances: the losses are f32 cross-entropies of near-identical weights: 1e-5 relative
//! (measured: 2e-7). Final weights: AdamW's step is lr * m / (sqrt(v) + eps), near lr * sign(g)
//! in the first steps, so f32 rounding in a gradient barely moves it unless |g| is near eps.
//! Five steps move weights by up to 5e-2; the two sides agree to 8e-7 (measured, worst tensor),
//! held to 5e-6 absolute. The mistakes worth catching are far larger: decay on the wrong
//! group shifts a weight by about 5 * lr * wd * |p| = 1e-3, a wrong bias correction by ~1e-3.

mod dpo_common;

use dpo_common::{assert_close, fixture, floats, ints, reference_json};
use solar_engine::ops::IGNORE_INDEX;
use solar_engine::optim::{AdamW, AdamWConfig};
use solar_engine::{ops, Tape, Tensor};
use solar_model::names::is_norm;
use solar_model::{Llama, ModelInput};

#[test]
fn five_adamw_steps_match_torch() {
    let r = reference_json("adamw");
    let mut model = Llama::load(&fixture("adamw/initial")).unwrap();
    let ids: Vec<Vec<i64>> = r["input_ids"].as_array().unwrap().iter().map(ints).collect();
    let labels: Vec<Vec<i64>> = r["labels"].as_array().unwrap().iter().map(ints).collect();
    let (b, t) = (ids.len(), ids[0].len());
    let flat: Vec<u32> = ids.iter().flatten().map(|&x| x as u32).collect();
    let input = ModelInput::rows(&flat, b, t).unwrap();
    // transformers shifts labels inside the model: position t predicts labels[t + 1].
    let targets: Vec<i32> = labels
        .iter()
        .flat_map(|row| (0..t).map(move |i| if i + 1 < t { row[i + 1] as i32 } else { IGNORE_INDEX as i32 }))
        .collect();
    let targets = Tensor::from_vec(targets, [b, t]).unwrap();
    let betas = floats(&r["betas"]);
    let cfg = AdamWConfig {
        beta1: betas[0],
        beta2: betas[1],
        eps: r["eps"].as_f64().unwrap(),
        weight_decay: r["weight_decay"].as_f64().unwrap(),
    };
    let lr = r["lr"].as_f64().unwrap();
    let mut opt = AdamW::new(cfg);
    let want_losses = floats(&r["losses"]);
    assert_eq!(want_losses.len(), 5);
    for (step, want) in want_losses.iter().enumerate() {
        let tape = Tape::new();
        let ce = model.loss(Some(&tape), &input, &targets).unwrap();
        let loss = ops::scale(&ce.loss_sum, 1.0 / ce.count as f64).unwrap();
        assert_close(&format!("loss before step {}", step + 1), loss.to_scalar().unwrap(), *want, 0.0, 1e-5);
        let grads = tape.backward(&loss).unwrap();
        opt.begin_step();
        for (name, p) in model.named_params_mut() {
            let g = grads.get_id(p.id()).unwrap_or_else(|| panic!("no gradient for {name}")).clone();
            // torch's groups: decay on tensors of 2+ dims, none on the 1-dim norm weights.
            assert_eq!(is_norm(name), p.rank() == 1, "{name}");
            opt.update(p, &g, !is_norm(name), lr).unwrap();
        }
    }
    let want = Llama::load(&fixture("adamw/final")).unwrap();
    let initial = Llama::load(&fixture("adamw/initial")).unwrap();
    for (name, p) in model.named_params() {
        let got = p.to_vec_f64().unwrap();
        let w = want.param(name).unwrap().to_vec_f64().unwrap();
        let start = initial.param(name).unwrap().to_vec_f64().unwrap();
        let worst = got.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let moved = w.iter().zip(&start).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(moved > 1e-3, "{name}: torch barely moved it ({moved}), the check would be empty");
        assert!(
            worst <= 5e-6,
            "{name}: worst |solar - torch| = {worst:e} (torch moved it by up to {moved:e})"
        );
    }
}

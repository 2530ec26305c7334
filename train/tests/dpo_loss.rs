//! The DPO loss on its own: the values it must take when the policy is the reference (sigmoid
//! ln 2, IPO 1/(4 beta^2), hinge 1, every reward 0), its gradient against central finite
//! differences (the loss head in f64; through an f32 model for a few parameters with a loose
//! tolerance), stability for large log-ratios, and the errors bad settings and inputs give.

mod dpo_common;

use dpo_common::{assert_close, pair, tiny_model};
use solar_engine::{ops, DType, Rng, Tape, Tensor};
use solar_model::Llama;
use solar_train::data::rows::PairRow;
use solar_train::dpo::{dpo_loss_sum, dpo_pair_losses, reference_logps, DpoConfig, DpoLoss, RefLogps};
use solar_train::eval::dpo::eval_dpo;

fn pairs() -> Vec<PairRow> {
    vec![
        pair(&[1, 5, 9], &[10, 11, 12], &[10, 13, 12]),
        pair(&[1, 7], &[20, 21, 22, 23, 24], &[30]),
        pair(&[1, 4, 4, 6], &[8, 9], &[40, 41, 42]),
    ]
}

fn all_variants() -> Vec<DpoConfig> {
    let c = |loss, beta, label_smoothing| DpoConfig { beta, loss, label_smoothing };
    vec![
        c(DpoLoss::Sigmoid, 0.1, 0.0),
        c(DpoLoss::Sigmoid, 0.5, 0.2),
        c(DpoLoss::Ipo, 0.1, 0.0),
        c(DpoLoss::Ipo, 0.7, 0.0),
        c(DpoLoss::Hinge, 0.1, 0.0),
        c(DpoLoss::Hinge, 0.3, 0.0),
    ]
}

fn loss_and_sums(
    model: &Llama,
    pairs: &[PairRow],
    refs: &[RefLogps],
    cfg: &DpoConfig,
) -> (f64, solar_train::dpo::DpoSums) {
    let tape = Tape::new();
    let p: Vec<&PairRow> = pairs.iter().collect();
    let r: Vec<&RefLogps> = refs.iter().collect();
    let (loss, sums) = dpo_loss_sum(model, &tape, &p, &r, cfg).unwrap();
    (loss.to_scalar().unwrap(), sums)
}

#[test]
fn policy_equal_to_reference_gives_the_loss_at_zero_margin() {
    let model = tiny_model(3);
    let pairs = pairs();
    // A different reference batch size pads differently; the log-probs must not care.
    let refs = reference_logps(&model, &pairs, 2).unwrap();
    for cfg in all_variants() {
        let want = match cfg.loss {
            DpoLoss::Sigmoid => std::f64::consts::LN_2,
            DpoLoss::Ipo => 1.0 / (4.0 * cfg.beta * cfg.beta),
            DpoLoss::Hinge => 1.0,
        };
        let (loss, sums) = loss_and_sums(&model, &pairs, &refs, &cfg);
        let m = sums.means();
        assert_close(&format!("{cfg:?}: loss sum"), loss / 3.0, want, 1e-6, 1e-6);
        assert_close(&format!("{cfg:?}: mean loss"), m["loss"], want, 1e-6, 1e-6);
        for key in ["rewards/chosen", "rewards/rejected", "rewards/margins"] {
            assert!(m[key].abs() < 1e-6, "{cfg:?}: {key} = {}", m[key]);
        }
        assert!(m["logps/chosen"] < 0.0 && m["logps/rejected"] < 0.0);
    }
}

/// Central differences of sum(r * f(x)) in f64, element by element, against the tape.
fn check_head_gradient(cfg: &DpoConfig) {
    let mut rng = Rng::new(11);
    let n = 4;
    let chosen = Tensor::randn([n], 5.0, DType::F64, &mut rng);
    let rejected = Tensor::randn([n], 5.0, DType::F64, &mut rng);
    let refs: Vec<RefLogps> =
        (0..n).map(|i| RefLogps { chosen: -3.0 - i as f64, rejected: -2.0 + 0.5 * i as f64 }).collect();
    let refs: Vec<&RefLogps> = refs.iter().collect();
    let counts = ([3, 1, 5, 2], [2, 4, 1, 3]);
    let probe = Tensor::randn([n], 1.0, DType::F64, &mut rng);
    let f = |c: &Tensor, r: &Tensor| {
        let l = dpo_pair_losses(c, r, &refs, (&counts.0, &counts.1), cfg).unwrap();
        ops::sum(&ops::mul(&l, &probe).unwrap()).unwrap()
    };
    let tape = Tape::new();
    let (wc, wr) = (tape.watch(&chosen), tape.watch(&rejected));
    let grads = tape.backward(&f(&wc, &wr)).unwrap();
    for (which, x) in [("chosen", &chosen), ("rejected", &rejected)] {
        let analytic = grads.get(x).unwrap().to_vec_f64().unwrap();
        let base = x.to_vec_f64().unwrap();
        for j in 0..n {
            let eval = |d: f64| {
                let mut v = base.clone();
                v[j] += d;
                let moved = Tensor::from_vec(v, [n]).unwrap();
                let (c, r) = if which == "chosen" { (&moved, &rejected) } else { (&chosen, &moved) };
                f(c, r).to_scalar().unwrap()
            };
            let h = 1e-6;
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            assert_close(&format!("{cfg:?}: d/d {which}[{j}]"), analytic[j], numeric, 1e-7, 1e-5);
        }
    }
}

#[test]
fn loss_head_gradient_matches_finite_differences_in_f64() {
    for cfg in all_variants() {
        check_head_gradient(&cfg);
    }
}

#[test]
fn model_gradient_matches_finite_differences_in_f32() {
    let reference = tiny_model(3);
    let mut policy = tiny_model(4);
    let pairs = pairs();
    let refs = reference_logps(&reference, &pairs, 3).unwrap();
    let cfg = DpoConfig { beta: 0.5, label_smoothing: 0.1, ..Default::default() };
    let tape = Tape::new();
    let p: Vec<&PairRow> = pairs.iter().collect();
    let r: Vec<&RefLogps> = refs.iter().collect();
    let (loss, _) = dpo_loss_sum(&policy, &tape, &p, &r, &cfg).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let names = [
        "model.embed_tokens.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ];
    for name in names {
        let g = grads.get(policy.param(name).unwrap()).unwrap().to_vec_f64().unwrap();
        // The three largest entries: where a finite difference in f32 is well above rounding.
        let mut order: Vec<usize> = (0..g.len()).collect();
        order.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
        for &j in &order[..3] {
            let h = 1e-3;
            let mut eval = |d: f64| {
                let (_, t) = policy.named_params_mut().find(|(n, _)| *n == name).unwrap();
                t.update_in_place::<f32>(|v| v[j] += d as f32).unwrap();
                let (l, _) = loss_and_sums(&policy, &pairs, &refs, &cfg);
                let (_, t) = policy.named_params_mut().find(|(n, _)| *n == name).unwrap();
                t.update_in_place::<f32>(|v| v[j] -= d as f32).unwrap();
                l
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            // f32 loss rounding (~1e-7) over 2h gives ~1e-4 absolute noise; 2% covers it.
            assert_close(&format!("{name}[{j}]"), g[j], numeric, 2e-4, 2e-2);
        }
    }
}

#[test]
fn large_log_ratios_stay_finite() {
    let c = Tensor::from_vec(vec![-5000.0f32, 0.0], [2]).unwrap();
    let r = Tensor::from_vec(vec![0.0f32, -5000.0], [2]).unwrap();
    let refs = [RefLogps { chosen: 0.0, rejected: 0.0 }; 2];
    let refs: Vec<&RefLogps> = refs.iter().collect();
    let cfg = DpoConfig { beta: 0.5, ..Default::default() };
    let tape = Tape::new();
    let (wc, wr) = (tape.watch(&c), tape.watch(&r));
    let l = dpo_pair_losses(&wc, &wr, &refs, (&[1, 1], &[1, 1]), &cfg).unwrap();
    // -log sigmoid(-2500) = 2500; -log sigmoid(2500) = 0 (to f32).
    assert_eq!(l.to_vec::<f32>().unwrap(), [2500.0, 0.0]);
    let g = tape.backward(&ops::sum(&l).unwrap()).unwrap();
    assert_eq!(g.get(&c).unwrap().to_vec::<f32>().unwrap(), [-0.5, 0.0]);
}

#[test]
fn bad_settings_and_inputs_are_errors() {
    assert_eq!("ipo".parse::<DpoLoss>().unwrap(), DpoLoss::Ipo);
    let msg = "kto".parse::<DpoLoss>().unwrap_err().to_string();
    assert!(msg.contains("kto") && msg.contains("sigmoid, ipo, hinge"), "{msg}");
    let bad = [
        (DpoConfig { beta: 0.0, ..Default::default() }, "--beta"),
        (DpoConfig { beta: f64::NAN, ..Default::default() }, "--beta"),
        (DpoConfig { label_smoothing: 0.6, ..Default::default() }, "[0, 0.5]"),
        (DpoConfig { loss: DpoLoss::Ipo, label_smoothing: 0.1, ..Default::default() }, "sigmoid loss only"),
    ];
    for (cfg, want) in bad {
        let msg = cfg.validate().unwrap_err().to_string();
        assert!(msg.contains(want), "{cfg:?}: {msg}");
    }
    let model = tiny_model(5);
    let pairs = pairs();
    assert!(reference_logps(&model, &pairs, 0).unwrap_err().to_string().contains("at least 1"));
    let refs = reference_logps(&model, &pairs, 3).unwrap();
    let tape = Tape::new();
    let p: Vec<&PairRow> = pairs.iter().collect();
    let msg = dpo_loss_sum(&model, &tape, &p, &[&refs[0]], &DpoConfig::default()).unwrap_err().to_string();
    assert!(msg.contains("3 pairs with 1 reference"), "{msg}");
    // A completion with nothing scored (the prompt fills the row).
    let empty = pair(&[1, 2, 3], &[4], &[]);
    let msg = reference_logps(&model, &[pairs[0].clone(), empty], 2).unwrap_err().to_string();
    assert!(msg.contains("pair 1") && msg.contains("rejected"), "{msg}");
    let msg = eval_dpo(&model, &model, &[], &DpoConfig::default(), 2).unwrap_err().to_string();
    assert!(msg.contains("no preference pair"), "{msg}");
}

#[test]
fn eval_prints_trl_names_only() {
    let model = tiny_model(6);
    let e = eval_dpo(&model, &tiny_model(7), &pairs(), &DpoConfig::default(), 2).unwrap();
    let v = serde_json::to_value(&e).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["loss", "rewards/accuracies", "rewards/chosen", "rewards/margins", "rewards/rejected"]);
    assert_eq!(e.pairs, 3);
}

//! Each merge method from the command-line spec (`MergeSpec::from_cli`) against its formula,
//! computed here tensor by tensor from the inputs: linear (normalized and not), SLERP (both
//! ends and the middle, the sine branch and the parallel-tensor lerp), task arithmetic, TIES
//! (trim, sign election with 0 as +, agreeing-weight division) and DARE (the documented seeded
//! drop, L1 rescale), plus tied embeddings and the output's config and tokenizer.

mod merge_common;

use merge_common::*;
use solar_model::checkpoint::WriteOptions;
use solar_train::merge::{merge, methods::dare_rng, CliMerge, MergeSpec};
use std::path::{Path, PathBuf};

fn run(cli: CliMerge, out: &Path) {
    let spec = MergeSpec::from_cli(&cli).unwrap_or_else(|e| panic!("{e}"));
    merge(&spec, out, &WriteOptions::default()).unwrap_or_else(|e| panic!("{e}"));
}

fn three(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let cfg = tiny(3);
    (model(d, "a", &cfg, 1), model(d, "b", &cfg, 2), model(d, "base", &cfg, 3))
}

fn cli(method: &str, models: &[&PathBuf]) -> CliMerge {
    CliMerge {
        method: method.into(),
        models: models.iter().map(|p| p.to_path_buf()).collect(),
        ..Default::default()
    }
}

#[test]
fn linear_is_the_weighted_average_or_sum() {
    let d = scratch("linear");
    let (a, b, c) = three(&d);
    let (ta, tb, tc) = (tensors(&a), tensors(&b), tensors(&c));
    let w = [0.2, 0.5, 0.3];
    run(CliMerge { weights: Some(w.to_vec()), ..cli("linear", &[&a, &b, &c]) }, &d.join("avg"));
    run(
        CliMerge {
            weights: Some(vec![2.0, -1.0, 0.5]),
            normalize: Some(false),
            ..cli("linear", &[&a, &b, &c])
        },
        &d.join("sum"),
    );
    let (avg, sum) = (tensors(&d.join("avg")), tensors(&d.join("sum")));
    assert_eq!(avg.len(), ta.len());
    for (name, x) in &ta {
        let (y, z) = (&tb[name], &tc[name]);
        let want: Vec<f64> =
            (0..x.len()).map(|i| (0.2 * x[i] as f64 + 0.5 * y[i] as f64 + 0.3 * z[i] as f64) / 1.0).collect();
        close(name, &avg[name], &want, 1e-6, 1e-6);
        let want: Vec<f64> =
            (0..x.len()).map(|i| 2.0 * x[i] as f64 - y[i] as f64 + 0.5 * z[i] as f64).collect();
        close(name, &sum[name], &want, 1e-6, 1e-6);
    }
    // The first model's config and side files come along.
    let cfg = std::fs::read_to_string(d.join("avg/config.json")).unwrap();
    assert!(cfg.contains("\"num_hidden_layers\": 3"), "{cfg}");
    assert!(d.join("avg/generation_config.json").is_file());
}

#[test]
fn slerp_follows_the_formula_and_its_ends() {
    let d = scratch("slerp");
    let (a, b, _) = three(&d);
    let (ta, tb) = (tensors(&a), tensors(&b));
    for (t, out) in [(0.0, "t0"), (0.3, "t3"), (1.0, "t1")] {
        run(CliMerge { t: Some(t), ..cli("slerp", &[&a, &b]) }, &d.join(out));
        let got = tensors(&d.join(out));
        for (name, x) in &ta {
            if t == 0.0 {
                assert_eq!(&got[name], x, "{name}: t = 0 is the first model");
            }
            close(name, &got[name], &slerp_ref(t, x, &tb[name]), 1e-6, 1e-5);
        }
    }
    // Parallel tensors (a scaled copy) take the lerp branch: (1 - t) a + t (2a) = 1.3 a.
    let x = [1.0f32, 2.0, -3.0];
    let y: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    let want: Vec<f64> = x.iter().map(|&v| 1.3 * v as f64).collect();
    close("parallel", &solar_train::merge::methods::slerp(0.3, &x, &y), &want, 1e-6, 1e-6);
}

#[test]
fn task_arithmetic_adds_scaled_task_vectors() {
    let d = scratch("task");
    let (a, b, base) = three(&d);
    let (ta, tb, t0) = (tensors(&a), tensors(&b), tensors(&base));
    let spec = CliMerge {
        base: Some(base.clone()),
        weights: Some(vec![0.7, 0.4]),
        lambda: Some(0.8),
        ..cli("task-arithmetic", &[&a, &b])
    };
    run(spec, &d.join("out"));
    let got = tensors(&d.join("out"));
    for (name, z) in &t0 {
        let want: Vec<f64> = (0..z.len())
            .map(|i| {
                let (da, db) = (ta[name][i] as f64 - z[i] as f64, tb[name][i] as f64 - z[i] as f64);
                z[i] as f64 + 0.8 * (0.7 * da + 0.4 * db)
            })
            .collect();
        close(name, &got[name], &want, 1e-6, 1e-5);
    }
}

/// The TIES trim written out: keep the int(density * n) largest |delta|.
fn trim(delta: &[f64], density: f64) -> Vec<f64> {
    let k = (density * delta.len() as f64) as usize;
    let mut order: Vec<usize> = (0..delta.len()).collect();
    order.sort_by(|&i, &j| delta[j].abs().total_cmp(&delta[i].abs()).then(i.cmp(&j)));
    let mut out = vec![0.0; delta.len()];
    for &i in &order[..k] {
        out[i] = delta[i];
    }
    out
}

/// Sign election over weighted deltas (0 counts as +), agreeing entries only, divided by the
/// agreeing weights when normalizing.
fn elect(deltas: &[Vec<f64>], w: &[f64], i: usize, normalize: bool) -> f64 {
    let total: f64 = deltas.iter().zip(w).map(|(d, w)| w * d[i]).sum();
    let sign = if total >= 0.0 { 1.0 } else { -1.0 };
    let (mut s, mut ws) = (0.0, 0.0);
    for (d, w) in deltas.iter().zip(w) {
        if w * d[i] != 0.0 && (w * d[i]).signum() == sign {
            s += w * d[i];
            ws += w;
        }
    }
    if normalize && ws != 0.0 {
        s / ws
    } else {
        s
    }
}

#[test]
fn ties_trims_elects_a_sign_and_averages_the_agreeing() {
    let d = scratch("ties");
    let (a, b, base) = three(&d);
    let (ta, tb, t0) = (tensors(&a), tensors(&b), tensors(&base));
    let w = [1.0, 0.6];
    let spec = CliMerge {
        base: Some(base.clone()),
        weights: Some(w.to_vec()),
        density: Some(0.4),
        lambda: Some(1.5),
        ..cli("ties", &[&a, &b])
    };
    run(spec, &d.join("out"));
    let got = tensors(&d.join("out"));
    for (name, z) in &t0 {
        let delta = |t: &Vec<f32>| t.iter().zip(z).map(|(&x, &b)| (x - b) as f64).collect::<Vec<f64>>();
        let deltas = [trim(&delta(&ta[name]), 0.4), trim(&delta(&tb[name]), 0.4)];
        let want: Vec<f64> = (0..z.len()).map(|i| z[i] as f64 + 1.5 * elect(&deltas, &w, i, true)).collect();
        close(name, &got[name], &want, 1e-5, 1e-5);
    }
}

#[test]
fn dare_drops_with_the_seeded_mask_and_rescales_to_the_l1_norm() {
    let d = scratch("dare");
    let (a, b, base) = three(&d);
    let (ta, tb, t0) = (tensors(&a), tensors(&b), tensors(&base));
    let w = [0.5, 1.0];
    for (method, elects, out, seed) in [("dare-ties", true, "ties", 11), ("dare-linear", false, "linear", 12)]
    {
        let spec = CliMerge {
            base: Some(base.clone()),
            weights: Some(w.to_vec()),
            density: Some(0.6),
            seed,
            ..cli(method, &[&a, &b])
        };
        run(spec, &d.join(out));
        let got = tensors(&d.join(out));
        for (name, z) in &t0 {
            let deltas: Vec<Vec<f64>> = [&ta[name], &tb[name]]
                .iter()
                .enumerate()
                .map(|(m, t)| {
                    let mut rng = dare_rng(seed, name, m);
                    let full: Vec<f64> = t.iter().zip(z).map(|(&x, &b)| (x - b) as f64).collect();
                    let kept: Vec<f64> =
                        full.iter().map(|&x| if rng.uniform() < 0.6 { x } else { 0.0 }).collect();
                    let (l1_full, l1_kept) = (
                        full.iter().map(|x| x.abs()).sum::<f64>(),
                        kept.iter().map(|x| x.abs()).sum::<f64>(),
                    );
                    let s = if l1_full < 1e-7 || l1_kept < 1e-7 { 1.0 } else { l1_full / l1_kept };
                    kept.iter().map(|x| x * s).collect()
                })
                .collect();
            let want: Vec<f64> = (0..z.len())
                .map(|i| {
                    let merged = if elects {
                        elect(&deltas, &w, i, false)
                    } else {
                        w[0] * deltas[0][i] + w[1] * deltas[1][i]
                    };
                    z[i] as f64 + merged
                })
                .collect();
            close(name, &got[name], &want, 1e-5, 1e-5);
        }
    }
    // About 60% of a large tensor's task vector survives.
    let got = tensors(&d.join("linear"));
    let name = "model.layers.0.mlp.up_proj.weight";
    let changed = got[name].iter().zip(&t0[name]).filter(|(x, y)| x != y).count() as f64;
    let frac = changed / got[name].len() as f64;
    assert!(frac > 0.7 && frac < 0.95, "{frac}: two models at 0.6 keep 1 - 0.4^2 = 0.84");
}

#[test]
fn tied_embeddings_serve_as_lm_head() {
    let d = scratch("tied");
    let untied = model(&d, "untied", &tiny(2), 4);
    let tied = model(&d, "tied", &solar_model::LlamaConfig { tie_word_embeddings: true, ..tiny(2) }, 5);
    run(cli("linear", &[&untied, &tied]), &d.join("out"));
    let (u, t, got) = (tensors(&untied), tensors(&tied), tensors(&d.join("out")));
    assert!(!t.contains_key("lm_head.weight"));
    let head = "lm_head.weight";
    let want: Vec<f64> = u[head]
        .iter()
        .zip(&t["model.embed_tokens.weight"])
        .map(|(&x, &y)| (x as f64 + y as f64) / 2.0)
        .collect();
    close(head, &got[head], &want, 1e-6, 1e-6);
    // With the tied model first, the output is tied: no lm_head at all.
    run(cli("linear", &[&tied, &untied]), &d.join("out2"));
    assert!(!tensors(&d.join("out2")).contains_key(head));
}

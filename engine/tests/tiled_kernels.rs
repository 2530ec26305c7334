//! The tiled and chunked CPU kernels on shapes that cross their block boundaries: attention
//! over several 64-query blocks (a partial last one, packed documents, documents whose ids come
//! back, sliding windows) against the f64 loop oracle, the fused lm_head loss over tiles of
//! rows and vocabulary against the composed ops, and the blocked ops bitwise identical
//! with 1, 2 and 3 threads when every op splits into many tasks.

mod common;
use common::{assert_bitwise, assert_close, randn, randn_f32, value_and_grads};
use solar_engine::ops::attention::AttnGeom;
use solar_engine::ops::{self, AttentionMask};
use solar_engine::optim::{AdamW, AdamWConfig};
use solar_engine::{oracle, with_threads, Tape, Tensor};

fn v(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

/// Document ids [B, T] from a per-position rule.
fn docs(b: usize, t: usize, id: impl Fn(usize) -> u32) -> Vec<u32> {
    (0..b * t).map(|x| id(x % t)).collect()
}

#[test]
fn attention_across_blocks_matches_the_oracle_in_f64() {
    let (b, t, h, hkv, d) = (2, 150, 4, 2, 8);
    type Mask = (&'static str, Option<Vec<u32>>, Option<usize>);
    let masks: Vec<Mask> = vec![
        ("causal", None, None),
        ("packed documents", Some(docs(b, t, |i| (i >= 50) as u32 + (i >= 131) as u32)), None),
        ("ids that come back", Some(docs(b, t, |i| ((i / 13) % 3) as u32)), None),
        ("window", None, Some(40)),
        ("window and documents", Some(docs(b, t, |i| (i / 70) as u32)), Some(33)),
        ("window of one", None, Some(1)),
    ];
    for (name, doc, window) in masks {
        let (q, k, vv) = (randn(&[b, t, h, d], 1), randn(&[b, t, hkv, d], 2), randn(&[b, t, hkv, d], 3));
        let mask =
            AttentionMask { doc_ids: doc.clone().map(|x| Tensor::from_vec(x, [b, t]).unwrap()), window };
        let f = |x: &[Tensor]| ops::attention(&x[0], &x[1], &x[2], &mask);
        let (out, g, r) = value_and_grads(&[q.clone(), k.clone(), vv.clone()], &f);
        let doc = doc.map(|x| x.iter().map(|&i| i as usize).collect());
        let geom = AttnGeom { b, t, h, hkv, d, doc, window };
        let want = oracle::attention_fwd(&v(&q), &v(&k), &v(&vv), &geom);
        assert_close(&format!("{name} out"), &v(&out), &want, 1e-12, 1e-10);
        let (dq, dk, dv) = oracle::attention_bwd(&v(&q), &v(&k), &v(&vv), &v(&r), &geom);
        assert_close(&format!("{name} dq"), &v(&g[0]), &dq, 1e-11, 1e-9);
        assert_close(&format!("{name} dk"), &v(&g[1]), &dk, 1e-11, 1e-9);
        assert_close(&format!("{name} dv"), &v(&g[2]), &dv, 1e-11, 1e-9);
    }
}

#[test]
fn attention_decode_equals_the_last_rows_across_blocks() {
    let (b, t, tq, h, hkv, d) = (1, 140, 70, 4, 1, 16);
    let (q, k, vv) =
        (randn_f32(&[b, t, h, d], 4), randn_f32(&[b, t, hkv, d], 5), randn_f32(&[b, t, hkv, d], 6));
    for window in [None, Some(50)] {
        let full = ops::attention(&q, &k, &vv, &AttentionMask { doc_ids: None, window }).unwrap();
        let last_q = ops::index_select(&q, 1, &(t - tq..t).collect::<Vec<_>>()).unwrap();
        let dec = ops::attention_decode(&last_q, &k, &vv, window).unwrap();
        let full_tail = v(&full)[(t - tq) * h * d..].to_vec();
        assert_close(&format!("decode window={window:?}"), &v(&dec), &full_tail, 1e-5, 1e-4);
    }
}

#[test]
fn linear_cross_entropy_tiles_equal_matmul_then_cross_entropy_in_f64() {
    let (n, vocab, c) = (23, 50, 6);
    let t: Vec<i32> =
        (0..n as i32).map(|i| if i % 6 == 2 { -100 } else { (i * 17) % vocab as i32 }).collect();
    let targets = Tensor::from_vec(t, [n]).unwrap();
    let (h, w) = (randn(&[n, c], 60), randn(&[vocab, c], 61));
    let composed =
        |x: &[Tensor]| Ok(ops::cross_entropy(&ops::matmul_t(&x[0], &x[1], false, true)?, &targets)?.loss_sum);
    let (want, want_g, _) = value_and_grads(&[h.clone(), w.clone()], &composed);
    for (rows, block) in [(1, 1), (4, 7), (23, 50), (10, 16), (64, 49), (5, 1000)] {
        let fused =
            |x: &[Tensor]| Ok(ops::linear_cross_entropy_tiled(&x[0], &x[1], &targets, rows, block)?.loss_sum);
        let (got, got_g, _) = value_and_grads(&[h.clone(), w.clone()], &fused);
        let name = format!("tiles {rows}x{block}");
        assert_close(&name, &v(&got), &v(&want), 1e-12, 1e-12);
        assert_close(&format!("{name} dh"), &v(&got_g[0]), &v(&want_g[0]), 1e-12, 1e-10);
        assert_close(&format!("{name} dW"), &v(&got_g[1]), &v(&want_g[1]), 1e-12, 1e-10);
    }
}

/// Ops whose tasks are blocks, chunks or row groups, at sizes that give many tasks each.
fn blocked_outputs() -> Vec<Tensor> {
    let tape = Tape::new();
    let w = |t: Tensor| tape.watch(&t);
    let (b, t) = (2, 200);
    let q = w(randn_f32(&[b, t, 4, 16], 40));
    let (k, vv) = (w(randn_f32(&[b, t, 2, 16], 41)), w(randn_f32(&[b, t, 2, 16], 42)));
    let doc = Tensor::from_vec(docs(b, t, |i| ((i / 45) % 3) as u32), [b, t]).unwrap();
    let att = ops::attention(&q, &k, &vv, &AttentionMask { doc_ids: Some(doc), window: Some(90) }).unwrap();
    let h = w(randn_f32(&[300, 64], 43));
    let head = w(randn_f32(&[700, 64], 44));
    let targets: Vec<i32> = (0..300).map(|i| if i % 9 == 4 { -100 } else { (i * 31) % 700 }).collect();
    let targets = Tensor::from_vec(targets, [300]).unwrap();
    let lce = ops::linear_cross_entropy_tiled(&h, &head, &targets, 37, 300).unwrap();
    let logits = w(randn_f32(&[64, 5000], 45));
    let ce_targets: Vec<i32> = (0..64).map(|i| if i % 5 == 1 { -100 } else { (i * 77) % 5000 }).collect();
    let ce = ops::cross_entropy(&logits, &Tensor::from_vec(ce_targets, [64]).unwrap()).unwrap();
    let x = w(randn_f32(&[500, 96], 46));
    let nw = w(randn_f32(&[96], 47));
    let y = ops::rmsnorm(&x, &nw, 1e-5).unwrap();
    let parts = [
        ops::mean(&ops::mul(&att, &att).unwrap()).unwrap(),
        lce.loss_sum.clone(),
        ce.loss_sum.clone(),
        ops::mean(&ops::mul(&y, &y).unwrap()).unwrap(),
    ];
    let loss = parts.iter().skip(1).fold(parts[0].clone(), |a, p| ops::add(&a, p).unwrap());
    let grads = tape.backward(&loss).unwrap();
    let mut out = vec![att.detach(), y.detach(), loss.detach()];
    for p in [&q, &k, &vv, &h, &head, &logits, &x, &nw] {
        out.push(grads.get(p).unwrap().clone());
    }
    // Three AdamW steps on a parameter of many chunks.
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut p = randn_f32(&[70_001], 48);
    for step in 0..3 {
        opt.begin_step();
        opt.update(&mut p, &randn_f32(&[70_001], 49 + step), true, 1e-2).unwrap();
    }
    out.push(p);
    out
}

#[test]
fn blocked_ops_are_bitwise_identical_at_1_2_and_3_threads() {
    let one = with_threads(1, blocked_outputs).unwrap();
    for threads in [2, 3] {
        let many = with_threads(threads, blocked_outputs).unwrap();
        for (i, (a, b)) in one.iter().zip(&many).enumerate() {
            assert_bitwise(&format!("output {i} with {threads} threads"), a, b);
        }
    }
}

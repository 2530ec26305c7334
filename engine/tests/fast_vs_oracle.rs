//! Layer 3 (CPU): the parallel fast path against the f64 loop oracle, forward and backward, on
//! shapes big enough to take gemm's blocked, multi-threaded path; and every op bitwise
//! identical with 1, 2 and 3 threads (fixed chunking, fixed reduction order).

mod common;
use common::{assert_bitwise, assert_close, randn_f32, value_and_grads};
use solar_engine::ops::attention::AttnGeom;
use solar_engine::ops::{self, AttentionMask};
use solar_engine::optim::{AdamW, AdamWConfig};
use solar_engine::{oracle, with_threads, Result, Tape, Tensor};

const ATOL: f64 = 2e-4;
const RTOL: f64 = 2e-4;

/// (output, gradients of sum(out * r), r) of `f`, as f64 vectors.
fn run(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> (Vec<f64>, Vec<Vec<f64>>, Vec<f64>) {
    let (out, grads, r) = value_and_grads(inputs, &f);
    (v(&out), grads.iter().map(v).collect(), v(&r))
}

fn v(t: &Tensor) -> Vec<f64> {
    t.to_vec_f64().unwrap()
}

#[test]
fn matmul_fast_path_matches_loop_oracle() {
    // (batch dims, m, n, k, ta, tb, shared rhs)
    let cases = [
        (vec![], 257, 129, 300, false, false, false),
        (vec![], 200, 96, 150, true, true, false),
        (vec![3], 70, 90, 130, false, true, true),
        (vec![2, 2], 33, 17, 65, true, false, false),
    ];
    for (batch, m, n, k, ta, tb, shared) in cases {
        let bs: usize = batch.iter().product();
        let mut ad = batch.clone();
        ad.extend(if ta { [k, m] } else { [m, k] });
        let mut bd = if shared { vec![] } else { batch.clone() };
        bd.extend(if tb { [n, k] } else { [k, n] });
        let (a, b) = (randn_f32(&ad, 1), randn_f32(&bd, 2));
        let (out, grads, r) = run(&[a.clone(), b.clone()], |x| ops::matmul_t(&x[0], &x[1], ta, tb));
        let name = format!("matmul {batch:?} {m}x{n}x{k} ta={ta} tb={tb}");
        assert_close(&name, &out, &oracle::matmul(&v(&a), &v(&b), bs, m, n, k, ta, tb, shared), ATOL, RTOL);
        // dA = dC op(B)^T and dB = op(A)^T dC, with the oracle's own loops.
        let (mut ga, mut gb) = (vec![0.0; a.elem_count()], vec![0.0; b.elem_count()]);
        let (av, bv) = (v(&a), v(&b));
        for bi in 0..bs {
            let b0 = if shared { 0 } else { bi * k * n };
            for i in 0..m {
                for j in 0..n {
                    let g = r[bi * m * n + i * n + j];
                    for l in 0..k {
                        let ai = bi * m * k + if ta { l * m + i } else { i * k + l };
                        let bj = b0 + if tb { j * k + l } else { l * n + j };
                        ga[ai] += g * bv[bj];
                        gb[bj] += g * av[ai];
                    }
                }
            }
        }
        assert_close(&format!("{name} dA"), &grads[0], &ga, ATOL, RTOL);
        assert_close(&format!("{name} dB"), &grads[1], &gb, 1e-3, RTOL);
    }
}

#[test]
fn row_ops_fast_path_match_loop_oracle() {
    let (n, c) = (300, 96);
    let (x, w) = (randn_f32(&[n, c], 3), randn_f32(&[c], 4));
    let (out, g, r) = run(&[x.clone(), w.clone()], |x| ops::rmsnorm(&x[0], &x[1], 1e-5));
    assert_close("rmsnorm", &out, &oracle::rmsnorm(&v(&x), &v(&w), 1e-5), ATOL, RTOL);
    let (dx, dw) = oracle::rmsnorm_grad(&v(&x), &v(&w), &r, 1e-5);
    assert_close("rmsnorm dx", &g[0], &dx, ATOL, RTOL);
    assert_close("rmsnorm dw", &g[1], &dw, 1e-3, RTOL);

    let (gate, up) = (randn_f32(&[n, c], 5), randn_f32(&[n, c], 6));
    let (out, g, r) = run(&[gate.clone(), up.clone()], |x| ops::swiglu(&x[0], &x[1]));
    assert_close("swiglu", &out, &oracle::swiglu(&v(&gate), &v(&up)), ATOL, RTOL);
    let (dg, du) = oracle::swiglu_grad(&v(&gate), &v(&up), &r);
    assert_close("swiglu dgate", &g[0], &dg, ATOL, RTOL);
    assert_close("swiglu dup", &g[1], &du, ATOL, RTOL);

    let (t, h, d) = (50, 4, 32);
    let pos: Vec<u32> = (0..t as u32).map(|i| (i * 7) % 23).collect();
    let positions = Tensor::from_vec(pos.clone(), [t]).unwrap();
    let xr = randn_f32(&[t, h, d], 7);
    let (out, g, r) = run(&[xr.clone()], |x| ops::rope(&x[0], &positions, 10000.0));
    let p: Vec<usize> = pos.iter().map(|&p| p as usize).collect();
    assert_close("rope", &out, &oracle::rope(&v(&xr), &p, h, d, 10000.0, false), ATOL, RTOL);
    assert_close("rope grad", &g[0], &oracle::rope(&r, &p, h, d, 10000.0, true), ATOL, RTOL);

    let (vocab, dim) = (40, 24);
    let ids: Vec<u32> = (0..200u32).map(|i| (i * i + 3) % vocab as u32).collect();
    let table = randn_f32(&[vocab, dim], 8);
    let idt = Tensor::from_vec(ids.clone(), [200]).unwrap();
    let (out, g, r) = run(&[table.clone()], |x| ops::embedding(&idt, &x[0]));
    let iu: Vec<usize> = ids.iter().map(|&i| i as usize).collect();
    assert_close("embedding", &out, &oracle::embedding(&iu, &v(&table), dim), 0.0, 0.0);
    assert_close("embedding grad", &g[0], &oracle::embedding_grad(&iu, &r, vocab, dim), ATOL, RTOL);
}

#[test]
fn attention_fast_path_matches_loop_oracle() {
    let (b, t, h, hkv, d) = (2, 37, 6, 2, 16);
    let doc: Vec<u32> = (0..(b * t) as u32).map(|i| if i % t as u32 > 20 { 1 } else { 0 }).collect();
    for (doc_ids, window) in [(None, None), (Some(doc.clone()), None), (Some(doc), Some(9))] {
        let (q, k, vv) =
            (randn_f32(&[b, t, h, d], 9), randn_f32(&[b, t, hkv, d], 10), randn_f32(&[b, t, hkv, d], 11));
        let mask =
            AttentionMask { doc_ids: doc_ids.clone().map(|d| Tensor::from_vec(d, [b, t]).unwrap()), window };
        let (out, g, r) =
            run(&[q.clone(), k.clone(), vv.clone()], |x| ops::attention(&x[0], &x[1], &x[2], &mask));
        let geom = AttnGeom {
            b,
            t,
            h,
            hkv,
            d,
            doc: doc_ids.map(|d| d.iter().map(|&x| x as usize).collect()),
            window,
        };
        let name = format!("attention window={window:?}");
        assert_close(&name, &out, &oracle::attention_fwd(&v(&q), &v(&k), &v(&vv), &geom), ATOL, RTOL);
        let (dq, dk, dv) = oracle::attention_bwd(&v(&q), &v(&k), &v(&vv), &r, &geom);
        assert_close(&format!("{name} dq"), &g[0], &dq, ATOL, RTOL);
        assert_close(&format!("{name} dk"), &g[1], &dk, 1e-3, RTOL);
        assert_close(&format!("{name} dv"), &g[2], &dv, 1e-3, RTOL);
    }
}

#[test]
fn losses_fast_path_match_loop_oracle() {
    let (n, vocab) = (130, 1000);
    let t: Vec<i32> =
        (0..n as i32).map(|i| if i % 7 == 3 { -100 } else { (i * 37) % vocab as i32 }).collect();
    let targets = Tensor::from_vec(t.clone(), [n]).unwrap();
    let opt: Vec<Option<usize>> = t.iter().map(|&x| (x >= 0).then_some(x as usize)).collect();
    let logits = Tensor::randn([n, vocab], 3.0, solar_engine::DType::F32, &mut solar_engine::Rng::new(12));
    let ce = ops::cross_entropy(&logits, &targets).unwrap();
    let (want, count) = oracle::cross_entropy(&v(&logits), &opt, vocab);
    assert_eq!(ce.count, count);
    assert_close("cross_entropy", &[ce.loss_sum.to_scalar().unwrap()], &[want], 1e-3, 1e-5);
    let (_, g, r) = run(&[logits.clone()], |x| Ok(ops::cross_entropy(&x[0], &targets)?.loss_sum));
    assert_close(
        "cross_entropy grad",
        &g[0],
        &oracle::cross_entropy_grad(&v(&logits), &opt, vocab, r[0]),
        1e-6,
        1e-4,
    );

    let (b, tt) = (2, n / 2);
    let lp_logits = logits.reshape([b, tt, vocab]).unwrap();
    let labels = targets.reshape([b, tt]).unwrap();
    let (out, g, r) = run(&[lp_logits.clone()], |x| Ok(ops::sequence_logprobs(&x[0], &labels)?.logps));
    assert_close(
        "logprobs",
        &out,
        &oracle::sequence_logprobs(&v(&lp_logits), &opt, b, tt, vocab),
        1e-3,
        1e-5,
    );
    assert_close(
        "logprobs grad",
        &g[0],
        &oracle::sequence_logprobs_grad(&v(&lp_logits), &opt, tt, vocab, &r),
        1e-6,
        1e-4,
    );
}

#[test]
fn linear_sequence_logprobs_fast_path_matches_loop_oracle() {
    // The oracle builds the logits [B*T, V] with its matmul loop, takes per-sequence log-probs
    // with its log-softmax loop, and maps d logits back to dh = dx W, dW = dx^T h.
    let (b, tt, c, vocab) = (2, 65, 64, 1000);
    let n = b * tt;
    let t: Vec<i32> = (0..n as i32).map(|i| if i % 9 < 2 { -100 } else { (i * 53) % vocab as i32 }).collect();
    let labels = Tensor::from_vec(t.clone(), [b, tt]).unwrap();
    let opt: Vec<Option<usize>> = t.iter().map(|&x| (x >= 0).then_some(x as usize)).collect();
    let h = randn_f32(&[b, tt, c], 15);
    let w = randn_f32(&[vocab, c], 16);
    let logits = oracle::matmul(&v(&h), &v(&w), 1, n, vocab, c, false, true, false);
    let want = oracle::sequence_logprobs(&logits, &opt, b, tt, vocab);
    // Default tiles, and 48-row chunks (straddling the sequences) by 300-wide vocabulary blocks.
    for tile in [None, Some((48, 300))] {
        let (out, g, r) = run(&[h.clone(), w.clone()], |x| {
            Ok(match tile {
                None => ops::linear_sequence_logprobs(&x[0], &x[1], &labels)?.logps,
                Some((rows, block)) => {
                    ops::linear_sequence_logprobs_tiled(&x[0], &x[1], &labels, rows, block)?.logps
                }
            })
        });
        let name = format!("linear_sequence_logprobs tile {tile:?}");
        assert_close(&name, &out, &want, 1e-3, 1e-5);
        let dx = oracle::sequence_logprobs_grad(&logits, &opt, tt, vocab, &r);
        let dh = oracle::matmul(&dx, &v(&w), 1, n, c, vocab, false, false, false);
        let dw = oracle::matmul(&dx, &v(&h), 1, vocab, c, n, true, false, false);
        assert_close(&format!("{name} dh"), &g[0], &dh, ATOL, RTOL);
        assert_close(&format!("{name} dW"), &g[1], &dw, ATOL, RTOL);
    }
}

#[test]
fn adamw_matches_the_algorithm_written_out() {
    let cfg = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut opt = AdamW::new(cfg);
    let (mut pd, mut pn) = (randn_f32(&[5000], 13), randn_f32(&[300], 14));
    let (mut od, mut on) = (v(&pd), v(&pn));
    let (mut md, mut vd, mut mn, mut vn) = (vec![0.0; 5000], vec![0.0; 5000], vec![0.0; 300], vec![0.0; 300]);
    for step in 1..=5u64 {
        let lr = 1e-2 / step as f64;
        let (gd, gn) = (randn_f32(&[5000], 100 + step), randn_f32(&[300], 200 + step));
        opt.begin_step();
        opt.update(&mut pd, &gd, true, lr).unwrap();
        opt.update(&mut pn, &gn, false, lr).unwrap();
        oracle::adamw_step(&mut od, &v(&gd), &mut md, &mut vd, lr, 0.9, 0.95, 1e-8, 0.1, step, true);
        oracle::adamw_step(&mut on, &v(&gn), &mut mn, &mut vn, lr, 0.9, 0.95, 1e-8, 0.1, step, false);
    }
    assert_close("adamw decayed", &v(&pd), &od, 1e-5, 1e-4);
    assert_close("adamw not decayed", &v(&pn), &on, 1e-5, 1e-4);
}

/// Every op, forward and backward, on shapes that split into several parallel tasks.
fn all_ops_outputs() -> Vec<Tensor> {
    let tape = Tape::new();
    let w = |t: Tensor| tape.watch(&t);
    let (a, bm) = (w(randn_f32(&[384, 256], 20)), w(randn_f32(&[512, 256], 21)));
    let x = w(randn_f32(&[300, 128], 22));
    let nw = w(randn_f32(&[128], 23));
    let q = w(randn_f32(&[2, 40, 6, 16], 24));
    let (k, vv) = (w(randn_f32(&[2, 40, 2, 16], 25)), w(randn_f32(&[2, 40, 2, 16], 26)));
    let table = w(randn_f32(&[64, 128], 27));
    let head = w(randn_f32(&[384, 128], 28));
    let ids = Tensor::from_vec((0..300u32).map(|i| (i * 13) % 64).collect::<Vec<_>>(), [300]).unwrap();
    let targets = Tensor::from_vec(
        (0..300i32).map(|i| if i % 5 == 0 { -100 } else { i % 384 }).collect::<Vec<_>>(),
        [300],
    )
    .unwrap();
    let pos = Tensor::from_vec((0..80u32).map(|i| i % 33).collect::<Vec<_>>(), [2, 40]).unwrap();
    let doc = Tensor::from_vec((0..80u32).map(|i| i / 17).collect::<Vec<_>>(), [2, 40]).unwrap();
    let mask = AttentionMask { doc_ids: Some(doc), window: Some(25) };

    let mm = ops::matmul_t(&a, &bm, false, true).unwrap(); // [384, 512]
    let emb = ops::embedding(&ids, &table).unwrap();
    let h = ops::rmsnorm(&ops::add(&x, &emb).unwrap(), &nw, 1e-5).unwrap();
    let sw = ops::swiglu(&h, &x).unwrap();
    let logits = ops::matmul_t(&sw, &head, false, true).unwrap(); // [300, 384]
    let ce = ops::cross_entropy(&logits, &targets).unwrap();
    let att =
        ops::attention(&ops::rope(&q, &pos, 1e4).unwrap(), &ops::rope(&k, &pos, 1e4).unwrap(), &vv, &mask)
            .unwrap();
    let lp =
        ops::sequence_logprobs(&logits.reshape([2, 150, 384]).unwrap(), &targets.reshape([2, 150]).unwrap())
            .unwrap();
    let llp = ops::linear_sequence_logprobs_tiled(
        &sw.reshape([2, 150, 128]).unwrap(),
        &head,
        &targets.reshape([2, 150]).unwrap(),
        64,
        100,
    )
    .unwrap();
    let loss = ops::add(
        &ops::add(&ce.loss_sum, &ops::mean(&ops::mul(&att, &att).unwrap()).unwrap()).unwrap(),
        &ops::add(&ops::sum(&lp.logps).unwrap(), &ops::mean(&mm).unwrap()).unwrap(),
    )
    .unwrap();
    let loss = ops::add(&loss, &ops::sum(&llp.logps).unwrap()).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let mut out = vec![mm.detach(), logits.detach(), att.detach(), loss.detach()];
    for p in [&a, &bm, &x, &nw, &q, &k, &vv, &table, &head] {
        out.push(grads.get(p).unwrap().clone());
    }
    out
}

#[test]
fn every_op_is_bitwise_identical_at_1_2_and_3_threads() {
    let one = with_threads(1, all_ops_outputs).unwrap();
    for threads in [2, 3] {
        let many = with_threads(threads, all_ops_outputs).unwrap();
        for (i, (a, b)) in one.iter().zip(&many).enumerate() {
            assert_bitwise(&format!("output {i} with {threads} threads"), a, b);
        }
    }
}

#[test]
fn large_matmul_is_bitwise_identical_at_1_and_2_threads() {
    let (a, b) = (randn_f32(&[700, 520], 30), randn_f32(&[520, 610], 31));
    let one = with_threads(1, || ops::matmul(&a, &b).unwrap()).unwrap();
    let two = with_threads(2, || ops::matmul(&a, &b).unwrap()).unwrap();
    assert_bitwise("matmul 700x610x520", &one, &two);
}

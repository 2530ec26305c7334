//! GPU tests of the losses, reductions and the optimizer against the CPU backend: fused
//! cross-entropy (forward, backward, ignored rows, odd vocabularies), per-sequence log-probs,
//! sum / mean / sum_last / mean_last / argmax_last, AdamW (bitwise the CPU's for f32 and an f32
//! master behind bf16 weights) and the global grad norm; and that two runs agree bitwise.
//! Skipped, saying why, when no GPU is present.

mod cuda_common;
use cuda_common::*;
use solar_engine::optim::{clip_grad_norm, global_grad_norm, AdamW, AdamWConfig};
use solar_engine::{ops, DType, Device, Grads, Rng, Shape, Tape, Tensor};

/// i32 targets in 0..v with about one in five ignored (-100).
fn targets(n: usize, v: usize, seed: u64) -> Tensor {
    let mut rng = Rng::new(seed);
    let t: Vec<i32> =
        (0..n).map(|_| if rng.below(5) == 0 { -100 } else { rng.below(v as u64) as i32 }).collect();
    Tensor::from_vec(t, Shape::new(&[n])).unwrap()
}

/// (loss sum, count, dlogits) of cross_entropy on `logits` (any device) with `t`.
fn ce_grad(logits: &Tensor, t: &Tensor) -> (Tensor, usize, Tensor) {
    let tape = Tape::new();
    let x = tape.watch(logits);
    let ce = ops::cross_entropy(&x, t).unwrap();
    let g = tape.backward(&ce.loss_sum).unwrap();
    (ce.loss_sum.detach(), ce.count, g.get(&x).unwrap().clone())
}

#[test]
fn cuda_cross_entropy_matches_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    // Odd vocabularies (rows never 16-byte aligned), a small one, one past a block size.
    for (n, v, seed) in [(37, 1001, 1), (5, 7, 2), (19, 20011, 3), (64, 256, 4)] {
        let x = randn_bf16_exact(&[n, v], 2.0, seed);
        let t = targets(n, v, seed + 100);
        let (want_loss, want_count, want_dx) = ce_grad(&x, &t);
        for (name, xg) in [("f32", gpu_f32(&x)), ("bf16", gpu_bf16(&x))] {
            // Targets from the host and from the device.
            for tg in [t.clone(), t.to_device(Device::Cuda(0)).unwrap()] {
                let (loss, count, dx) = ce_grad(&xg, &tg);
                assert_eq!(count, want_count);
                assert_eq!(loss.device(), Device::Cuda(0));
                assert_eq!(loss.dtype(), DType::F32, "CUDA losses are f32");
                assert_close(&format!("ce {name} loss [{n}, {v}]"), &loss, &want_loss, 1e-3, 1e-4);
                assert_eq!(dx.dtype(), xg.dtype());
                let (atol, rtol) = if name == "f32" { (1e-5, 1e-3) } else { (2e-3, BF16_RTOL) };
                assert_close(&format!("ce {name} dlogits [{n}, {v}]"), &dx, &want_dx, atol, rtol);
            }
        }
    }
    // The mean and its gradient go through ops::scale on the device.
    let x = randn_bf16_exact(&[13, 333], 1.0, 9);
    let t = targets(13, 333, 10);
    let want = ops::cross_entropy_mean(&x, &t).unwrap();
    let got = ops::cross_entropy_mean(&gpu_bf16(&x), &t).unwrap();
    assert_close("ce mean", &got, &want, 1e-3, 1e-4);
}

#[test]
fn cuda_cross_entropy_is_deterministic_and_all_ignored_is_zero() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let x = gpu_bf16(&randn_bf16_exact(&[41, 32003], 3.0, 11));
    let t = targets(41, 32003, 12);
    let (l1, _, d1) = ce_grad(&x, &t);
    let (l2, _, d2) = ce_grad(&x, &t);
    assert_eq!(l1.to_vec_f64().unwrap(), l2.to_vec_f64().unwrap(), "loss differs between runs");
    assert_eq!(d1.to_vec_f64().unwrap(), d2.to_vec_f64().unwrap(), "dlogits differ between runs");

    let none = Tensor::from_vec(vec![-100i32; 6], Shape::new(&[6])).unwrap();
    let (loss, count, dx) = ce_grad(&gpu_f32(&randn_bf16_exact(&[6, 50], 1.0, 13)), &none);
    assert_eq!(count, 0);
    assert_eq!(loss.to_scalar().unwrap(), 0.0);
    assert!(dx.to_vec_f64().unwrap().iter().all(|&d| d == 0.0), "ignored rows get a zero gradient");
}

#[test]
fn cuda_cross_entropy_rejects_bad_targets() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let x = gpu_f32(&randn_bf16_exact(&[3, 10], 1.0, 14));
    let bad = Tensor::from_vec(vec![1i32, 10, 2], Shape::new(&[3])).unwrap();
    assert!(ops::cross_entropy(&x, &bad).is_err(), "target 10 of 10 classes is an error");
    let more_logits = gpu_f32(&randn_bf16_exact(&[3, 10], 1.0, 15));
    let ok = Tensor::from_vec(vec![1i32, 9, -100], Shape::new(&[3])).unwrap();
    assert!(ops::cross_entropy(&more_logits, &ok).is_ok());
}

#[test]
fn cuda_sequence_logprobs_match_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let (b, t, v) = (3, 7, 517);
    let x = randn_bf16_exact(&[b, t, v], 1.5, 20);
    let labels = targets(b * t, v, 21).reshape(Shape::new(&[b, t])).unwrap();
    let dlogp = Tensor::from_vec(vec![0.5f32, -1.25, 2.0], Shape::new(&[b])).unwrap();
    let run = |xd: &Tensor, wd: &Tensor| {
        let tape = Tape::new();
        let xw = tape.watch(xd);
        let lp = ops::sequence_logprobs(&xw, &labels).unwrap();
        // sum_b w_b logp_b, so each sequence gets its own upstream gradient.
        let loss = ops::sum(&ops::mul(&lp.logps, wd).unwrap()).unwrap();
        let g = tape.backward(&loss).unwrap();
        (lp.logps.detach(), lp.counts, g.get(&xw).unwrap().clone())
    };
    let (want, want_counts, want_dx) = run(&x, &dlogp);
    for (name, xg) in [("f32", gpu_f32(&x)), ("bf16", gpu_bf16(&x))] {
        let (got, counts, dx) = run(&xg, &gpu_f32(&dlogp));
        assert_eq!(counts, want_counts);
        assert_close(&format!("logprobs {name}"), &got, &want, 1e-3, 1e-4);
        let (atol, rtol) = if name == "f32" { (1e-5, 1e-3) } else { (2e-3, BF16_RTOL) };
        assert_close(&format!("logprobs {name} dlogits"), &dx, &want_dx, atol, rtol);
    }
}

#[test]
fn cuda_reductions_match_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    type Red = fn(&Tensor) -> solar_engine::Result<Tensor>;
    let reds = [
        ("sum", ops::sum as Red),
        ("mean", ops::mean),
        ("sum_last", ops::sum_last),
        ("mean_last", ops::mean_last),
    ];
    // Narrow rows (a warp each), wide rows (a block each), several stage-1 chunks, one element.
    for (shape, seed) in [(vec![37, 129], 30), (vec![5, 3001], 31), (vec![20011], 32), (vec![1], 33)] {
        let x = randn_bf16_exact(&shape, 1.0, seed);
        for (name, f) in reds {
            let grad_of = |xd: &Tensor| {
                let tape = Tape::new();
                let xw = tape.watch(xd);
                let y = f(&xw).unwrap();
                // A non-uniform upstream gradient: weight the outputs before summing.
                let w = Tensor::randn(y.shape().clone(), 1.0, DType::F32, &mut Rng::new(seed + 7))
                    .to_dtype(xd.dtype())
                    .unwrap()
                    .to_device(xd.device())
                    .unwrap();
                let loss = ops::sum(&ops::mul(&y, &w).unwrap()).unwrap();
                let g = tape.backward(&loss).unwrap();
                (y.detach(), g.get(&xw).unwrap().clone())
            };
            let (want, want_dx) = grad_of(&x);
            let (got, dx) = grad_of(&gpu_f32(&x));
            let tag = format!("{name} {shape:?}");
            assert_close(&format!("{tag} f32"), &got, &want, 1e-4, 1e-4);
            assert_close(&format!("{tag} f32 grad"), &dx, &want_dx, 1e-6, 1e-6);
            let (got, _) = grad_of(&gpu_bf16(&x));
            assert_eq!(got.dtype(), DType::BF16, "reductions keep the dtype");
            assert_close(&format!("{tag} bf16"), &got, &want, 2e-2, BF16_RTOL);
        }
    }
    let x = randn_bf16_exact(&[9, 4099], 1.0, 34);
    let want = ops::argmax_last(&x).unwrap().to_vec::<u32>().unwrap();
    for xg in [gpu_f32(&x), gpu_bf16(&x)] {
        let got = ops::argmax_last(&xg).unwrap();
        assert_eq!(got.dims(), &[9]);
        assert_eq!(got.to_vec::<u32>().unwrap(), want, "argmax_last {:?}", xg.dtype());
    }
    // Ties go to the first index.
    let tie = Tensor::from_vec(vec![1.0f32, 3.0, 3.0, 2.0, 3.0], Shape::new(&[1, 5])).unwrap();
    assert_eq!(ops::argmax_last(&gpu_f32(&tie)).unwrap().to_vec::<u32>().unwrap(), vec![1]);
}

#[test]
fn cuda_adamw_matches_cpu_bitwise() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let shape = [37, 129]; // 4773: not a multiple of 4, so the scalar tail runs too
    let cfg = AdamWConfig::default();
    let p0 = randn_bf16_exact(&shape, 1.0, 40);
    let grads: Vec<Tensor> = (0..3).map(|s| randn_bf16_exact(&shape, 0.1, 41 + s)).collect();
    for decay in [true, false] {
        let mut cpu = AdamW::new(cfg);
        let mut p_cpu = p0.clone();
        let (mut gpu32, mut gpu16) = (AdamW::new(cfg), AdamW::new(cfg));
        let mut p32 = gpu_f32(&p0);
        let mut p16 = gpu_bf16(&p0);
        for (s, g) in grads.iter().enumerate() {
            let lr = 1e-2 * (s + 1) as f64;
            for o in [&mut cpu, &mut gpu32, &mut gpu16] {
                o.begin_step();
            }
            cpu.update(&mut p_cpu, g, decay, lr).unwrap();
            gpu32.update(&mut p32, &gpu_f32(g), decay, lr).unwrap();
            // bf16 weights with a bf16 gradient (exact: g is bf16-rounded already).
            gpu16.update(&mut p16, &gpu_bf16(g), decay, lr).unwrap();
        }
        let want = p_cpu.to_vec::<f32>().unwrap();
        assert_eq!(p32.to_vec::<f32>().unwrap(), want, "f32 CUDA AdamW is bitwise the CPU's (decay {decay})");
        let master = gpu16.master(p16.id()).expect("a bf16 parameter has an f32 master");
        assert_eq!(master.to_vec::<f32>().unwrap(), want, "the master weights are bitwise the CPU's");
        let want16: Vec<f32> = want.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect();
        let got16: Vec<f32> = p16.to_vec::<half::bf16>().unwrap().iter().map(|x| x.to_f32()).collect();
        assert_eq!(got16, want16, "the bf16 weights are the rounded masters");
        let (mc, mg) = (cpu.moments(p_cpu.id()).unwrap(), gpu32.moments(p32.id()).unwrap());
        assert_eq!(mg.m.to_vec::<f32>().unwrap(), mc.m.to_vec::<f32>().unwrap(), "first moments");
        assert_eq!(mg.v.to_vec::<f32>().unwrap(), mc.v.to_vec::<f32>().unwrap(), "second moments");
    }
}

#[test]
fn cuda_grad_norm_and_clip_match_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let shapes: [&[usize]; 4] = [&[37, 129], &[20011], &[1], &[3, 5, 7]];
    let ts: Vec<Tensor> =
        shapes.iter().enumerate().map(|(i, s)| randn_bf16_exact(s, 1.0, 50 + i as u64)).collect();
    let ids: Vec<_> = ts.iter().map(|t| t.id()).collect();
    let (mut cpu, mut g32, mut g16) = (Grads::default(), Grads::default(), Grads::default());
    for (t, &id) in ts.iter().zip(&ids) {
        cpu.insert(id, t.clone());
        g32.insert(id, gpu_f32(t));
        g16.insert(id, gpu_bf16(t));
    }
    let want = global_grad_norm(&cpu, &ids).unwrap();
    for (name, g) in [("f32", &g32), ("bf16", &g16)] {
        let got = global_grad_norm(g, &ids).unwrap();
        eprintln!("grad norm {name}: {got} vs {want}");
        assert!((got - want).abs() <= 1e-5 * want, "grad norm {name}: {got} vs {want}");
    }
    let n1 = global_grad_norm(&g32, &ids).unwrap();
    assert_eq!(n1, global_grad_norm(&g32, &ids).unwrap(), "the norm is bitwise reproducible");
    let want_norm = clip_grad_norm(&mut cpu, &ids, 1.0).unwrap();
    let got_norm = clip_grad_norm(&mut g32, &ids, 1.0).unwrap();
    assert!((got_norm - want_norm).abs() <= 1e-5 * want_norm);
    for &id in &ids {
        assert_close("clipped grad", g32.get_id(id).unwrap(), cpu.get_id(id).unwrap(), 1e-6, 1e-4);
    }
}

#[test]
fn cuda_linear_cross_entropy_matches_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let (n, c, v) = (37, 72, 1001);
    let h = randn_bf16_exact(&[n, c], 0.5, 60);
    let w = randn_bf16_exact(&[v, c], 0.5, 61);
    let t = targets(n, v, 62);
    let run = |h: &Tensor, w: &Tensor, chunk: usize| {
        let tape = Tape::new();
        let (hw, ww) = (tape.watch(h), tape.watch(w));
        let ce = ops::linear_cross_entropy_chunked(&hw, &ww, &t, chunk).unwrap();
        let g = tape.backward(&ce.loss_sum).unwrap();
        (ce.loss_sum.detach(), ce.count, g.get(&hw).unwrap().clone(), g.get(&ww).unwrap().clone())
    };
    let (want, want_count, want_dh, want_dw) = run(&h, &w, 16);
    // One chunk (h used in place) and several (the last one short).
    for chunk in [n, 16] {
        let (loss, count, dh, dw) = run(&gpu_bf16(&h), &gpu_bf16(&w), chunk);
        assert_eq!(count, want_count);
        assert_eq!((dh.dtype(), dw.dtype()), (DType::BF16, DType::BF16));
        // The GPU's logits are bf16 (as the unfused bf16 path's are): looser than f32.
        assert_close(&format!("linear ce loss (chunk {chunk})"), &loss, &want, 5e-2, 2e-3);
        assert_close(&format!("linear ce dh (chunk {chunk})"), &dh, &want_dh, 2e-2, 5e-2);
        assert_close(&format!("linear ce dW (chunk {chunk})"), &dw, &want_dw, 2e-2, 5e-2);
    }
}

#[test]
fn cuda_linear_sequence_logprobs_match_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    // Sequences of 9 rows; 16-row chunks start inside a sequence, so each row's scale must
    // come from its own sequence's gradient.
    let (b, t, c, v) = (4, 9, 72, 1001);
    let h = randn_bf16_exact(&[b, t, c], 0.5, 70);
    let w = randn_bf16_exact(&[v, c], 0.5, 71);
    let labels = targets(b * t, v, 72).reshape(Shape::new(&[b, t])).unwrap();
    let dlogp = Tensor::from_vec(vec![0.5f32, -1.25, 2.0, 0.75], Shape::new(&[b])).unwrap();
    let run = |h: &Tensor, w: &Tensor, wd: &Tensor, rows: usize| {
        let tape = Tape::new();
        let (hw, ww) = (tape.watch(h), tape.watch(w));
        let lp = ops::linear_sequence_logprobs_tiled(&hw, &ww, &labels, rows, v).unwrap();
        let loss = ops::sum(&ops::mul(&lp.logps, wd).unwrap()).unwrap();
        let g = tape.backward(&loss).unwrap();
        (lp.logps.detach(), lp.counts, g.get(&hw).unwrap().clone(), g.get(&ww).unwrap().clone())
    };
    let (want, want_counts, want_dh, want_dw) = run(&h, &w, &dlogp, 16);
    for rows in [b * t, 16] {
        let (got, counts, dh, dw) = run(&gpu_bf16(&h), &gpu_bf16(&w), &gpu_f32(&dlogp), rows);
        assert_eq!(counts, want_counts);
        assert_eq!((got.dtype(), dh.dtype(), dw.dtype()), (DType::F32, DType::BF16, DType::BF16));
        // bf16 logits tiles on the GPU, as in the fused cross-entropy's test.
        assert_close(&format!("linear logps (rows {rows})"), &got, &want, 5e-2, 2e-3);
        assert_close(&format!("linear logps dh (rows {rows})"), &dh, &want_dh, 2e-2, 5e-2);
        assert_close(&format!("linear logps dW (rows {rows})"), &dw, &want_dw, 2e-2, 5e-2);
    }
    // Two runs agree bitwise.
    let (a, _, da, _) = run(&gpu_bf16(&h), &gpu_bf16(&w), &gpu_f32(&dlogp), 16);
    let (b2, _, db, _) = run(&gpu_bf16(&h), &gpu_bf16(&w), &gpu_f32(&dlogp), 16);
    assert_eq!(a.to_vec_f64().unwrap(), b2.to_vec_f64().unwrap());
    assert_eq!(da.to_vec_f64().unwrap(), db.to_vec_f64().unwrap());
}

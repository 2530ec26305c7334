//! The tape's contract and bad input: gradients accumulate by id (a parameter used twice,
//! micro-batches summed), nothing is recorded without a tape, an op with no backward refuses
//! a tensor that needs a gradient, and shape or dtype mistakes are errors naming the op and
//! the shapes, never panics or out-of-bounds reads.

mod common;
use common::{assert_tensor_close, ids_i32, ids_u32, randn};
use solar_engine::ops::{self, AttentionMask};
use solar_engine::optim::clip_grad_norm;
use solar_engine::{DType, Device, Error, Grads, Tape, Tensor};

#[test]
fn a_parameter_used_twice_gets_the_sum_of_both_gradients() {
    // loss = sum(W x) + sum(W y) with W watched twice (tied weights): dW = (x + y) summed rows.
    let w = randn(&[3, 4], 1);
    let (x, y) = (randn(&[4, 2], 2), randn(&[4, 2], 3));
    let tape = Tape::new();
    let (w1, w2) = (tape.watch(&w), tape.watch(&w));
    let loss = ops::add(
        &ops::sum(&ops::matmul(&w1, &x).unwrap()).unwrap(),
        &ops::sum(&ops::matmul(&w2, &y).unwrap()).unwrap(),
    )
    .unwrap();
    let g = tape.backward(&loss).unwrap();
    let xy = ops::sum_last(&ops::add(&x, &y).unwrap()).unwrap().reshape([1, 4]).unwrap();
    let want = ops::mul(&Tensor::ones([3, 1], DType::F64), &xy).unwrap();
    assert_tensor_close("tied gradient", g.get(&w).unwrap(), &want, 1e-12, 1e-12);
}

#[test]
fn backward_into_accumulates_over_micro_batches() {
    let w = randn(&[5, 3], 4);
    let batch = randn(&[4, 5], 5);
    let full = {
        let tape = Tape::new();
        let loss = ops::sum(&ops::matmul(&batch, &tape.watch(&w)).unwrap()).unwrap();
        tape.backward(&loss).unwrap()
    };
    let mut acc = Grads::default();
    for i in 0..4 {
        let tape = Tape::new();
        let row =
            Tensor::from_vec(batch.to_vec::<f64>().unwrap()[i * 5..(i + 1) * 5].to_vec(), [1, 5]).unwrap();
        let loss = ops::sum(&ops::matmul(&row, &tape.watch(&w)).unwrap()).unwrap();
        tape.backward_into(&loss, &mut acc).unwrap();
    }
    assert_tensor_close("accumulated", acc.get(&w).unwrap(), full.get(&w).unwrap(), 1e-12, 1e-12);
}

#[test]
fn without_a_tape_nothing_is_recorded() {
    let tape = Tape::new();
    let (a, b) = (randn(&[2, 2], 6), randn(&[2, 2], 7));
    let y = ops::matmul(&a, &b).unwrap();
    assert!(!y.needs_grad());
    assert!(tape.is_empty());
    let z = ops::matmul(&tape.watch(&a), &b).unwrap();
    assert!(z.needs_grad());
    assert_eq!(tape.len(), 1);
    // A detached tensor leaves the tape: ops on it record nothing more.
    let _ = ops::exp(&z.detach()).unwrap();
    assert_eq!(tape.len(), 1);
}

#[test]
fn an_op_without_backward_refuses_a_tensor_that_needs_a_gradient() {
    let tape = Tape::new();
    let x = tape.watch(&randn(&[2, 3], 8));
    let err = ops::argmax_last(&x).unwrap_err();
    assert!(matches!(err, Error::NoBackward { op: "argmax_last" }), "{err}");
    assert!(err.to_string().contains("argmax_last has no backward"), "{err}");
    // Detached, it runs.
    let idx = ops::argmax_last(&x.detach()).unwrap();
    assert_eq!(idx.dims(), &[2]);
}

#[test]
fn backward_refuses_non_scalars_foreign_losses_and_second_walks() {
    let tape = Tape::new();
    let x = tape.watch(&randn(&[3], 9));
    let y = ops::exp(&x).unwrap();
    assert!(tape.backward(&y).unwrap_err().to_string().contains("scalar"));
    let other = Tape::new();
    let loss = ops::sum(&y).unwrap();
    assert!(other.backward(&loss).unwrap_err().to_string().contains("not computed on this tape"));
    tape.backward(&loss).unwrap();
    assert!(tape.backward(&loss).unwrap_err().to_string().contains("already"));
    let (t1, t2) = (Tape::new(), Tape::new());
    let err = ops::add(&t1.watch(&randn(&[2], 1)), &t2.watch(&randn(&[2], 2))).unwrap_err();
    assert!(matches!(err, Error::TwoTapes { op: "add" }));
}

#[test]
fn shape_errors_name_the_op_and_both_shapes() {
    let msg = |e: Error| e.to_string();
    let e = msg(ops::matmul(&randn(&[2, 3], 1), &randn(&[4, 5], 2)).unwrap_err());
    assert!(e.contains("matmul") && e.contains("[2, 3]") && e.contains("[4, 5]"), "{e}");
    let e = msg(ops::rmsnorm(&randn(&[2, 3], 1), &randn(&[4], 2), 1e-5).unwrap_err());
    assert!(e.contains("rmsnorm") && e.contains("[2, 3]") && e.contains("[4]"), "{e}");
    let e = msg(ops::attention(
        &randn(&[1, 4, 5, 8], 1),
        &randn(&[1, 4, 2, 8], 2),
        &randn(&[1, 4, 2, 8], 3),
        &AttentionMask::default(),
    )
    .unwrap_err());
    assert!(e.contains("attention") && e.contains("multiple of kv heads"), "{e}");
    let e = msg(ops::add(&randn(&[2, 3], 1), &randn(&[4], 2)).unwrap_err());
    assert!(e.contains("add") && e.contains("broadcast"), "{e}");
    let e = msg(ops::swiglu(&randn(&[2, 3], 1), &randn(&[3, 2], 2)).unwrap_err());
    assert!(e.contains("swiglu") && e.contains("[3, 2]"), "{e}");
    let e = msg(ops::rope(&randn(&[1, 4, 2, 6], 1), &ids_u32(&[0, 1, 2], &[3]), 1e4).unwrap_err());
    assert!(e.contains("rope") && e.contains("[3]"), "{e}");
    let e = msg(ops::cross_entropy(&randn(&[3, 5], 1), &ids_i32(&[0, 1], &[2])).unwrap_err());
    assert!(e.contains("cross_entropy") && e.contains("[3, 5]"), "{e}");
    let e = msg(randn(&[6], 1).reshape([4]).unwrap_err());
    assert!(e.contains("reshape") && e.contains("[6]") && e.contains("[4]"), "{e}");
    assert!(Tensor::from_vec(vec![1.0f32; 5], [2, 3]).is_err());
}

#[test]
fn out_of_range_indices_are_errors_not_reads() {
    let table = randn(&[4, 2], 1);
    let e = ops::embedding(&ids_i32(&[0, 4], &[2]), &table).unwrap_err().to_string();
    assert!(e.contains("embedding") && e.contains("index 4") && e.contains("position 1"), "{e}");
    let e = ops::embedding(&ids_i32(&[-1], &[1]), &table).unwrap_err().to_string();
    assert!(e.contains("index -1"), "{e}");
    let e = ops::cross_entropy(&randn(&[2, 3], 1), &ids_i32(&[3, 0], &[2])).unwrap_err().to_string();
    assert!(e.contains("cross_entropy") && e.contains("index 3"), "{e}");
    let e = ops::cross_entropy(&randn(&[2, 3], 1), &ids_i32(&[-5, 0], &[2])).unwrap_err().to_string();
    assert!(e.contains("index -5"), "{e}");
    assert!(ops::index_select(&randn(&[2, 3], 1), 1, &[3]).is_err());
    assert!(ops::permute(&randn(&[2, 3], 1), &[0, 0]).is_err());
}

#[test]
fn dtype_mistakes_are_errors() {
    let bf = randn(&[2, 2], 1).to_dtype(DType::BF16).unwrap();
    let e = ops::matmul(&bf, &bf).unwrap_err().to_string();
    assert!(e.contains("matmul") && e.contains("BF16"), "{e}");
    let e = ops::add(&randn(&[2], 1), &randn(&[2], 2).to_dtype(DType::F32).unwrap()).unwrap_err().to_string();
    assert!(e.contains("dtype mismatch"), "{e}");
    let e = ops::embedding(&randn(&[2], 1), &randn(&[3, 2], 2)).unwrap_err().to_string();
    assert!(e.contains("token ids"), "{e}");
}

#[test]
fn a_missing_cuda_device_is_a_clear_error() {
    // cuda:7 exists on no machine this runs on; the error names it and what is missing.
    let e = randn(&[2], 1).to_device(Device::Cuda(7)).unwrap_err().to_string();
    assert!(e.contains("cuda:7") && (e.contains("driver") || e.contains("no CUDA device")), "{e}");
    assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
    assert!("gpu".parse::<Device>().is_err());
}

#[test]
fn bf16_round_trip_and_cast_gradient() {
    let x = Tensor::from_vec(vec![1.0f32, 1.0 + 1.0 / 256.0, -3.5, 65280.0], [4]).unwrap();
    let back = x.to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
    // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: round to even gives 1.
    assert_eq!(back.to_vec::<f32>().unwrap(), vec![1.0, 1.0, -3.5, 65280.0]);
    let tape = Tape::new();
    let w = tape.watch(&randn(&[3], 2));
    let loss = ops::sum(&ops::scale(&w.to_dtype(DType::F32).unwrap(), 2.0).unwrap()).unwrap();
    let g = tape.backward(&loss).unwrap();
    let gw = g.get(&w).unwrap();
    assert_eq!(gw.dtype(), DType::F64);
    assert_eq!(gw.to_vec::<f64>().unwrap(), vec![2.0; 3]);
}

#[test]
fn grad_norm_clipping_matches_the_direct_computation() {
    let (a, b) = (randn(&[10], 1), randn(&[3, 4], 2));
    let mut grads = Grads::default();
    grads.insert(a.id(), ops::scale(&a, 3.0).unwrap());
    grads.insert(b.id(), b.clone());
    let ids = [a.id(), b.id()];
    let direct: f64 = a.to_vec_f64().unwrap().iter().map(|x| 9.0 * x * x).sum::<f64>()
        + b.to_vec_f64().unwrap().iter().map(|x| x * x).sum::<f64>();
    let direct = direct.sqrt();
    let norm = clip_grad_norm(&mut grads, &ids, 1.0).unwrap();
    assert!((norm - direct).abs() < 1e-12 * direct, "{norm} vs {direct}");
    let after = solar_engine::optim::global_grad_norm(&grads, &ids).unwrap();
    assert!((after - 1.0).abs() < 1e-5, "clipped norm {after}");
    // Under the limit nothing changes.
    let before = grads.get(&b).unwrap().to_vec_f64().unwrap();
    clip_grad_norm(&mut grads, &ids, 10.0).unwrap();
    assert_eq!(grads.get(&b).unwrap().to_vec_f64().unwrap(), before);
}

/// A two-op region: rmsnorm(x, w) then a matmul with m, each weight watched on `tape`.
fn region(tape: Option<&Tape>, x: &Tensor, w: &Tensor, m: &Tensor) -> solar_engine::Result<Tensor> {
    let watch = |t: &Tensor| tape.map_or_else(|| t.clone(), |tp| tp.watch(t));
    let h = ops::rmsnorm(x, &watch(w), 1e-5)?;
    ops::matmul(&ops::mul(&h, x)?, &watch(m))
}

#[test]
fn a_checkpointed_region_gives_bitwise_the_gradients_of_the_plain_one() {
    use solar_engine::recompute::{checkpoint, Region};
    use std::sync::Arc;
    let (x0, w, m) = (randn(&[5, 6], 30), randn(&[6], 31), randn(&[6, 3], 32));
    let r = randn(&[5, 3], 33);
    // loss = sum(region(x0 * 2) * r): the region's input is itself computed on the tape.
    let run = |recompute: bool| {
        let tape = Tape::new();
        let x = ops::scale(&tape.watch(&x0), 2.0).unwrap();
        let y = if recompute {
            let (w2, m2) = (w.clone(), m.clone());
            let f: Region = Arc::new(move |t: Option<&Tape>, x: &Tensor| region(t, x, &w2, &m2));
            let y = checkpoint(Some(&tape), &x, &[w.clone(), m.clone()], f).unwrap();
            assert_eq!(tape.len(), 2, "the region is one node after the scale");
            y
        } else {
            region(Some(&tape), &x, &w, &m).unwrap()
        };
        let loss = ops::sum(&ops::mul(&y, &r).unwrap()).unwrap();
        let g = tape.backward(&loss).unwrap();
        [&x0, &w, &m].map(|t| g.get(t).unwrap().to_vec_f64().unwrap())
    };
    let (plain, re) = (run(false), run(true));
    for (i, (a, b)) in plain.iter().zip(&re).enumerate() {
        assert!(a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits()), "gradient {i} differs");
    }
    // A region that watches a tensor it was not given would lose that gradient: an error.
    let tape = Tape::new();
    let x = tape.watch(&x0);
    let (w2, m2) = (w.clone(), m.clone());
    let f: Region = Arc::new(move |t: Option<&Tape>, x: &Tensor| region(t, x, &w2, &m2));
    let y = checkpoint(Some(&tape), &x, &[w.clone()], f).unwrap();
    let e = tape.backward(&ops::sum(&y).unwrap()).unwrap_err().to_string();
    assert!(e.contains("not given"), "{e}");
}

/// `backward_notifying` reports each watched tensor once, when its gradient is already what
/// the whole walk gives (nothing is added after), and gives the same gradients as
/// `backward_into`. `w` is read first and last (as a tied embedding is), `u` once in the
/// middle, `unused` never.
#[test]
fn notified_gradients_are_complete_when_reported() {
    let mut rng = solar_engine::Rng::new(5);
    let (w, u, unused) = (
        Tensor::randn([4, 4], 1.0, DType::F64, &mut rng),
        Tensor::randn([4, 4], 1.0, DType::F64, &mut rng),
        Tensor::randn([2], 1.0, DType::F64, &mut rng),
    );
    let x = Tensor::randn([3, 4], 1.0, DType::F64, &mut rng);
    let loss_of = |tape: &Tape| {
        let (w, u, _) = (tape.watch(&w), tape.watch(&u), tape.watch(&unused));
        let h = ops::matmul(&x, &w).unwrap();
        let h = ops::sigmoid(&ops::matmul(&h, &u).unwrap()).unwrap();
        ops::sum(&ops::matmul(&h, &w).unwrap()).unwrap()
    };
    let plain = {
        let tape = Tape::new();
        tape.backward(&loss_of(&tape)).unwrap()
    };
    let tape = Tape::new();
    let loss = loss_of(&tape);
    let mut grads = Grads::default();
    let mut reported = Vec::new();
    tape.backward_notifying(&loss, &mut grads, &mut |id, g: &mut Grads| {
        let now = g.get_id(id).map(|t| t.to_vec_f64().unwrap());
        reported.push((id, now));
        Ok(())
    })
    .unwrap();
    // u's first reader comes after w's: walking back, u is complete first. `unused` has no
    // reader, so no report (the trainer's end-of-micro-batch pass covers such tensors).
    let ids: Vec<_> = reported.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, vec![u.id(), w.id()]);
    for (id, at_report) in &reported {
        let end = grads.get_id(*id).unwrap().to_vec_f64().unwrap();
        assert_eq!(at_report.as_ref().unwrap(), &end);
        assert_eq!(plain.get_id(*id).unwrap().to_vec_f64().unwrap(), end);
    }
}

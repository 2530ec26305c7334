//! GPU tests of the row-wise ops against the CPU backend: rmsnorm, rope, swiglu and embedding,
//! forward and both gradients, on odd shapes that take the 16-byte and the scalar kernel paths,
//! rows wider than the register-resident part, several rows per block and partials per block.
//! Allocations are NaN-poisoned (`test_gpu`), so an element a kernel never writes fails.
//! The embedding backward's host plan is also checked here without a GPU (it runs everywhere).

mod cuda_common;
use cuda_common::*;
use solar_engine::cuda::embedding::{plan, Plan, SEGMENT};
use solar_engine::ops::embedding::embedding_grad;
use solar_engine::{ops, DType, Device, Rng, Tape, Tensor};

const GPU: Device = Device::Cuda(0);

/// y = f(inputs) and the gradients of sum(y * r) for every input, on `dev`: the inputs are f32
/// CPU tensors (bf16-exact), moved to the GPU as bf16; `r` is bf16-exact too, so both sides see
/// the same dy. The loss is summed on the CPU, across to_device.
fn forward_and_grads(
    dev: Device,
    inputs: &[Tensor],
    r: &Tensor,
    f: &dyn Fn(&[Tensor]) -> Tensor,
) -> (Tensor, Vec<Tensor>) {
    let tape = Tape::new();
    let watched: Vec<Tensor> = inputs
        .iter()
        .map(|x| tape.watch(&if dev == Device::Cpu { x.clone() } else { gpu_bf16(x) }))
        .collect();
    let y = f(&watched);
    let y_cpu = y.to_dtype(DType::F32).unwrap().to_device(Device::Cpu).unwrap();
    let loss = ops::sum(&ops::mul(&y_cpu, r).unwrap()).unwrap();
    let grads = tape.backward(&loss).unwrap();
    let gs = watched
        .iter()
        .enumerate()
        .map(|(i, w)| grads.get(w).unwrap_or_else(|| panic!("no gradient for input {i}")).clone())
        .collect();
    (y_cpu.detach(), gs)
}

/// Runs `f` on the CPU (f32) and the GPU (bf16) and compares the output and every gradient.
fn compare(
    name: &str,
    inputs: &[Tensor],
    out_shape: &[usize],
    f: &dyn Fn(&[Tensor]) -> Tensor,
    atol: f64,
    rtol: f64,
) {
    let r = randn_bf16_exact(out_shape, 1.0, 977);
    let (want_y, want_g) = forward_and_grads(Device::Cpu, inputs, &r, f);
    let (got_y, got_g) = forward_and_grads(GPU, inputs, &r, f);
    assert_close(&format!("{name} forward"), &got_y, &want_y, BF16_ATOL, BF16_RTOL);
    for (i, (g, w)) in got_g.iter().zip(&want_g).enumerate() {
        assert_eq!(g.device(), GPU, "{name}: gradient {i} should live on the GPU");
        assert_eq!(g.dtype(), DType::BF16, "{name}: gradient {i} should be bf16");
        assert_close(&format!("{name} grad {i}"), g, w, atol, rtol);
    }
}

#[test]
fn cuda_rmsnorm_matches_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    // (shape, why): 16-byte path; scalar path (C odd); many row groups and blocks with several
    // rows each (C = 24 -> 8 groups a block); rows beyond the backward's registers (C > 8192);
    // scalar rows beyond the registers (C = 301 > 8 * 32).
    for (dims, seed) in [
        (vec![3, 5, 40], 1u64),
        (vec![7, 37], 2),
        (vec![3001, 24], 3),
        (vec![5, 8200], 4),
        (vec![2, 1, 1000], 5),
        (vec![4, 301], 6),
        (vec![2, 32776], 7),
    ] {
        let c = *dims.last().unwrap();
        let x = randn_bf16_exact(&dims, 1.0, seed);
        let w = Tensor::rand_uniform(&[c][..], 0.5, 1.5, DType::F32, &mut Rng::new(seed + 100))
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        // dw sums over all rows: its absolute error grows with sqrt(rows).
        let rows = x.elem_count() / c;
        let atol = BF16_ATOL * (rows as f64).sqrt().max(1.0);
        compare(
            &format!("rmsnorm {dims:?}"),
            &[x, w],
            &dims,
            &|t| ops::rmsnorm(&t[0], &t[1], 1e-5).unwrap(),
            atol,
            BF16_RTOL,
        );
    }
}

#[test]
fn cuda_rmsnorm_backward_is_bitwise_reproducible() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let x = randn_bf16_exact(&[2049, 96], 1.0, 11);
    let w = randn_bf16_exact(&[96], 1.0, 12);
    let r = randn_bf16_exact(&[2049, 96], 1.0, 13);
    let f = |t: &[Tensor]| ops::rmsnorm(&t[0], &t[1], 1e-6).unwrap();
    let (y1, g1) = forward_and_grads(GPU, &[x.clone(), w.clone()], &r, &f);
    let (y2, g2) = forward_and_grads(GPU, &[x, w], &r, &f);
    for (name, a, b) in [("y", &y1, &y2), ("dx", &g1[0], &g2[0]), ("dw", &g1[1], &g2[1])] {
        let (p, q) = (a.to_vec_f64().unwrap(), b.to_vec_f64().unwrap());
        assert!(
            p.iter().zip(&q).all(|(u, v)| u.to_bits() == v.to_bits()),
            "rmsnorm {name} differs between runs"
        );
    }
}

#[test]
fn cuda_rope_matches_cpu() {
    let Some(gpu) = solar_engine::cuda::test_gpu() else { return };
    // (dims [B, T, H, D], why): 16-byte path (D % 16 == 0); scalar path (D = 6); D = 40 (scalar:
    // half not a multiple of 8); large positions (angles of thousands of radians).
    for (dims, pos_base, seed) in [
        ([2, 37, 3, 64], 0i32, 21u64),
        ([1, 5, 2, 6], 3, 22),
        ([3, 4, 5, 40], 0, 23),
        ([1, 9, 4, 128], 7000, 24),
    ] {
        let tokens = dims[0] * dims[1];
        // Packed sequences: positions restart in each batch row.
        let pos: Vec<i32> = (0..tokens).map(|n| pos_base + (n % dims[1]) as i32 * 3).collect();
        let p_cpu = Tensor::from_vec(pos.clone(), &[dims[0], dims[1]][..]).unwrap();
        let x = randn_bf16_exact(&dims, 1.0, seed);
        let theta = 10000.0;
        let f = |t: &[Tensor]| {
            let p = if t[0].is_cuda() { p_cpu.to_device(GPU).unwrap() } else { p_cpu.clone() };
            ops::rope(&t[0], &p, theta).unwrap()
        };
        compare(
            &format!("rope {dims:?} (gpu positions)"),
            std::slice::from_ref(&x),
            &dims,
            &f,
            BF16_ATOL,
            BF16_RTOL,
        );
        // Positions on the host with the tensor on the GPU: validated and uploaded by the op.
        let g = |t: &[Tensor]| ops::rope(&t[0], &p_cpu, theta).unwrap();
        compare(
            &format!("rope {dims:?} (host positions)"),
            std::slice::from_ref(&x),
            &dims,
            &g,
            BF16_ATOL,
            BF16_RTOL,
        );
        // u32 positions on the device read the same.
        let pu: Vec<u32> = pos.iter().map(|&p| p as u32).collect();
        let pu = Tensor::from_vec(pu, &[dims[0], dims[1]][..]).unwrap().to_device(GPU).unwrap();
        let y = ops::rope(&gpu_bf16(&x), &pu, theta).unwrap();
        assert_close(
            &format!("rope {dims:?} u32"),
            &y,
            &ops::rope(&x, &p_cpu, theta).unwrap(),
            BF16_ATOL,
            BF16_RTOL,
        );
    }
    drop(gpu);
}

#[test]
fn cuda_swiglu_matches_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    // 2709 elements: 338 16-byte chunks and a tail of 5; [16, 64] all chunks; [3] tail only.
    for (dims, seed) in [(vec![3, 7, 129], 31u64), (vec![16, 64], 32), (vec![3], 33)] {
        let g = randn_bf16_exact(&dims, 3.0, seed);
        let u = randn_bf16_exact(&dims, 1.0, seed + 1);
        compare(
            &format!("swiglu {dims:?}"),
            &[g, u],
            &dims,
            &|t| ops::swiglu(&t[0], &t[1]).unwrap(),
            BF16_ATOL,
            BF16_RTOL,
        );
    }
}

/// Ids in [0, vocab) where id 3 takes about 40% of the positions (so it is cut into several
/// segments and merged) and a few ids never occur.
fn skewed_ids(n: usize, vocab: usize, seed: u64) -> Vec<i32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let u = rng.uniform();
            if u < 0.4 {
                3
            } else {
                ((u - 0.4) / 0.6 * (vocab as f64 - 4.0)) as i32 % (vocab as i32 - 4)
            }
        })
        .collect()
}

#[test]
fn cuda_embedding_matches_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    // (N, V, C): 16-byte path; scalar path (C odd); one long id bucket over many segments.
    for (n, v, c, seed) in [(300usize, 50usize, 40usize, 41u64), (77, 11, 13, 42), (1000, 9, 8, 43)] {
        let ids = skewed_ids(n, v, seed);
        let ids_cpu = Tensor::from_vec(ids.clone(), &[n][..]).unwrap();
        let table = randn_bf16_exact(&[v, c], 1.0, seed + 1);
        // Rows summed: up to about 0.4 n of them, each bf16-exact, rounded once to bf16.
        for on_gpu in [false, true] {
            let f = |t: &[Tensor]| {
                let i =
                    if on_gpu && t[0].is_cuda() { ids_cpu.to_device(GPU).unwrap() } else { ids_cpu.clone() };
                ops::embedding(&i, &t[0]).unwrap()
            };
            compare(
                &format!("embedding N={n} V={v} C={c} ids on {}", if on_gpu { "gpu" } else { "cpu" }),
                std::slice::from_ref(&table),
                &[n, c],
                &f,
                BF16_ATOL * (n as f64).sqrt(),
                BF16_RTOL,
            );
        }
    }
    // Bad ids are refused on the host before any launch, wherever the ids live.
    let table = gpu_bf16(&randn_bf16_exact(&[4, 8], 1.0, 5));
    for ids in [vec![0, 4], vec![-1, 0]] {
        let t = Tensor::from_vec(ids.clone(), &[2][..]).unwrap();
        assert!(ops::embedding(&t, &table).is_err(), "ids {ids:?} on the host");
        assert!(ops::embedding(&t.to_device(GPU).unwrap(), &table).is_err(), "ids {ids:?} on the GPU");
    }
}

#[test]
fn cuda_embedding_backward_is_bitwise_reproducible() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let ids = Tensor::from_vec(skewed_ids(4097, 300, 51), &[4097][..]).unwrap();
    let table = randn_bf16_exact(&[300, 64], 1.0, 52);
    let r = randn_bf16_exact(&[4097, 64], 1.0, 53);
    let f = |t: &[Tensor]| ops::embedding(&ids, &t[0]).unwrap();
    let (_, g1) = forward_and_grads(GPU, std::slice::from_ref(&table), &r, &f);
    let (_, g2) = forward_and_grads(GPU, &[table], &r, &f);
    let (p, q) = (g1[0].to_vec_f64().unwrap(), g2[0].to_vec_f64().unwrap());
    assert!(
        p.iter().zip(&q).all(|(u, v)| u.to_bits() == v.to_bits()),
        "embedding dtable differs between runs"
    );
}

// ---- the backward's host plan (no GPU needed) ----------------------------------------------

/// What the two backward kernels compute, in their order, from a plan (f32 sums).
fn apply_plan(p: &Plan, g: &[f32], vocab: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; vocab * c];
    let mut partial = vec![f32::NAN; p.slots * c];
    for s in p.segs.chunks(4) {
        let (id, b, e, slot) = (s[0] as usize, s[1] as usize, s[2] as usize, s[3]);
        let mut acc = vec![0.0f32; c];
        for &n in &p.order[b..e] {
            for (a, &x) in acc.iter_mut().zip(&g[n as usize * c..(n as usize + 1) * c]) {
                *a += x;
            }
        }
        let dst = if slot < 0 {
            &mut out[id * c..(id + 1) * c]
        } else {
            &mut partial[slot as usize * c..(slot as usize + 1) * c]
        };
        dst.copy_from_slice(&acc);
    }
    for m in p.merges.chunks(3) {
        let (id, first, count) = (m[0] as usize, m[1] as usize, m[2] as usize);
        let mut acc = vec![0.0f32; c];
        for k in first..first + count {
            for (a, &x) in acc.iter_mut().zip(&partial[k * c..(k + 1) * c]) {
                *a += x;
            }
        }
        out[id * c..(id + 1) * c].copy_from_slice(&acc);
    }
    out
}

#[test]
fn embedding_backward_plan_covers_every_position_once() {
    let (n, vocab, c) = (2000usize, 37usize, 5usize);
    let ids: Vec<usize> = skewed_ids(n, vocab, 61).iter().map(|&i| i as usize).collect();
    let g: Vec<f32> = Tensor::randn(&[n, c][..], 1.0, DType::F32, &mut Rng::new(62)).to_vec::<f32>().unwrap();
    let want = embedding_grad(&ids, &g, vocab, c);
    for seg in [1usize, 3, SEGMENT, usize::MAX] {
        let p = plan(&ids, vocab, seg);
        // order: a permutation sorted by (id, position).
        let mut seen = vec![false; n];
        for w in p.order.windows(2) {
            let (a, b) = (w[0] as usize, w[1] as usize);
            assert!((ids[a], a) < (ids[b], b), "seg {seg}: order not sorted by (id, position)");
        }
        for &k in &p.order {
            assert!(!std::mem::replace(&mut seen[k as usize], true), "seg {seg}: position {k} twice");
        }
        // Segments tile order, each of one id and at most seg long; slots are distinct.
        let mut next = 0i32;
        let mut slots = vec![false; p.slots];
        for s in p.segs.chunks(4) {
            assert_eq!(s[1], next, "seg {seg}: segments must tile order");
            assert!(s[2] > s[1] && (s[2] - s[1]) as usize <= seg.max(1), "seg {seg}: bad segment length");
            assert!(p.order[s[1] as usize..s[2] as usize].iter().all(|&k| ids[k as usize] == s[0] as usize));
            if s[3] >= 0 {
                assert!(!std::mem::replace(&mut slots[s[3] as usize], true), "seg {seg}: slot reused");
            }
            next = s[2];
        }
        assert_eq!(next as usize, n, "seg {seg}: segments must cover every position");
        assert!(slots.iter().all(|&u| u), "seg {seg}: a slot is never filled");
        let got = apply_plan(&p, &g, vocab, c);
        if seg >= n {
            // One segment per id: the CPU's order exactly.
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "seg {seg}: not bitwise");
        } else {
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "seg {seg}: element {i}: {a} vs {b}");
            }
        }
    }
    assert_eq!(plan(&[], 4, SEGMENT), Plan::default());
}

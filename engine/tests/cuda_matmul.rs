//! GPU tests of the tensor-core matmul against the CPU backend (f32 from the same bf16-rounded
//! inputs): odd shapes that take the bounds-checked loads, aligned ones that take cp.async, all
//! four transpose flags, batched and shared-B, both tile sizes, f32 output and accumulation into
//! C through the launcher, the gradients of a small matmul, and that two runs agree bitwise.
//! Outputs are NaN-poisoned (test_gpu), so an element the kernel never wrote fails.
//! Skipped, saying why, when no GPU is present.

mod cuda_common;
use cuda_common::*;
use solar_engine::cuda::matmul::gemm;
use solar_engine::ops::matmul::matmul_dims;
use solar_engine::{ops, DType, Device, Error, Tape, Tensor};

/// A as [batch.., M, K] or [batch.., K, M] (ta), with no batch dims when `batch` is None.
fn a_dims(batch: Option<usize>, m: usize, k: usize, ta: bool) -> Vec<usize> {
    let mut d: Vec<usize> = batch.into_iter().collect();
    d.extend(if ta { [k, m] } else { [m, k] });
    d
}
/// B as [batch.., K, N] or [batch.., N, K] (tb).
fn b_dims(batch: Option<usize>, k: usize, n: usize, tb: bool) -> Vec<usize> {
    let mut d: Vec<usize> = batch.into_iter().collect();
    d.extend(if tb { [n, k] } else { [k, n] });
    d
}

const FLAGS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// matmul_t on the GPU (bf16) against the CPU (f32) on the same values.
fn check(name: &str, a: &Tensor, b: &Tensor, ta: bool, tb: bool) {
    let want = ops::matmul_t(a, b, ta, tb).unwrap();
    let got = ops::matmul_t(&gpu_bf16(a), &gpu_bf16(b), ta, tb).unwrap();
    assert_eq!(got.device(), Device::Cuda(0));
    assert_eq!(got.dtype(), DType::BF16);
    assert_close(&format!("{name} ta={ta} tb={tb}"), &got, &want, BF16_ATOL, BF16_RTOL);
}

#[test]
fn cuda_matmul_matches_cpu_for_odd_and_aligned_shapes() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    // (batch, M, N, K): odd everything, K = 1, K odd below one k-step, rows shorter than a 16-byte
    // chunk, aligned (cp.async), K over many k-steps (the 4-stage ring wraps), a batch.
    let shapes = [
        (None, 37, 29, 43),
        (None, 1, 1, 1),
        (None, 130, 257, 7),
        (None, 5, 3, 2),
        (None, 64, 128, 256),
        (None, 200, 136, 40),
        (Some(2), 33, 65, 300),
        (Some(3), 17, 9, 5),
        (Some(4), 48, 80, 96),
    ];
    for (i, &(batch, m, n, k)) in shapes.iter().enumerate() {
        for (ta, tb) in FLAGS {
            let a = randn_bf16_exact(&a_dims(batch, m, k, ta), 1.0, 10 * i as u64 + 1);
            let b = randn_bf16_exact(&b_dims(batch, k, n, tb), 1.0, 10 * i as u64 + 2);
            check(&format!("matmul {batch:?} [{m}, {k}] x [{k}, {n}]"), &a, &b, ta, tb);
        }
    }
}

#[test]
fn cuda_matmul_shared_b() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    // A batched A times a 2-D weight folds the batch into rows; a 2-D transposed A with a 2-D B.
    for (m, n, k) in [(37, 29, 43), (16, 64, 32), (7, 130, 9)] {
        for tb in [false, true] {
            let a = randn_bf16_exact(&[3, m, k], 1.0, 21);
            let b = randn_bf16_exact(&b_dims(None, k, n, tb), 1.0, 22);
            check(&format!("shared B [3, {m}, {k}] x [{k}, {n}]"), &a, &b, false, tb);
            let at = randn_bf16_exact(&[k, m], 1.0, 23);
            check(&format!("2-D [{k}, {m}]^T x [{k}, {n}]"), &at, &b, true, tb);
        }
    }
}

#[test]
fn cuda_matmul_big_tiles() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    // Enough 128x256 tiles to fill an H100 (the big-tile kernels), odd and aligned.
    for (m, n, k, seed) in [(2053, 2307, 40, 31), (2048, 2560, 64, 33)] {
        for (ta, tb) in [(false, false), (true, false), (false, true)] {
            let a = randn_bf16_exact(&a_dims(None, m, k, ta), 1.0, seed);
            let b = randn_bf16_exact(&b_dims(None, k, n, tb), 1.0, seed + 1);
            check(&format!("big [{m}, {k}] x [{k}, {n}]"), &a, &b, ta, tb);
        }
    }
}

#[test]
fn cuda_gemm_f32_output_and_accumulate() {
    let Some(gpu) = solar_engine::cuda::test_gpu() else { return };
    let op = "test";
    for (i, &(batch, m, n, k)) in [(2usize, 37usize, 29usize, 43usize), (1, 64, 128, 96)].iter().enumerate() {
        for (ta, tb) in FLAGS {
            let seed = 100 + 10 * i as u64;
            let a = randn_bf16_exact(&a_dims(Some(batch), m, k, ta), 1.0, seed);
            let b = randn_bf16_exact(&b_dims(Some(batch), k, n, tb), 1.0, seed + 1);
            let c0 = randn_bf16_exact(&[batch, m, n], 1.0, seed + 2);
            let prod = ops::matmul_t(&a, &b, ta, tb).unwrap();
            let want_acc = ops::add(&prod, &c0).unwrap();
            let d = matmul_dims(a.shape(), b.shape(), ta, tb).unwrap();
            let (ag, bg) = (gpu_bf16(&a), gpu_bf16(&b));
            let (x, y) = (ag.cuda(op).unwrap().bf16(op).unwrap(), bg.cuda(op).unwrap().bf16(op).unwrap());
            let c0_host: Vec<f32> = c0.to_vec::<f32>().unwrap();
            let name = format!("[{batch}, {m}, {k}] x [{k}, {n}] ta={ta} tb={tb}");

            // f32 out, written fresh (into a poisoned buffer) and added into C.
            let mut c = gpu.alloc::<f32>(batch * m * n).unwrap();
            gemm(&gpu, x, y, &mut c, d, ta, tb, false).unwrap();
            let got = Tensor::from_vec(gpu.download(&c).unwrap(), vec![batch, m, n]).unwrap();
            assert_close(&format!("f32out {name}"), &got, &prod, 1e-3, 1e-4);
            let mut c = gpu.upload(&c0_host).unwrap();
            gemm(&gpu, x, y, &mut c, d, ta, tb, true).unwrap();
            let got = Tensor::from_vec(gpu.download(&c).unwrap(), vec![batch, m, n]).unwrap();
            assert_close(&format!("f32out accumulate {name}"), &got, &want_acc, 1e-3, 1e-4);

            // bf16 out added into a bf16 C.
            let c0_bf16: Vec<half::bf16> = c0_host.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let mut c = gpu.upload(&c0_bf16).unwrap();
            gemm(&gpu, x, y, &mut c, d, ta, tb, true).unwrap();
            let got: Vec<f32> = gpu.download(&c).unwrap().iter().map(|v| v.to_f32()).collect();
            let got = Tensor::from_vec(got, vec![batch, m, n]).unwrap();
            assert_close(&format!("bf16 accumulate {name}"), &got, &want_acc, BF16_ATOL, BF16_RTOL);
        }
    }
}

/// (dA, dB) of sum(op(A) op(B) * r) for A, B on any device.
fn grads(a: &Tensor, b: &Tensor, r: &Tensor, ta: bool, tb: bool) -> (Tensor, Tensor) {
    let tape = Tape::new();
    let (x, y) = (tape.watch(a), tape.watch(b));
    let c = ops::matmul_t(&x, &y, ta, tb).unwrap();
    let loss = ops::sum(&ops::mul(&c, r).unwrap()).unwrap();
    let g = tape.backward(&loss).unwrap();
    (g.get(&x).unwrap().clone(), g.get(&y).unwrap().clone())
}

#[test]
fn cuda_matmul_gradients_match_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    // (batch of A, batch of B, M, N, K): 2-D, batched, shared B (folded into rows for dB).
    let cases = [(None, None, 13, 11, 7), (Some(2), Some(2), 9, 17, 24), (Some(3), None, 5, 16, 33)];
    for (i, &(ba, bb, m, n, k)) in cases.iter().enumerate() {
        for (ta, tb) in FLAGS {
            if ta && ba.is_some() && bb.is_none() {
                continue; // a transposed batched A cannot share a 2-D B (matmul_dims refuses)
            }
            let seed = 200 + 10 * i as u64;
            let a = randn_bf16_exact(&a_dims(ba, m, k, ta), 1.0, seed);
            let b = randn_bf16_exact(&b_dims(bb, k, n, tb), 1.0, seed + 1);
            let mut c_dims: Vec<usize> = ba.into_iter().collect();
            c_dims.extend([m, n]);
            let r = randn_bf16_exact(&c_dims, 1.0, seed + 2);
            let (want_da, want_db) = grads(&a, &b, &r, ta, tb);
            let (da, db) = grads(&gpu_bf16(&a), &gpu_bf16(&b), &gpu_bf16(&r), ta, tb);
            let name = format!("{ba:?}x{bb:?} [{m}, {k}] x [{k}, {n}] ta={ta} tb={tb}");
            assert_eq!(da.device(), Device::Cuda(0));
            assert_close(&format!("dA {name}"), &da, &want_da, BF16_ATOL, BF16_RTOL);
            assert_close(&format!("dB {name}"), &db, &want_db, BF16_ATOL, BF16_RTOL);
        }
    }
}

#[test]
fn cuda_matmul_is_deterministic() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let a = gpu_bf16(&randn_bf16_exact(&[3, 300, 517], 1.0, 41));
    let b = gpu_bf16(&randn_bf16_exact(&[517, 260], 1.0, 42));
    let c1 = ops::matmul(&a, &b).unwrap().to_vec_f64().unwrap();
    let c2 = ops::matmul(&a, &b).unwrap().to_vec_f64().unwrap();
    assert_eq!(c1, c2, "two runs differ");
}

#[test]
fn cuda_matmul_rejects_wrong_dtypes_and_devices() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let a = randn_bf16_exact(&[4, 8], 1.0, 51);
    let b = randn_bf16_exact(&[8, 3], 1.0, 52);
    let err = ops::matmul(&gpu_f32(&a), &gpu_f32(&b)).unwrap_err();
    assert!(matches!(err, Error::DType { .. }), "f32 on CUDA: {err}");
    let bf = b.to_dtype(DType::BF16).unwrap();
    let err = ops::matmul(&gpu_bf16(&a), &bf).unwrap_err();
    assert!(matches!(err, Error::WrongDevice { .. }), "mixed devices: {err}");
}

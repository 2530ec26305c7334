//! GPU tests of the experimental Hopper GEMM (kernels/cu/matmul_sm90.cu, wgmma) against the CPU
//! backend, forced per thread with `with_gemm_kernel(GemmKernel::Wgmma, ..)`: all four transpose
//! flags on shapes inside one tile, across tile edges, over many k-steps and batched; f32 output
//! and accumulation through the launcher; the fallback and the error when the kernel does not
//! apply; two runs bitwise equal. Outputs are NaN-poisoned (test_gpu). Skipped, saying why,
//! without an sm_90 GPU.

mod cuda_common;
use cuda_common::*;
use solar_engine::cuda::matmul::gemm;
use solar_engine::cuda::matmul_sm90::{with_gemm_kernel, GemmKernel};
use solar_engine::cuda::Gpu;
use solar_engine::ops::matmul::matmul_dims;
use solar_engine::{ops, Tensor};
use std::sync::Arc;

const FLAGS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

fn hopper() -> Option<Arc<Gpu>> {
    let gpu = solar_engine::cuda::test_gpu()?;
    if gpu.arch != "sm_90" {
        eprintln!("skipping: the wgmma GEMM needs sm_90, cuda:0 is {}", gpu.arch);
        return None;
    }
    if !gpu.has_kernel(&solar_engine::cuda::matmul_sm90::MATMUL_SM90[0]) {
        eprintln!("skipping: {} does not run the wgmma GEMM", gpu.name);
        return None;
    }
    Some(gpu)
}

fn dims(batch: Option<usize>, rows: usize, cols: usize) -> Vec<usize> {
    batch.into_iter().chain([rows, cols]).collect()
}

/// Random A, B of op(A) [.., M, K] and op(B) [.., K, N] as stored for the flags.
fn operands(
    batch: Option<usize>,
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    tb: bool,
    seed: u64,
) -> (Tensor, Tensor) {
    let a = randn_bf16_exact(&if ta { dims(batch, k, m) } else { dims(batch, m, k) }, 1.0, seed);
    let b = randn_bf16_exact(&if tb { dims(batch, n, k) } else { dims(batch, k, n) }, 1.0, seed + 1);
    (a, b)
}

#[test]
fn cuda_wgmma_matmul_matches_cpu() {
    let Some(_gpu) = hopper() else { return };
    // (batch, M, N, K), the contiguous dimensions multiples of 8: a part of one tile, the
    // smallest product, tile edges in M and N with K past one step, a batch, many k-steps
    // (the 4-stage ring wraps several times) and several tiles each way.
    let shapes = [
        (None, 64, 128, 64),
        (None, 8, 8, 8),
        (None, 136, 264, 72),
        (Some(3), 48, 80, 96),
        (None, 200, 136, 1032),
        (None, 1032, 2056, 200),
    ];
    for (i, &(batch, m, n, k)) in shapes.iter().enumerate() {
        for (ta, tb) in FLAGS {
            let (a, b) = operands(batch, m, n, k, ta, tb, 10 * i as u64 + 1);
            let want = ops::matmul_t(&a, &b, ta, tb).unwrap();
            let got = with_gemm_kernel(GemmKernel::Wgmma, || {
                ops::matmul_t(&gpu_bf16(&a), &gpu_bf16(&b), ta, tb).unwrap()
            });
            let name = format!("wgmma {batch:?} [{m}, {k}] x [{k}, {n}] ta={ta} tb={tb}");
            assert_close(&name, &got, &want, BF16_ATOL, BF16_RTOL);
        }
    }
}

#[test]
fn cuda_wgmma_f32_output_and_accumulate() {
    let Some(gpu) = hopper() else { return };
    let op = "test";
    let (batch, m, n, k) = (2, 72, 264, 136);
    for (ta, tb) in FLAGS {
        let (a, b) = operands(Some(batch), m, n, k, ta, tb, 50);
        let c0 = randn_bf16_exact(&[batch, m, n], 1.0, 52);
        let prod = ops::matmul_t(&a, &b, ta, tb).unwrap();
        let want_acc = ops::add(&prod, &c0).unwrap();
        let d = matmul_dims(a.shape(), b.shape(), ta, tb).unwrap();
        let (ag, bg) = (gpu_bf16(&a), gpu_bf16(&b));
        let (x, y) = (ag.cuda(op).unwrap().bf16(op).unwrap(), bg.cuda(op).unwrap().bf16(op).unwrap());
        let name = format!("wgmma [{batch}, {m}, {k}] x [{k}, {n}] ta={ta} tb={tb}");
        with_gemm_kernel(GemmKernel::Wgmma, || {
            let mut c = gpu.alloc::<f32>(batch * m * n).unwrap();
            gemm(&gpu, x, y, &mut c, d, ta, tb, false).unwrap();
            let got = Tensor::from_vec(gpu.download(&c).unwrap(), vec![batch, m, n]).unwrap();
            assert_close(&format!("f32out {name}"), &got, &prod, 1e-3, 1e-4);
            let mut c = gpu.upload(&c0.to_vec::<f32>().unwrap()).unwrap();
            gemm(&gpu, x, y, &mut c, d, ta, tb, true).unwrap();
            let got = Tensor::from_vec(gpu.download(&c).unwrap(), vec![batch, m, n]).unwrap();
            assert_close(&format!("f32out accumulate {name}"), &got, &want_acc, 1e-3, 1e-4);
        });
    }
}

#[test]
fn cuda_wgmma_refuses_or_falls_back_where_it_does_not_apply() {
    let Some(_gpu) = hopper() else { return };
    // K = 43 is not a multiple of 8: A's rows are not whole 16-byte chunks.
    let (a, b) = operands(None, 37, 64, 43, false, false, 60);
    let (ag, bg) = (gpu_bf16(&a), gpu_bf16(&b));
    let err = with_gemm_kernel(GemmKernel::Wgmma, || ops::matmul_t(&ag, &bg, false, false)).unwrap_err();
    assert!(err.to_string().contains("multiples of 8"), "{err}");
    let got = with_gemm_kernel(GemmKernel::PreferWgmma, || ops::matmul_t(&ag, &bg, false, false)).unwrap();
    let want = ops::matmul_t(&a, &b, false, false).unwrap();
    assert_close("PreferWgmma falls back to matmul.cu", &got, &want, BF16_ATOL, BF16_RTOL);
}

#[test]
fn cuda_wgmma_two_runs_are_bitwise_equal() {
    let Some(_gpu) = hopper() else { return };
    let (a, b) = operands(None, 520, 776, 1024, false, true, 70);
    let (ag, bg) = (gpu_bf16(&a), gpu_bf16(&b));
    let run = || {
        with_gemm_kernel(GemmKernel::Wgmma, || ops::matmul_t(&ag, &bg, false, true).unwrap())
            .to_vec_f64()
            .unwrap()
    };
    let (x, y) = (run(), run());
    assert!(x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()), "two wgmma runs differ");
}

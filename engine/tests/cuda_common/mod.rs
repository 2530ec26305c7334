//! Shared helpers of the GPU tests (engine/tests/cuda_*.rs): random inputs, moving them to the
//! GPU in bf16 while keeping the CPU reference on exactly the same (bf16-rounded) values, and a
//! tolerance check that fails on NaN, so an element a kernel never wrote (allocations are
//! NaN-poisoned by `test_gpu`) cannot pass.
#![allow(dead_code)]

use solar_engine::{DType, Device, Rng, Tensor};

/// Normal(0, std) f32 values, rounded through bf16 so CPU and GPU see the same inputs.
pub fn randn_bf16_exact(shape: &[usize], std: f64, seed: u64) -> Tensor {
    Tensor::randn(shape, std, DType::F32, &mut Rng::new(seed))
        .to_dtype(DType::BF16)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

/// `t` (f32 on the CPU) as bf16 on GPU 0.
pub fn gpu_bf16(t: &Tensor) -> Tensor {
    t.to_dtype(DType::BF16).unwrap().to_device(Device::Cuda(0)).unwrap()
}

/// `t` (f32 on the CPU) as f32 on GPU 0.
pub fn gpu_f32(t: &Tensor) -> Tensor {
    t.to_device(Device::Cuda(0)).unwrap()
}

/// Asserts |got - want| <= atol + rtol * |want| elementwise; `got` may live on the GPU in any
/// dtype. Prints the largest error so GPU logs show how close each op is.
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(got.dims(), want.dims(), "{name}: shape");
    let g = got.to_vec_f64().unwrap();
    let w = want.to_vec_f64().unwrap();
    let mut worst = (0.0f64, 0usize);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        assert!(a.is_finite(), "{name}: element {i} is {a} (unwritten or overflowed), want {b}");
        let err = (a - b).abs();
        assert!(err <= atol + rtol * b.abs(), "{name}: element {i}: got {a}, want {b} (|err| {err:.3e})");
        if err > worst.0 {
            worst = (err, i);
        }
    }
    eprintln!("{name}: {} elements, max |err| {:.3e} at {}", g.len(), worst.0, worst.1);
}

/// bf16 tolerances for an op whose output is rounded to bf16 once.
pub const BF16_ATOL: f64 = 1e-2;
pub const BF16_RTOL: f64 = 2e-2;

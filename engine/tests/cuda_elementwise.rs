//! GPU tests of the element-wise ops, casts and device moves against the CPU backend: add, sub,
//! mul (same shape and a broadcast row), scale, add_scalar, f32 <-> bf16, and that gradients
//! flow back across to_device. Skipped, saying why, when no GPU is present.

mod cuda_common;
use cuda_common::*;
use solar_engine::{ops, DType, Device, Tape};

#[test]
fn cuda_binary_ops_match_cpu() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let a = randn_bf16_exact(&[37, 129], 1.0, 1);
    let b = randn_bf16_exact(&[37, 129], 1.0, 2);
    let row = randn_bf16_exact(&[129], 1.0, 3);
    type Bin = fn(&solar_engine::Tensor, &solar_engine::Tensor) -> solar_engine::Result<solar_engine::Tensor>;
    for (name, f) in [("add", ops::add as Bin), ("sub", ops::sub as Bin), ("mul", ops::mul as Bin)] {
        let want = f(&a, &b).unwrap();
        assert_close(&format!("{name} f32"), &f(&gpu_f32(&a), &gpu_f32(&b)).unwrap(), &want, 1e-6, 1e-6);
        assert_close(
            &format!("{name} bf16"),
            &f(&gpu_bf16(&a), &gpu_bf16(&b)).unwrap(),
            &want,
            BF16_ATOL,
            BF16_RTOL,
        );
        let want_row = f(&a, &row).unwrap();
        assert_close(
            &format!("{name} row"),
            &f(&gpu_f32(&a), &gpu_f32(&row)).unwrap(),
            &want_row,
            1e-6,
            1e-6,
        );
    }
}

#[test]
fn cuda_scale_cast_and_transfer_gradients() {
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    let x = randn_bf16_exact(&[1001], 1.0, 4);
    assert_close(
        "scale",
        &ops::scale(&gpu_bf16(&x), 0.5).unwrap(),
        &ops::scale(&x, 0.5).unwrap(),
        1e-6,
        1e-2,
    );
    assert_close(
        "add_scalar",
        &ops::add_scalar(&gpu_f32(&x), 3.0).unwrap(),
        &ops::add_scalar(&x, 3.0).unwrap(),
        1e-6,
        1e-6,
    );
    let round_trip = gpu_f32(&x).to_dtype(DType::BF16).unwrap().to_dtype(DType::F32).unwrap();
    assert_close("cast", &round_trip, &x, 0.0, 0.0);

    // d/dx sum((x*row + x) * 2) computed on the GPU, with the sum on the CPU across to_device.
    let a = randn_bf16_exact(&[5, 7], 1.0, 5);
    let row = randn_bf16_exact(&[7], 1.0, 6);
    let grads = |dev: Device| {
        let tape = Tape::new();
        let (ga, gr) = (tape.watch(&a.to_device(dev).unwrap()), tape.watch(&row.to_device(dev).unwrap()));
        let y = ops::scale(&ops::add(&ops::mul(&ga, &gr).unwrap(), &ga).unwrap(), 2.0).unwrap();
        let loss = ops::sum(&y.to_device(Device::Cpu).unwrap()).unwrap();
        let g = tape.backward(&loss).unwrap();
        (g.get(&ga).unwrap().clone(), g.get(&gr).unwrap().clone())
    };
    let (cpu_a, cpu_r) = grads(Device::Cpu);
    let (gpu_a, gpu_r) = grads(Device::Cuda(0));
    assert_eq!(gpu_a.device(), Device::Cuda(0), "the gradient of a GPU leaf lives on the GPU");
    assert_close("grad a", &gpu_a, &cpu_a, 1e-5, 1e-5);
    assert_close("grad row", &gpu_r, &cpu_r, 1e-5, 1e-5);
}

#[test]
fn cuda_empty_tensors_move_and_compute() {
    // The driver refuses 0-byte allocations; empty tensors still go over, compute and come back.
    let Some(_gpu) = solar_engine::cuda::test_gpu() else { return };
    for dtype in [DType::F32, DType::BF16] {
        let x = solar_engine::Tensor::zeros([0, 4], DType::F32).to_dtype(dtype).unwrap();
        let g = x.to_device(Device::Cuda(0)).unwrap();
        let y = ops::add(&g, &g).unwrap().to_dtype(DType::F32).unwrap();
        let back = y.to_device(Device::Cpu).unwrap();
        assert_eq!((back.dims(), back.to_vec::<f32>().unwrap().len()), (&[0usize, 4][..], 0));
        let w = gpu_bf16(&randn_bf16_exact(&[4, 3], 1.0, 5));
        let p = ops::matmul_t(&g.to_dtype(DType::BF16).unwrap(), &w, false, false).unwrap();
        assert_eq!(p.dims(), &[0, 3]);
    }
}

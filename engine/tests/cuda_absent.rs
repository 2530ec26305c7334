//! With no GPU, asking for one is an Err naming what is missing, never a panic. A test binary of
//! its own: the GPU tests switch their process to the emulator when no GPU opens (test_gpu), and
//! this one must see the driver path alone.
use solar_engine::{DType, Device};

#[test]
fn cuda_absent_is_an_error_not_a_panic() {
    if solar_engine::cuda::emulator_selected() {
        eprintln!("SOLAR_CUDA_EXECUTOR=emu: the driver path is not what this process runs");
        return;
    }
    match solar_engine::cuda::Gpu::get(0) {
        Ok(g) => eprintln!("GPU present: {g:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("cuda:0"), "{msg}");
            assert!(Device::Cuda(0).ensure_available().is_err());
            assert!(solar_engine::Tensor::zeros([2], DType::F32).to_device(Device::Cuda(0)).is_err());
            assert_eq!(Device::auto().0, Device::Cpu);
        }
    }
}

//! A GPU job where NCCL cannot be loaded: joining the world is an Err saying which library was
//! tried and how to point Solar at one, never a panic. A test binary of its own, since the
//! process loads NCCL once and keeps the outcome, and SOLAR_NCCL_LIB is set before anything
//! reads it.
use solar_engine::comm::{init_world, world};
use solar_engine::Device;

mod comm_common;
use comm_common::torchrun_place;

#[test]
fn a_missing_nccl_is_an_error_naming_what_was_tried() {
    if solar_engine::cuda::emulator_selected() || std::env::var("SOLAR_COMM").is_ok() {
        eprintln!("SOLAR_CUDA_EXECUTOR=emu or SOLAR_COMM set: the NCCL path is not what this process runs");
        return;
    }
    let missing = "/nonexistent/solar-test/libnccl.so.2";
    // Set before any other thread could read the environment (one test in this binary).
    std::env::set_var("SOLAR_NCCL_LIB", missing);
    // torchrun's world of one: the distributed path, which on a GPU is NCCL's.
    let place = torchrun_place(1, Some(29500));
    let e = match init_world(&place, Device::Cuda(0)) {
        Ok(_) => panic!("NCCL loaded from {missing}"),
        Err(e) => e.to_string(),
    };
    eprintln!("{e}");
    assert!(e.contains("cannot load NCCL") && e.contains(missing), "{e}");
    assert!(e.contains("SOLAR_NCCL_LIB"), "{e}");
    assert!(world().is_none());
    // Said again, not retried into a panic.
    let again = init_world(&place, Device::Cuda(0)).err().expect("still missing").to_string();
    assert_eq!(again, e);
}

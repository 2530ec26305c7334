//! Which backend a world gets: SOLAR_COMM must be nccl or mpi, NCCL is refused off a real GPU,
//! and CUDA tensors on the emulator go to MPI, never to NCCL (which cannot run there). Each
//! case fails before any rank is needed, so one process tries them all. A test binary of its
//! own: it sets the environment and selects the emulator for the whole process.
use solar_engine::comm::{init_world, world};
use solar_engine::Device;

mod comm_common;
use comm_common::torchrun_place;

#[test]
fn the_backend_follows_the_device_and_solar_comm() {
    let place = torchrun_place(2, Some(29500));
    let fail = |device: Device| init_world(&place, device).err().expect("no world can open here").to_string();

    // Set before any other thread reads the environment (one test in this binary).
    std::env::set_var("SOLAR_COMM", "tcp");
    let e = fail(Device::Cuda(0));
    assert!(e.contains("SOLAR_COMM=\"tcp\"") && e.contains("expected nccl or mpi"), "{e}");

    std::env::set_var("SOLAR_COMM", "nccl");
    let e = fail(Device::Cpu);
    assert!(e.contains("SOLAR_COMM=nccl needs a real GPU") && e.contains("cpu"), "{e}");

    std::env::remove_var("SOLAR_COMM");
    solar_engine::cuda::use_emulator();
    // MPI's refusal (torchrun starts no MPI world, or this build has no MPI), not NCCL's.
    let e = fail(Device::Cuda(0));
    assert!(e.contains("MPI") && !e.contains("NCCL"), "{e}");
    assert!(world().is_none());
}

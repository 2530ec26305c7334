//! The mma.sync GEMM's data path (matmul.cu) checked against the PTX ISA's fragment layouts by
//! NVRTC's front end: tests/matmul_layout.cuh holds the static_asserts and says what they prove.
//! Needs NVRTC, not a GPU (skips without NVRTC unless `SOLAR_REQUIRE_NVRTC=1`).

#[test]
fn compile_matmul_fragments_read_what_the_loader_stored() {
    let asserts = include_str!("matmul_layout.cuh");
    for arch in ["sm_80", "sm_90"] {
        if let Err(e) = solar_kernels::check_launch_constants("matmul", asserts, arch) {
            panic!("matmul.cu's data path, {arch}: {e}");
        }
    }
}

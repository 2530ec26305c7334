//! The tensor-core kernels' data layouts checked against the PTX ISA's fragment layouts by
//! NVRTC's front end, with no GPU: each tests/*_layout.cuh holds the static_asserts for one source
//! and says what they prove, and tests/ptx_fragments.cuh is the reference they share. Skips
//! without NVRTC unless `SOLAR_REQUIRE_NVRTC=1`.

/// Appends the reference and `asserts` to the source `module` and checks them for sm_80 and sm_90.
fn check_layout(module: &str, asserts: &str) {
    let code = format!("{}\n{asserts}", include_str!("ptx_fragments.cuh"));
    for arch in ["sm_80", "sm_90"] {
        if let Err(e) = solar_kernels::check_launch_constants(module, &code, arch) {
            panic!("{module}.cu's layouts, {arch}: {e}");
        }
    }
}

#[test]
fn compile_matmul_fragments_read_what_the_loader_stored() {
    check_layout("matmul", include_str!("matmul_layout.cuh"));
}

#[test]
fn compile_attention_fragments_address_the_mma_layouts() {
    check_layout("attention", include_str!("attention_layout.cuh"));
}

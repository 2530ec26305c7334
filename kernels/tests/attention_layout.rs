//! attention_tiles.cuh's fragment addressing and row copies checked against the PTX ISA's
//! layouts by NVRTC's front end: tests/attention_layout.cuh holds the static_asserts and says
//! what they prove. Needs NVRTC, not a GPU (skips without NVRTC unless `SOLAR_REQUIRE_NVRTC=1`).

#[test]
fn compile_attention_fragments_address_the_mma_layouts() {
    let asserts = include_str!("attention_layout.cuh");
    for arch in ["sm_80", "sm_90"] {
        if let Err(e) = solar_kernels::check_launch_constants("attention", asserts, arch) {
            panic!("attention's tiles, {arch}: {e}");
        }
    }
}

//! Lists every kernel the emulator executor has, with its parameter types.
fn main() {
    for k in solar_kernels::emu::kernels() {
        println!("{:<14} {:<34} ({})", k.module, k.name, k.signature);
    }
}

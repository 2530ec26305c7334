//! The typed launch boundary against the kernels themselves: every `Kernel` the engine declares
//! (module, name, parameter types in order) must be the `extern "C"` signature the emulator
//! compiled from kernels/cu, and every kernel the emulator has must be declared. So a
//! launcher's wrong argument count, type or order fails here, on any machine, before a GPU
//! ever sees it (the launch itself checks arguments against the declaration).
//!
//! Until the emulator's C++ runtime is in, its kernel table is empty and this test skips
//! (saying so); SOLAR_REQUIRE_EMU=1 makes an empty table a failure.

use solar_engine::cuda::{all_kernels, Kernel};
use std::collections::HashSet;

fn emulator_table() -> Option<Vec<solar_kernels::emu::EmuKernel>> {
    let table = solar_kernels::emu::kernels();
    if table.is_empty() {
        assert!(
            std::env::var("SOLAR_REQUIRE_EMU").as_deref() != Ok("1"),
            "SOLAR_REQUIRE_EMU=1 but the emulator has no kernels"
        );
        eprintln!("skipping: the emulator has no kernels in this build");
        return None;
    }
    Some(table)
}

#[test]
fn declarations_are_unique() {
    let mut seen = HashSet::new();
    for k in all_kernels() {
        assert!(seen.insert((k.module, k.name)), "{}.cu:{} is declared twice", k.module, k.name);
    }
}

#[test]
fn every_declaration_matches_its_kernel_signature() {
    let Some(table) = emulator_table() else { return };
    let modules: HashSet<&str> = table.iter().map(|e| e.module).collect();
    let mut wrong = Vec::new();
    for k in all_kernels() {
        match solar_kernels::emu::kernel(k.module, k.name) {
            // A module the emulator does not build at all is its scope (said, not failed); a
            // kernel missing from a module it builds is a name that drifted.
            None if !modules.contains(k.module) => {
                eprintln!("not checked: the emulator does not build {}.cu ({})", k.module, k.name)
            }
            None => wrong
                .push(format!("{}.cu:{}: declared, but the emulator has no such kernel", k.module, k.name)),
            Some(e) if e.signature != k.signature() => wrong.push(format!(
                "{}.cu:{}:\n  declared ({})\n  kernel   ({})",
                k.module,
                k.name,
                k.signature(),
                e.signature
            )),
            Some(_) => {}
        }
    }
    assert!(wrong.is_empty(), "declarations that are not their kernels:\n{}", wrong.join("\n"));
}

#[test]
fn every_kernel_is_declared() {
    let Some(table) = emulator_table() else { return };
    let declared: HashSet<(&str, &str)> =
        all_kernels().iter().map(|k: &&Kernel| (k.module, k.name)).collect();
    // emu_* modules are the emulator's own test kernels (kernels/emu/broken.cu), never launched.
    let missing: Vec<String> = table
        .iter()
        .filter(|e| !e.module.starts_with("emu_") && !declared.contains(&(e.module, e.name)))
        .map(|e| format!("{}.cu:{}({})", e.module, e.name, e.signature))
        .collect();
    assert!(missing.is_empty(), "kernels with no declaration in engine/src/cuda:\n{}", missing.join("\n"));
}

//! Builds the emulator executor (kernels/src/emu.rs): kernels/emu's runtime, and every
//! kernels/cu source as host C++ against kernels/emu/emu.h. Two mechanical steps make a CUDA
//! source host C++, and only for this build (NVRTC compiles the sources as they are):
//! - each `__shared__` declaration becomes a reference into the block's shared window
//!   (`emu_static_shared`, placed at first use) or, for `extern __shared__`, its dynamic start;
//! - a registry of the `extern "C"` kernels (name, parameter types, a call thunk) is appended.
//!
//! The kernel code is compiled with -fsanitize=thread, which puts a call before every load and
//! store; the emulator's checks.cpp implements those calls (no ThreadSanitizer runtime).
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Sources the emulator does not build, and why (none today: the wgmma GEMM runs too).
const NOT_EMULATED: &[(&str, &str)] = &[];

fn main() {
    println!("cargo:rerun-if-changed=emu");
    println!("cargo:rerun-if-changed=cu");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let src_dir = out.join("emu_src");
    std::fs::create_dir_all(&src_dir).unwrap();
    let cu = Path::new("cu");
    let mut names: Vec<String> = std::fs::read_dir(cu)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".cu") || n.ends_with(".cuh"))
        .collect();
    names.sort();
    let mut modules = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(cu.join(name)).unwrap();
        let abs = std::fs::canonicalize(cu.join(name)).unwrap();
        let rewritten = format!("#line 1 \"{}\"\n{}", abs.display(), rewrite_shared(&text, name));
        std::fs::write(src_dir.join(name), rewritten).unwrap();
        if let Some(module) = name.strip_suffix(".cu") {
            if NOT_EMULATED.iter().all(|(m, _)| *m != module) {
                modules.push(module.to_string());
            }
        }
    }
    // The checks' own test kernels (kernels/tests/emu_checks.rs), built into the emulator only.
    std::fs::write(
        src_dir.join("emu_broken.cu"),
        format!(
            "#line 1 \"{}\"\n{}",
            std::fs::canonicalize("emu/broken.cu").unwrap().display(),
            rewrite_shared(&std::fs::read_to_string("emu/broken.cu").unwrap(), "broken.cu")
        ),
    )
    .unwrap();
    modules.push("emu_broken".to_string());
    let mut registry = String::from("#include <cstddef>\n#include <vector>\n");
    registry +=
        "struct EmuEntry { const char* m; const char* n; const char* s; void (*f)(void* const*); };\n";
    let mut kernels = cc::Build::new();
    kernels
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .warnings(false)
        .flag("-fsanitize=thread")
        .flag("-ffp-contract=off")
        .flag("-fno-strict-aliasing")
        .define("SOLAR_EMU", None)
        .define("SOLAR_ARCH", "90")
        .include("emu")
        .include(&src_dir)
        .flag("-include")
        .flag(std::fs::canonicalize("emu/emu.h").unwrap().to_str().unwrap());
    let modules: Vec<(String, Vec<String>)> = modules
        .into_iter()
        .map(|m| {
            let names = kernel_names(&preprocess(&kernels, &src_dir.join(format!("{m}.cu"))));
            assert!(!names.is_empty(), "{m}.cu: no extern \"C\" kernel found");
            (m, names)
        })
        .collect();
    for (module, kernels_of) in &modules {
        let mut tu = format!("#include \"{module}.cu\"\n#include \"registry.h\"\n");
        writeln!(tu, "extern \"C\" const EmuEntry* solar_emu_module_{module}(std::size_t* n) {{").unwrap();
        writeln!(tu, "    static const std::string sigs[] = {{").unwrap();
        for k in kernels_of {
            writeln!(tu, "        emu_signature(&{k}),").unwrap();
        }
        writeln!(tu, "    }};\n    static const EmuEntry table[] = {{").unwrap();
        for (i, k) in kernels_of.iter().enumerate() {
            writeln!(
                tu,
                "        {{\"{module}\", \"{k}\", sigs[{i}].c_str(), +[](void* const* a) {{ emu_invoke(&{k}, a); }}}},"
            )
            .unwrap();
        }
        writeln!(tu, "    }};\n    *n = {};\n    return table;\n}}", kernels_of.len()).unwrap();
        let path = out.join(format!("emu_{module}.cpp"));
        std::fs::write(&path, tu).unwrap();
        kernels.file(&path);
        writeln!(registry, "extern \"C\" const EmuEntry* solar_emu_module_{module}(std::size_t*);").unwrap();
    }
    registry += "extern \"C\" const EmuEntry* solar_emu_registry(std::size_t* n) {\n";
    registry += "    static const std::vector<EmuEntry> all = [] {\n        std::vector<EmuEntry> v;\n";
    for (module, _) in modules.iter() {
        writeln!(
            registry,
            "        {{ std::size_t k; const EmuEntry* t = solar_emu_module_{module}(&k); v.insert(v.end(), t, t + k); }}"
        )
        .unwrap();
    }
    registry += "        return v;\n    }();\n    *n = all.size();\n    return all.data();\n}\n";
    let registry_path = out.join("emu_registry.cpp");
    std::fs::write(&registry_path, registry).unwrap();
    kernels.compile("solar_emu_kernels");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .flag("-ffp-contract=off")
        .include("emu")
        .file("emu/runtime.cpp")
        .file("emu/warp.cpp")
        .file("emu/checks.cpp")
        .file(&registry_path)
        .compile("solar_emu_runtime");
}

/// `source` after the preprocessor, with the emulator build's flags (kernels are often defined
/// by macros, so their names are only known after expansion).
fn preprocess(build: &cc::Build, source: &Path) -> String {
    let mut cmd = build.get_compiler().to_command();
    cmd.arg("-E").arg("-P").arg("-x").arg("c++").arg(source);
    let out = cmd.output().expect("running the C++ preprocessor");
    assert!(
        out.status.success(),
        "preprocessing {}: {}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `extern "C"` functions a preprocessed source defines (has a body for): its kernels, in
/// order. The emulator's own `extern "C"` functions in emu.h are declarations only.
fn kernel_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("extern \"C\"") {
        rest = &rest[at + "extern \"C\"".len()..];
        let mut s = rest.trim_start();
        if let Some(attr) = s.strip_prefix("__attribute__((noinline))") {
            s = attr.trim_start();
        }
        let Some(s) = s.strip_prefix("void") else { continue };
        let s = s.trim_start();
        let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
        let (name, after) = (&s[..end], s[end..].trim_start());
        if name.is_empty() || !after.starts_with('(') {
            continue;
        }
        let mut depth = 0;
        let close = after
            .char_indices()
            .find(|&(_, c)| {
                depth += (c == '(') as i32 - (c == ')') as i32;
                depth == 0
            })
            .map(|(i, _)| i)
            .unwrap();
        if after[close + 1..].trim_start().starts_with('{') {
            names.push(name.to_string());
        }
    }
    names
}

/// Rewrites every `[extern] __shared__ [__align__(N)] TYPE NAME[DIMS];` of `text`, on one line.
fn rewrite_shared(text: &str, file: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("__shared__") {
        let before = &rest[..at];
        let is_extern = before.trim_end().ends_with("extern");
        let keep = if is_extern { &before[..before.trim_end().len() - "extern".len()] } else { before };
        // A mention in a comment is left alone.
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        if before[line_start..].contains("//") {
            out += &rest[..at + "__shared__".len()];
            rest = &rest[at + "__shared__".len()..];
            continue;
        }
        out += keep;
        let after = &rest[at + "__shared__".len()..];
        let semi = after.find(';').unwrap_or_else(|| panic!("{file}: __shared__ declaration without ';'"));
        let mut decl = after[..semi].trim();
        let mut align = None;
        if let Some(a) = decl.strip_prefix("__align__(") {
            let close = a.find(')').unwrap();
            align = Some(a[..close].to_string());
            decl = a[close + 1..].trim();
        }
        let bracket = decl.find('[').unwrap_or_else(|| panic!("{file}: __shared__ {decl}: not an array"));
        let (head, dims) = (decl[..bracket].trim(), &decl[bracket..]);
        let split = head.rfind(|c: char| c.is_whitespace()).unwrap();
        let (ty, name) = (head[..split].trim(), head[split..].trim());
        if is_extern {
            write!(out, "{ty}* const {name} = reinterpret_cast<{ty}*>(emu_shared_window);").unwrap();
        } else {
            let align = align.unwrap_or_else(|| format!("alignof({ty})"));
            write!(
                out,
                "static char {name}_emu_tag; {ty} (&{name}){dims} = *reinterpret_cast<{ty} (*){dims}>(\
                 emu_static_shared(&{name}_emu_tag, sizeof({ty}{dims}), {align}));"
            )
            .unwrap();
        }
        rest = &after[semi + 1..];
    }
    out += rest;
    out
}

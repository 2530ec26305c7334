//! Compile checks that need no GPU: every kernel source compiles with NVRTC for sm_80 and sm_90,
//! ptxas reports no spills in the hot kernels, the matmul's SASS has tensor-core instructions,
//! the cache hits on the second ask, and a broken source fails with NVRTC's log.
//! Without NVRTC these tests skip, saying so, unless SOLAR_REQUIRE_NVRTC=1 (scripts/test.sh).

use solar_kernels::{compile, cubin_for, parse_ptxas_log, CacheOutcome, Source, Toolkit, SOURCES};

const ARCHES: [&str; 2] = ["sm_80", "sm_90"];
/// Families whose every kernel must not spill (the hot list).
const NO_SPILL: [&str; 5] = ["matmul", "matmul_sm90", "attention", "rmsnorm", "cross_entropy"];

fn toolkit() -> Option<&'static Toolkit> {
    match Toolkit::get() {
        Ok(tk) => Some(tk),
        Err(e) if std::env::var("SOLAR_REQUIRE_NVRTC").as_deref() == Ok("1") => {
            panic!("SOLAR_REQUIRE_NVRTC=1 but {e}")
        }
        Err(e) => {
            eprintln!("skipping: {e}");
            None
        }
    }
}

#[test]
fn compile_every_kernel_for_sm80_and_sm90() {
    let Some(tk) = toolkit() else { return };
    eprintln!("NVRTC {:?} from {}", tk.nvrtc.version, tk.nvrtc.path.display());
    for arch in ARCHES {
        // An arch-specific source (matmul_sm90: sm_90a) is compiled on its own arch's turn.
        for src in SOURCES.iter().filter(|s| s.target_for(arch).is_some()) {
            let out = compile(src, arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
            assert!(out.cubin.len() > 64, "{}.cu for {arch}: empty cubin", src.name);
            for k in parse_ptxas_log(&out.log) {
                eprintln!(
                    "{arch} {:<14} {:<40} regs {:>3} smem {:>6} stack {:>4} spills {}/{}",
                    src.name,
                    k.name,
                    k.registers,
                    k.shared_bytes,
                    k.stack_bytes,
                    k.spill_stores,
                    k.spill_loads
                );
                if NO_SPILL.contains(&src.name) {
                    assert_eq!(
                        (k.spill_stores, k.spill_loads),
                        (0, 0),
                        "{arch}: hot kernel {} spills registers",
                        k.name
                    );
                }
            }
        }
    }
}

#[test]
fn compile_reports_every_kernel_entry() {
    let Some(_) = toolkit() else { return };
    let src = SOURCES.iter().find(|s| s.name == "elementwise").unwrap();
    let names: Vec<String> =
        parse_ptxas_log(&compile(src, "sm_90").unwrap().log).into_iter().map(|k| k.name).collect();
    for want in ["add_bf16", "mul_f32", "cast_f32_bf16", "fill_bf16"] {
        assert!(names.iter().any(|n| n == want), "ptxas report lacks {want}: {names:?}");
    }
}

#[test]
fn compile_matmul_sass_uses_tensor_cores() {
    let Some(tk) = toolkit() else { return };
    let Some(nvdisasm) = &tk.nvdisasm else {
        if std::env::var("SOLAR_REQUIRE_NVRTC").as_deref() == Ok("1") {
            panic!("SOLAR_REQUIRE_NVRTC=1 but nvdisasm was not found (nvidia-cuda-nvdisasm wheel)");
        }
        eprintln!("skipping: no nvdisasm");
        return;
    };
    let src = SOURCES.iter().find(|s| s.name == "matmul").unwrap();
    let dir = tempfile_dir();
    for arch in ARCHES {
        let cubin = compile(src, arch).unwrap().cubin;
        let path = dir.join(format!("matmul-{arch}.cubin"));
        std::fs::write(&path, cubin).unwrap();
        let out = std::process::Command::new(nvdisasm).arg(&path).output().expect("run nvdisasm");
        assert!(out.status.success(), "nvdisasm: {}", String::from_utf8_lossy(&out.stderr));
        let sass = String::from_utf8_lossy(&out.stdout);
        let hmma = sass.matches("HMMA").count() + sass.matches("HGMMA").count();
        eprintln!("{arch}: matmul SASS has {hmma} HMMA/HGMMA instructions");
        assert!(hmma > 0, "{arch}: the matmul SASS has no tensor-core instruction");
    }
    // The Hopper path: warpgroup MMAs (HGMMA), fed from shared memory by descriptors.
    let src = SOURCES.iter().find(|s| s.name == "matmul_sm90").unwrap();
    let path = dir.join("matmul_sm90.cubin");
    std::fs::write(&path, compile(src, "sm_90").unwrap().cubin).unwrap();
    let out = std::process::Command::new(nvdisasm).arg(&path).output().expect("run nvdisasm");
    let sass = String::from_utf8_lossy(&out.stdout);
    let hgmma = sass.matches("HGMMA").count();
    eprintln!("sm_90a: matmul_sm90 SASS has {hgmma} HGMMA instructions");
    assert!(hgmma > 0, "matmul_sm90's SASS has no HGMMA");
    assert!(compile(src, "sm_80").is_err(), "matmul_sm90 exists only on sm_90");
}

#[test]
fn compile_cache_hits_the_second_time() {
    let Some(_) = toolkit() else { return };
    let dir = tempfile_dir();
    std::env::set_var("SOLAR_KERNEL_CACHE", &dir);
    let src = SOURCES.iter().find(|s| s.name == "elementwise").unwrap();
    let (a, first) = cubin_for(src, "sm_80").unwrap();
    let (b, second) = cubin_for(src, "sm_80").unwrap();
    assert_eq!((first, second), (CacheOutcome::Compiled, CacheOutcome::Hit));
    assert_eq!(a, b);
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 1, "one cubin, no temporary left: {files:?}");
    let name = files[0].to_string_lossy().to_string();
    assert!(name.starts_with("elementwise-sm_80-nvrtc") && name.ends_with(".cubin"), "{name}");
}

#[test]
fn compile_error_carries_the_nvrtc_log() {
    let Some(_) = toolkit() else { return };
    let broken = Source {
        name: "broken",
        code: "extern \"C\" __global__ void k(float* y) { y[0] = undefined_name; }\n",
        only: None,
    };
    let err = compile(&broken, "sm_90").err().expect("a broken source must not compile").to_string();
    assert!(err.contains("broken.cu") && err.contains("undefined_name"), "{err}");
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "solar-kernels-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every file in kernels/cu is embedded (a .cu as a source, a .cuh as a header), and every
/// `#include "..."` in them names an embedded header: a new file cannot be left out of the
/// binary (where a device bundle would miss it) or of the cache key. Needs no NVRTC.
#[test]
fn every_kernel_file_is_embedded_and_every_include_resolves() {
    use solar_kernels::sources::HEADERS;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cu");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = SOURCES
        .iter()
        .map(|s| format!("{}.cu", s.name))
        .chain(HEADERS.iter().map(|h| h.name.to_string()))
        .collect();
    embedded.sort();
    assert_eq!(on_disk, embedded, "kernels/cu and sources.rs list different files");
    for (file, text) in SOURCES
        .iter()
        .map(|s| (format!("{}.cu", s.name), s.code))
        .chain(HEADERS.iter().map(|h| (h.name.to_string(), h.code)))
    {
        for line in text.lines().filter(|l| l.trim_start().starts_with("#include \"")) {
            let name = line.split('"').nth(1).unwrap();
            assert!(HEADERS.iter().any(|h| h.name == name), "{file}: includes {name}, which is not embedded");
        }
    }
}

/// The front-end check the launch-constant tests use: a true assertion passes, a false one fails
/// with NVRTC's log quoting it (so those tests can fail).
#[test]
fn compile_checks_launch_constants_by_static_assert() {
    let Some(_) = toolkit() else { return };
    let ok = solar_kernels::check_launch_constants(
        "matmul",
        "static_assert(mm::STAGES == 4, \"stages\");",
        "sm_90",
    );
    assert!(matches!(ok, Ok(Some(()))), "{ok:?}");
    let bad = solar_kernels::check_launch_constants(
        "matmul",
        "static_assert(mm::STAGES == 5, \"stages five\");",
        "sm_90",
    );
    let msg = bad.unwrap_err().to_string();
    assert!(msg.contains("stages five"), "{msg}");
}

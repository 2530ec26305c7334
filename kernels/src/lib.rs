//! solar-kernels: the CUDA C sources (one `.cu` per op family, forward and backward side by
//! side) and how they become loadable code: NVRTC compiles a source for one real architecture
//! (sm_80, sm_90, ...) to a cubin at first use, and the cubin is cached on disk keyed by the
//! source hash, the architecture and the NVRTC version. No nvcc at build time: `cargo build`
//! works on any machine, and the compile checks run wherever NVRTC can be loaded.

pub mod cache;
pub mod emu;
pub mod nvrtc;
pub mod report;
pub mod sources;
pub mod toolkit;

pub use cache::{cubin_for, CacheOutcome};
pub use report::{parse_ptxas_log, KernelReport};
pub use sources::{Source, SOURCES};
pub use toolkit::Toolkit;

#[derive(Clone, Debug, thiserror::Error)]
pub enum KernelError {
    #[error("NVRTC is not available: {0}")]
    NvrtcMissing(String),
    #[error("NVRTC: {0}")]
    Nvrtc(String),
    #[error("NVRTC could not compile {file}.cu:\n{log}")]
    Compile { file: String, log: String },
    #[error("no kernel source named '{0}'")]
    UnknownSource(String),
    #[error("{module}.cu is built for {only} only, not for {arch}")]
    NotForArch { module: String, only: String, arch: String },
    #[error("kernel cache {path}: {msg}")]
    Cache { path: String, msg: String },
}

/// NVRTC options for `arch` (e.g. "sm_90"): a cubin for exactly that architecture, since a
/// newer NVRTC than the driver makes PTX the driver cannot load; -Xptxas -v so the log has each
/// kernel's registers, shared memory and spills.
pub fn compile_options(arch: &str, include: &std::path::Path) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".into(),
        "--use_fast_math".into(),
        "--fmad=true".into(),
        "-lineinfo".into(),
        "--ptxas-options=-v".into(),
        format!("--include-path={}", include.display()),
        format!("-DSOLAR_ARCH={}", arch.trim_start_matches("sm_").trim_end_matches('a')),
    ]
}

/// The target `source` is compiled for on a device of `arch`, or the error saying it has none.
pub fn target(source: &Source, arch: &str) -> Result<String, KernelError> {
    source.target_for(arch).map(str::to_string).ok_or_else(|| KernelError::NotForArch {
        module: source.name.into(),
        only: source.only.unwrap_or_default().into(),
        arch: arch.into(),
    })
}

/// Compiles `source` for a device of `arch` now (no cache): the cubin and the NVRTC log.
pub fn compile(source: &Source, arch: &str) -> Result<nvrtc::Compiled, KernelError> {
    let tk = Toolkit::get()?;
    let target = target(source, arch)?;
    tk.nvrtc.compile(source.name, source.code, sources::HEADERS, &compile_options(&target, &tk.include))
}

/// Runs NVRTC's front end on the source `module` with `asserts` (C++ `static_assert`s)
/// appended, for a device of `arch`: how a launcher's constants (tile sizes, dynamic shared
/// memory, block shapes) and a kernel's data layouts (kernels/tests/*_layout.cuh) are checked
/// without a GPU. A false assertion fails with NVRTC's log naming it. `Ok(None)` when NVRTC is
/// missing and `SOLAR_REQUIRE_NVRTC` is not 1 (the caller's test then skips).
pub fn check_launch_constants(module: &str, asserts: &str, arch: &str) -> Result<Option<()>, KernelError> {
    let src = sources::source(module).ok_or_else(|| KernelError::UnknownSource(module.into()))?;
    let tk = match Toolkit::get() {
        Ok(tk) => tk,
        Err(e) if std::env::var("SOLAR_REQUIRE_NVRTC").as_deref() != Ok("1") => {
            eprintln!("skipping the launch-constant check of {module}.cu: {e}");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let code = format!("{}\n// Launcher constants, checked:\n{asserts}\n", src.code);
    let target = target(src, arch)?;
    tk.nvrtc.check_syntax(src.name, &code, sources::HEADERS, &compile_options(&target, &tk.include))?;
    Ok(Some(()))
}

//! Finding NVRTC and the CUDA headers (cuda_bf16.h and what it includes) on this machine.
//! Looked for in order: SOLAR_NVRTC / SOLAR_CUDA_INCLUDE (explicit paths), a CUDA toolkit
//! (SOLAR_CUDA_ROOT, CUDA_HOME, CUDA_PATH, /usr/local/cuda), the NVIDIA wheels that
//! scripts/test.sh installs (SOLAR_CUDA_WHEELS, default ~/.cache/solar/cuda-13.0), and the
//! wheels of the python3 environment (how a device machine with PyTorch ships them).

use crate::nvrtc::Nvrtc;
use crate::KernelError;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// NVRTC loaded, with the include folder its compilations use.
pub struct Toolkit {
    pub nvrtc: Nvrtc,
    pub include: PathBuf,
    /// Where nvdisasm lives, when found (SASS checks; not needed to run).
    pub nvdisasm: Option<PathBuf>,
}

/// The folders a toolkit may live in, most explicit first.
fn roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for var in ["SOLAR_CUDA_ROOT", "CUDA_HOME", "CUDA_PATH"] {
        if let Some(v) = std::env::var_os(var) {
            roots.push(PathBuf::from(v));
        }
    }
    roots.push(PathBuf::from("/usr/local/cuda"));
    let wheels = std::env::var_os("SOLAR_CUDA_WHEELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/solar/cuda-13.0")));
    roots.extend(wheel_roots(wheels));
    roots
}

/// Where the NVIDIA wheels put a toolkit inside a site-packages (or --target) folder.
fn wheel_roots(sites: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    sites
        .into_iter()
        .flat_map(|site| ["nvidia/cu13", "nvidia/cuda_nvrtc", "nvidia/cuda_runtime"].map(|d| site.join(d)))
        .collect()
}

/// site-packages folders of `python3`, if there is one (asked once; silent when absent).
fn python_site_packages() -> Vec<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import site,sys; print('\\n'.join(site.getsitepackages()+[site.getusersitepackages()]))",
        ])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            String::from_utf8_lossy(&o.stdout).lines().map(PathBuf::from).collect()
        }
        _ => Vec::new(),
    }
}

fn find_nvrtc(roots: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SOLAR_NVRTC") {
        return Some(PathBuf::from(p));
    }
    let names = ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"];
    roots
        .iter()
        .flat_map(|r| ["lib64", "lib"].map(|l| r.join(l)))
        .find_map(|dir| names.iter().map(|n| dir.join(n)).find(|p| p.exists()))
}

fn find_include(roots: &[PathBuf]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SOLAR_CUDA_INCLUDE") {
        return Some(PathBuf::from(p));
    }
    roots.iter().map(|r| r.join("include")).find(|d| d.join("cuda_bf16.h").exists())
}

fn find_nvdisasm(roots: &[PathBuf]) -> Option<PathBuf> {
    roots.iter().map(|r| r.join("bin/nvdisasm")).find(|p| p.exists())
}

impl Toolkit {
    /// Finds and loads the toolkit; the error says what is missing and where it looked.
    pub fn discover() -> Result<Toolkit, KernelError> {
        let mut roots = roots();
        // Asking python3 costs a process start; only when the usual places lack something.
        if find_nvrtc(&roots).is_none() || find_include(&roots).is_none() {
            roots.extend(wheel_roots(python_site_packages()));
        }
        let looked = || roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ");
        let nvrtc_path = find_nvrtc(&roots).ok_or_else(|| {
            KernelError::NvrtcMissing(format!(
                "no libnvrtc found (set SOLAR_NVRTC, or install a CUDA toolkit or the \
                 nvidia-cuda-nvrtc wheel; looked in {})",
                looked()
            ))
        })?;
        let include = find_include(&roots).ok_or_else(|| {
            KernelError::NvrtcMissing(format!(
                "no CUDA headers (cuda_bf16.h) found (set SOLAR_CUDA_INCLUDE, or install the \
                 nvidia-cuda-runtime wheel; looked in {})",
                looked()
            ))
        })?;
        Ok(Toolkit { nvrtc: Nvrtc::load(&nvrtc_path)?, include, nvdisasm: find_nvdisasm(&roots) })
    }

    /// The process-wide toolkit, discovered on first use.
    pub fn get() -> Result<&'static Toolkit, KernelError> {
        static TOOLKIT: OnceLock<Result<Toolkit, KernelError>> = OnceLock::new();
        TOOLKIT.get_or_init(Toolkit::discover).as_ref().map_err(|e| e.clone())
    }
}

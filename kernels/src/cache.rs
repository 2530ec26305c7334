//! The on-disk cubin cache. Key: a hash of the source, the shared header and the options, with
//! the architecture and NVRTC version in the file name, so a new toolkit or an edited kernel
//! never loads a stale cubin. Folder: SOLAR_KERNEL_CACHE, else $XDG_CACHE_HOME/solar/kernels,
//! else ~/.cache/solar/kernels. Writes go to a temporary file renamed into place, so two
//! processes compiling at once never read half a cubin.

use crate::sources::{self, Source};
use crate::{compile_options, KernelError, Toolkit};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("SOLAR_KERNEL_CACHE") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("solar/kernels")
}

/// The cubin of `source` for `arch`, from the cache or compiled now (and then cached). A cache
/// that cannot be written is not an error: the cubin is still returned.
pub fn cubin_for(source: &Source, arch: &str) -> Result<(Vec<u8>, CacheOutcome), KernelError> {
    let tk = Toolkit::get()?;
    let arch = crate::target(source, arch)?;
    let arch = arch.as_str();
    let opts = compile_options(arch, &tk.include);
    let joined = opts.join("\n");
    let mut parts = sources::key_parts(source);
    parts.push(joined.as_bytes());
    let key = sources::fnv1a(&parts);
    let (maj, min) = tk.nvrtc.version;
    let path = cache_dir().join(format!("{}-{arch}-nvrtc{maj}.{min}-{key:016x}.cubin", source.name));
    if let Ok(bytes) = std::fs::read(&path) {
        if !bytes.is_empty() {
            return Ok((bytes, CacheOutcome::Hit));
        }
    }
    let compiled = tk.nvrtc.compile(source.name, source.code, sources::HEADERS, &opts)?;
    let _ = write_atomic(&path, &compiled.cubin);
    Ok((compiled.cubin, CacheOutcome::Compiled))
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a folder");
    std::fs::create_dir_all(dir)?;
    let tmp =
        dir.join(format!(".{}.{}.tmp", path.file_name().unwrap().to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

//! A minimal binding to NVRTC, loaded at run time with libloading from a path we choose
//! (toolkit.rs finds it). Only what compiling one source to a cubin needs: create a program,
//! compile with options, read the log and the cubin. Loading by path, rather than by soname as
//! cudarc does, lets CI use the NVIDIA wheels without LD_LIBRARY_PATH, and a missing library is
//! an error value, never a panic.

use crate::KernelError;
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};

type Program = *mut std::ffi::c_void;
type Status = c_int;

/// The NVRTC entry points Solar calls, resolved once from the loaded library.
pub struct Nvrtc {
    _lib: libloading::Library,
    _builtins: Option<libloading::os::unix::Library>,
    pub path: PathBuf,
    pub version: (i32, i32),
    create: unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> Status,
    compile: unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status,
    log_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    log: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    cubin_size: unsafe extern "C" fn(Program, *mut usize) -> Status,
    cubin: unsafe extern "C" fn(Program, *mut c_char) -> Status,
    destroy: unsafe extern "C" fn(*mut Program) -> Status,
    error_string: unsafe extern "C" fn(Status) -> *const c_char,
}

/// An in-memory header made visible to `#include "name"`.
pub struct Header<'a> {
    pub name: &'a str,
    pub code: &'a str,
}

/// What one compilation produced: the cubin and NVRTC's log (ptxas -v lines included).
pub struct Compiled {
    pub cubin: Vec<u8>,
    pub log: String,
}

impl Nvrtc {
    /// Loads NVRTC from `path`.
    pub fn load(path: &Path) -> Result<Nvrtc, KernelError> {
        let missing = |e: libloading::Error| KernelError::NvrtcMissing(format!("{}: {e}", path.display()));
        // SAFETY: loading NVRTC runs its initializers, which have no preconditions; each symbol
        // is given the signature the NVRTC headers declare for it.
        unsafe {
            let builtins = preload_builtins(path);
            let lib = libloading::Library::new(path).map_err(missing)?;
            let version_fn: libloading::Symbol<unsafe extern "C" fn(*mut c_int, *mut c_int) -> Status> =
                lib.get(b"nvrtcVersion\0").map_err(missing)?;
            let (mut major, mut minor) = (0, 0);
            version_fn(&mut major, &mut minor);
            resolve_symbols(&lib, path).map(|f| Nvrtc {
                path: path.to_path_buf(),
                version: (major, minor),
                create: f.0,
                compile: f.1,
                log_size: f.2,
                log: f.3,
                cubin_size: f.4,
                cubin: f.5,
                destroy: f.6,
                error_string: f.7,
                _lib: lib,
                _builtins: builtins,
            })
        }
    }

    fn check(&self, status: Status, what: &str) -> Result<(), KernelError> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string for any status.
        let msg = unsafe { CStr::from_ptr((self.error_string)(status)) }.to_string_lossy().into_owned();
        Err(KernelError::Nvrtc(format!("{what}: {msg}")))
    }

    /// Compiles `code` (named `name` in messages) with `options`; on failure the error carries
    /// the full NVRTC log.
    pub fn compile(
        &self,
        name: &str,
        code: &str,
        headers: &[Header],
        options: &[String],
    ) -> Result<Compiled, KernelError> {
        self.run(name, code, headers, options, true)
    }

    /// Runs NVRTC's front end only (`-fdevice-syntax-only`: parsing, templates, `static_assert`s,
    /// no code generation), seconds faster than `compile`; the log, or the error with it.
    pub fn check_syntax(
        &self,
        name: &str,
        code: &str,
        headers: &[Header],
        options: &[String],
    ) -> Result<String, KernelError> {
        let mut opts = options.to_vec();
        opts.push("-fdevice-syntax-only".into());
        Ok(self.run(name, code, headers, &opts, false)?.log)
    }

    fn run(
        &self,
        name: &str,
        code: &str,
        headers: &[Header],
        options: &[String],
        want_cubin: bool,
    ) -> Result<Compiled, KernelError> {
        let c = |s: &str| CString::new(s).map_err(|_| KernelError::Nvrtc(format!("{name}: NUL in input")));
        let (src, cname) = (c(code)?, c(name)?);
        let hdr_code: Vec<CString> = headers.iter().map(|h| c(h.code)).collect::<Result<_, _>>()?;
        let hdr_name: Vec<CString> = headers.iter().map(|h| c(h.name)).collect::<Result<_, _>>()?;
        let hdr_code_p: Vec<*const c_char> = hdr_code.iter().map(|s| s.as_ptr()).collect();
        let hdr_name_p: Vec<*const c_char> = hdr_name.iter().map(|s| s.as_ptr()).collect();
        let opts: Vec<CString> = options.iter().map(|o| c(o)).collect::<Result<_, _>>()?;
        let opts_p: Vec<*const c_char> = opts.iter().map(|s| s.as_ptr()).collect();
        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: every pointer is a live NUL-terminated string (or array of them) owned above
        // for the duration of the calls; buffers are sized by the matching *Size call.
        unsafe {
            self.check(
                (self.create)(
                    &mut prog,
                    src.as_ptr(),
                    cname.as_ptr(),
                    headers.len() as c_int,
                    hdr_code_p.as_ptr(),
                    hdr_name_p.as_ptr(),
                ),
                "nvrtcCreateProgram",
            )?;
            let status = (self.compile)(prog, opts_p.len() as c_int, opts_p.as_ptr());
            let mut n = 0usize;
            (self.log_size)(prog, &mut n);
            let mut buf = vec![0u8; n.max(1)];
            (self.log)(prog, buf.as_mut_ptr() as *mut c_char);
            let log = String::from_utf8_lossy(&buf).trim_end_matches('\0').to_string();
            if status != 0 {
                (self.destroy)(&mut prog);
                return Err(KernelError::Compile { file: name.to_string(), log });
            }
            if !want_cubin {
                (self.destroy)(&mut prog);
                return Ok(Compiled { cubin: Vec::new(), log });
            }
            let mut n = 0usize;
            let r = (self.cubin_size)(prog, &mut n);
            let mut cubin = vec![0u8; n];
            let r2 = if r == 0 { (self.cubin)(prog, cubin.as_mut_ptr() as *mut c_char) } else { r };
            (self.destroy)(&mut prog);
            self.check(r2, "nvrtcGetCUBIN (was the target a real sm_XX architecture?)")?;
            Ok(Compiled { cubin, log })
        }
    }
}

/// NVRTC opens libnvrtc-builtins by soname at its first compile. Loading the builtins that sit
/// beside `nvrtc` first, by full path and globally, makes that lookup find them even when
/// their folder is not on the loader's path (the wheels' case).
unsafe fn preload_builtins(nvrtc: &Path) -> Option<libloading::os::unix::Library> {
    let dir = nvrtc.parent()?;
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            n.starts_with("libnvrtc-builtins.so") && !n.contains(".alt.")
        })
        .collect();
    found.sort();
    let path = found.pop()?;
    let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
    libloading::os::unix::Library::open(Some(&path), flags).ok()
}

type Fns = (
    unsafe extern "C" fn(
        *mut Program,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> Status,
    unsafe extern "C" fn(Program, c_int, *const *const c_char) -> Status,
    unsafe extern "C" fn(Program, *mut usize) -> Status,
    unsafe extern "C" fn(Program, *mut c_char) -> Status,
    unsafe extern "C" fn(Program, *mut usize) -> Status,
    unsafe extern "C" fn(Program, *mut c_char) -> Status,
    unsafe extern "C" fn(*mut Program) -> Status,
    unsafe extern "C" fn(Status) -> *const c_char,
);

/// Resolves every symbol `Nvrtc` holds; a missing one names itself.
unsafe fn resolve_symbols(lib: &libloading::Library, path: &Path) -> Result<Fns, KernelError> {
    unsafe fn get<T: Copy>(lib: &libloading::Library, path: &Path, name: &str) -> Result<T, KernelError> {
        let sym = format!("{name}\0");
        lib.get::<T>(sym.as_bytes())
            .map(|s| *s)
            .map_err(|e| KernelError::NvrtcMissing(format!("{}: symbol {name}: {e}", path.display())))
    }
    Ok((
        get(lib, path, "nvrtcCreateProgram")?,
        get(lib, path, "nvrtcCompileProgram")?,
        get(lib, path, "nvrtcGetProgramLogSize")?,
        get(lib, path, "nvrtcGetProgramLog")?,
        get(lib, path, "nvrtcGetCUBINSize")?,
        get(lib, path, "nvrtcGetCUBIN")?,
        get(lib, path, "nvrtcDestroyProgram")?,
        get(lib, path, "nvrtcGetErrorString")?,
    ))
}

//! NCCL, loaded at run time: the library is found and its functions resolved when a GPU job
//! first asks for it, never linked, so Solar builds and runs without NCCL and a missing NCCL is
//! an error naming what was tried. cudarc's loader is not used: it panics when no library
//! loads, and it does not try `libnccl.so.2`, the name real installs (system packages, the
//! nvidia-nccl-cu12/cu13 wheels) ship. Only the types come from cudarc's `nccl` feature.
//!
//! Search order: `SOLAR_NCCL_LIB` (a path or a name) alone when it is set, so a wrong path is
//! an error instead of another NCCL found behind it; otherwise `libnccl.so.2`, then
//! `libnccl.so` (both through the dynamic loader: LD_LIBRARY_PATH, the ld.so cache).
//!
//! Every function returns ncclResult_t; it is read as a plain int, since a library newer than
//! cudarc's bindings may return codes the Rust enum does not list.

use cudarc::driver::sys;
use cudarc::nccl::sys::{ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclUniqueId};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// NCCL 2.10 brought bf16 (`ncclBfloat16`); older libraries are refused.
const MIN_VERSION: c_int = 21000;

type Stream = *mut c_void;

/// ncclAllReduce's and ncclReduceScatter's shape: (send, recv, count, dtype, op, comm, stream).
type ReduceFn = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    ncclDataType_t,
    ncclRedOp_t,
    ncclComm_t,
    Stream,
) -> c_int;

/// The NCCL functions Solar calls, resolved from one library.
pub(crate) struct Nccl {
    /// The path or name that loaded.
    pub from: String,
    /// major * 10000 + minor * 100 + patch (NCCL >= 2.9's encoding).
    pub version: c_int,
    pub get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> c_int,
    pub comm_init_rank: unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> c_int,
    pub comm_destroy: unsafe extern "C" fn(ncclComm_t) -> c_int,
    pub comm_abort: unsafe extern "C" fn(ncclComm_t) -> c_int,
    comm_get_async_error: unsafe extern "C" fn(ncclComm_t, *mut c_int) -> c_int,
    pub all_reduce: ReduceFn,
    /// (send, recv, recvcount, ...): recvcount elements land on each rank.
    pub reduce_scatter: ReduceFn,
    /// (send, recv, sendcount, ...): rank r's sendcount elements land at recv + r * sendcount.
    pub all_gather:
        unsafe extern "C" fn(*const c_void, *mut c_void, usize, ncclDataType_t, ncclComm_t, Stream) -> c_int,
    /// (send, recv, count, dtype, root, ...).
    pub broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        Stream,
    ) -> c_int,
    get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    /// Kept loaded for the life of the process (the function pointers point into it).
    _lib: libloading::Library,
}

impl Nccl {
    /// NCCL's words for result `code`.
    pub fn error_string(&self, code: c_int) -> String {
        // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any code.
        let p = unsafe { (self.get_error_string)(code) };
        if p.is_null() {
            return format!("NCCL error {code}");
        }
        // SAFETY: as above, non-null.
        format!("{} (NCCL error {code})", unsafe { CStr::from_ptr(p) }.to_string_lossy())
    }

    /// Ok for ncclSuccess, else `what` and NCCL's words for `code`.
    pub fn check(&self, what: &str, code: c_int) -> Result<(), String> {
        match code {
            0 => Ok(()),
            c => Err(format!("{what}: {}", self.error_string(c))),
        }
    }

    /// Waits until `stream` has run everything queued on it, polling `comm`'s asynchronous
    /// error meanwhile: a peer that fails or disconnects ends the wait with NCCL's reason
    /// instead of a hang.
    ///
    /// # Safety
    /// `comm` is a live communicator, `stream` a live stream of the current context.
    pub unsafe fn wait(&self, comm: ncclComm_t, stream: sys::CUstream, what: &str) -> Result<(), String> {
        let began = Instant::now();
        loop {
            // SAFETY: see the contract.
            match unsafe { sys::cuStreamQuery(stream) } {
                sys::CUresult::CUDA_SUCCESS => return Ok(()),
                sys::CUresult::CUDA_ERROR_NOT_READY => {}
                other => return Err(format!("{what}: CUDA {other:?}")),
            }
            let mut async_error: c_int = 0;
            // SAFETY: see the contract; an out-pointer to one int.
            self.check(what, unsafe { (self.comm_get_async_error)(comm, &mut async_error) })?;
            // 7 is ncclInProgress, which only non-blocking communicators report.
            if async_error != 0 && async_error != 7 {
                return Err(format!("{what}: {}", self.error_string(async_error)));
            }
            // Spin through the short collectives of a step; back off in long waits.
            if began.elapsed() > Duration::from_millis(2) {
                std::thread::sleep(Duration::from_micros(50));
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// "2.27.3".
    pub fn version_string(&self) -> String {
        version_string(self.version)
    }

    /// Loads the first of `candidates` that opens and resolves every function, or says why
    /// each one failed.
    pub fn load(candidates: &[String]) -> Result<Nccl, String> {
        let mut why = Vec::new();
        for c in candidates {
            match Self::load_one(c) {
                Ok(n) => return Ok(n),
                // dlopen's own message starts with the name already.
                Err(e) if e.starts_with(c.as_str()) => why.push(e),
                Err(e) => why.push(format!("{c}: {e}")),
            }
        }
        Err(why.join("; "))
    }

    fn load_one(name: &str) -> Result<Nccl, String> {
        // SAFETY: loading runs the library's initialisers; NCCL's have no preconditions.
        let lib =
            unsafe { libloading::Library::new(name) }.map_err(|e| match std::error::Error::source(&e) {
                Some(why) => why.to_string(),
                None => e.to_string(),
            })?;
        /// A function of `lib` as the type it is stored as.
        fn sym<T: Copy>(lib: &libloading::Library, name: &str) -> Result<T, String> {
            // SAFETY: each field's type is the C signature of the symbol of that name (nccl.h).
            unsafe { lib.get::<T>(name.as_bytes()) }
                .map(|s| *s)
                .map_err(|_| format!("loaded, but has no {name}: not an NCCL library?"))
        }
        let get_version: unsafe extern "C" fn(*mut c_int) -> c_int = sym(&lib, "ncclGetVersion")?;
        let mut version: c_int = 0;
        // SAFETY: writes one int.
        let r = unsafe { get_version(&mut version) };
        if r != 0 || version < MIN_VERSION {
            return Err(format!(
                "NCCL version code {version} (result {r}); Solar needs NCCL 2.10 or newer (bf16)"
            ));
        }
        Ok(Nccl {
            from: name.to_string(),
            version,
            get_unique_id: sym(&lib, "ncclGetUniqueId")?,
            comm_init_rank: sym(&lib, "ncclCommInitRank")?,
            comm_destroy: sym(&lib, "ncclCommDestroy")?,
            comm_abort: sym(&lib, "ncclCommAbort")?,
            comm_get_async_error: sym(&lib, "ncclCommGetAsyncError")?,
            all_reduce: sym(&lib, "ncclAllReduce")?,
            reduce_scatter: sym(&lib, "ncclReduceScatter")?,
            all_gather: sym(&lib, "ncclAllGather")?,
            broadcast: sym(&lib, "ncclBroadcast")?,
            get_error_string: sym(&lib, "ncclGetErrorString")?,
            _lib: lib,
        })
    }
}

/// NCCL's version code (major * 10000 + minor * 100 + patch since 2.9) as "2.27.3".
fn version_string(v: c_int) -> String {
    format!("{}.{}.{}", v / 10000, (v / 100) % 100, v % 100)
}

/// The libraries tried, in order, given the value of `SOLAR_NCCL_LIB`.
pub(crate) fn candidates(solar_nccl_lib: Option<&str>) -> Vec<String> {
    match solar_nccl_lib {
        Some(p) if !p.is_empty() => vec![p.to_string()],
        _ => vec!["libnccl.so.2".into(), "libnccl.so".into()],
    }
}

/// The process's NCCL, loaded at the first call (the outcome is kept: a failure is said once
/// and not retried). The error says what was tried and how to point Solar at a library.
pub(crate) fn nccl() -> Result<&'static Nccl, String> {
    static LOADED: OnceLock<Result<Nccl, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let env = std::env::var("SOLAR_NCCL_LIB").ok();
            Nccl::load(&candidates(env.as_deref())).map_err(|why| {
                let hint = if env.is_some() {
                    "SOLAR_NCCL_LIB names the library to load; unset it to search for libnccl.so.2"
                } else {
                    "install NCCL (libnccl2, or pip's nvidia-nccl-cu12/cu13 wheel) and put its lib folder on LD_LIBRARY_PATH, or set SOLAR_NCCL_LIB to the library's path; SOLAR_COMM=mpi carries CUDA tensors over MPI instead"
                };
                format!("cannot load NCCL: {why}. {hint}")
            })
        })
        .as_ref()
        .map_err(|e| e.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_is_the_variable_alone_or_the_two_sonames() {
        assert_eq!(candidates(Some("/opt/nccl/lib/libnccl.so.2")), vec!["/opt/nccl/lib/libnccl.so.2"]);
        assert_eq!(candidates(None), vec!["libnccl.so.2", "libnccl.so"]);
        assert_eq!(candidates(Some("")), vec!["libnccl.so.2", "libnccl.so"]);
    }

    #[test]
    fn the_default_search_loads_nccl_or_names_both_sonames() {
        match Nccl::load(&candidates(None)) {
            Ok(n) => {
                assert!(n.version >= MIN_VERSION && (n.from == "libnccl.so.2" || n.from == "libnccl.so"));
                eprintln!("NCCL {} from {}", n.version_string(), n.from);
            }
            Err(e) => {
                let a = e.find("libnccl.so.2: ").unwrap_or_else(|| panic!("{e}"));
                let b = e.find("libnccl.so: ").unwrap_or_else(|| panic!("{e}"));
                assert!(a < b, "{e}");
            }
        }
        assert_eq!(version_string(22703), "2.27.3");
        assert_eq!(version_string(21005), "2.10.5");
    }

    #[test]
    fn a_missing_file_or_a_library_without_nccl_is_an_error_naming_it() {
        let e = Nccl::load(&["/nonexistent/libnccl.so.2".into()]).err().expect("no such file");
        assert!(e.starts_with("/nonexistent/libnccl.so.2: "), "{e}");
        // A real shared library that is not NCCL: its missing function is named.
        let e = Nccl::load(&["libc.so.6".into()]).err().expect("libc is not NCCL");
        assert!(e.contains("libc.so.6: loaded, but has no ncclGetVersion"), "{e}");
        // Every candidate's failure is reported, in order.
        let e = Nccl::load(&["/nonexistent/a.so".into(), "libc.so.6".into()]).err().unwrap();
        let (a, b) = (e.find("/nonexistent/a.so").unwrap(), e.find("libc.so.6").unwrap());
        assert!(a < b, "{e}");
    }
}

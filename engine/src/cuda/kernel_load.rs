//! Which code a launch runs: on the driver, the kernel's module NVRTC-compiled for the device
//! at first use (cubin cache on disk) and its function, granted the dynamic shared memory it
//! asks for; on the emulator, the kernel's entry in the emulator's static table. Split from
//! executor.rs, which launches what this loads.

use super::launch::Kernel;
use super::Driver;
use super::{launch_err, Gpu};
use crate::error::{Error, Result};
use cudarc::driver::{sys, CudaFunction, CudaModule};
use std::collections::HashMap;
use std::sync::Arc;

/// A loaded kernel and the dynamic shared memory a block it has been granted so far.
pub(crate) type LoadedKernel = (CudaFunction, usize);

/// The emulator's kernel `k`, looked up once per process (the table is static; a lookup per
/// launch would rebuild it).
pub(super) fn emu_kernel(k: &Kernel) -> Option<solar_kernels::emu::EmuKernel> {
    type Table = HashMap<(&'static str, &'static str), solar_kernels::emu::EmuKernel>;
    static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    let table = TABLE
        .get_or_init(|| solar_kernels::emu::kernels().into_iter().map(|e| ((e.module, e.name), e)).collect());
    table.get(&(k.module, k.name)).copied()
}

fn set_max_dynamic_smem(op: &'static str, f: &CudaFunction, bytes: usize) -> Result<()> {
    f.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes as i32)
        .map_err(launch_err(op))
}

impl Gpu {
    /// The kernel `k` loaded on the driver, allowed `bytes` of dynamic shared memory a block:
    /// above the default 48 KiB a kernel must opt in (done once per kernel and size, not per
    /// launch), and past the device's opt-in limit it is an error of `op` naming both sizes.
    pub(super) fn function(
        &self,
        d: &Driver,
        op: &'static str,
        k: &'static Kernel,
        bytes: usize,
    ) -> Result<CudaFunction> {
        let key = (k.module, k.name);
        let mut fns = d.functions.lock().unwrap();
        if let Some((f, granted)) = fns.get_mut(&key) {
            if bytes > 48 * 1024 && bytes > *granted {
                set_max_dynamic_smem(op, f, bytes)?;
                *granted = bytes;
            }
            return Ok(f.clone());
        }
        // Loading compiles at first use; the function lock is dropped meanwhile so a long
        // NVRTC compile does not hold up launches of kernels already loaded.
        drop(fns);
        let m = self.module(d, k.module)?;
        let f = m.load_function(k.name).map_err(|e| {
            Error::invalid("cuda", format!("kernel {} not found in {}.cu: {e:?}", k.name, k.module))
        })?;
        let granted = if bytes > 48 * 1024 {
            set_max_dynamic_smem(op, &f, bytes)?;
            bytes
        } else {
            0
        };
        let mut fns = d.functions.lock().unwrap();
        let entry = fns.entry(key).or_insert((f, 0));
        entry.1 = entry.1.max(granted);
        Ok(entry.0.clone())
    }

    fn module(&self, d: &Driver, module: &'static str) -> Result<Arc<CudaModule>> {
        let mut mods = d.modules.lock().unwrap();
        if let Some(m) = mods.get(module) {
            return Ok(m.clone());
        }
        let src = solar_kernels::sources::source(module)
            .ok_or_else(|| Error::invalid("cuda", format!("no kernel source {module}.cu")))?;
        let (cubin, _) =
            solar_kernels::cubin_for(src, &self.arch).map_err(|e| Error::invalid("cuda", e.to_string()))?;
        let m = d
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
            .map_err(|e| Error::invalid("cuda", format!("loading {module}.cu for {}: {e:?}", self.arch)))?;
        mods.insert(module, m.clone());
        Ok(m)
    }

    pub(super) fn smem_fits(&self, op: &'static str, k: &Kernel, bytes: usize) -> Result<()> {
        if bytes > self.smem_optin {
            return Err(Error::invalid(
                op,
                format!(
                    "{} needs {bytes} bytes of shared memory a block; this device has {}",
                    k.name, self.smem_optin
                ),
            ));
        }
        Ok(())
    }
}

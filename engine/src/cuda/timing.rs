//! GPU timing for benchmarks: CUDA events around a closure's launches (device time, not host
//! time), the device's L2 size (inputs are rotated over more than that), and the measured
//! device-to-device copy bandwidth that memory-bound kernels are judged against. Driver only:
//! the emulator's times would say nothing about a GPU, so it refuses with an error.

use super::{launch_err, Gpu};
use crate::error::Result;
use cudarc::driver::sys;

const REFUSED: &str = "time kernels (timings come only from a device)";

/// Milliseconds of device time the launches of `f` take (events recorded before and after on
/// the GPU's stream; waits for the second).
pub fn time_ms(gpu: &Gpu, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let d = gpu.driver("cuda timing", REFUSED)?;
    let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let start = d.ctx.new_event(flags).map_err(launch_err("cuda event"))?;
    let end = d.ctx.new_event(flags).map_err(launch_err("cuda event"))?;
    start.record(&d.stream).map_err(launch_err("cuda event"))?;
    f()?;
    end.record(&d.stream).map_err(launch_err("cuda event"))?;
    end.synchronize().map_err(launch_err("cuda event"))?;
    Ok(start.elapsed_ms(&end).map_err(launch_err("cuda event"))? as f64)
}

/// The L2 cache size in bytes (50 MB on H100/H200, and what the emulator says).
pub fn l2_bytes(gpu: &Gpu) -> usize {
    match gpu.driver("cuda l2", "") {
        Ok(d) => d
            .ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
            .map_or(50 << 20, |b| b as usize),
        Err(_) => 50 << 20,
    }
}

/// Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written, the median
/// of `repeats` copies of a `bytes`-sized buffer (much larger than L2).
pub fn copy_gbps(gpu: &Gpu, bytes: usize, repeats: usize) -> Result<f64> {
    gpu.driver("cuda timing", REFUSED)?;
    let n = bytes / 4;
    let src = gpu.zeros::<f32>(n)?;
    let mut dst = gpu.zeros::<f32>(n)?;
    gpu.copy(&src, &mut dst)?;
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        times.push(time_ms(gpu, || gpu.copy(&src, &mut dst))?);
    }
    times.sort_by(f64::total_cmp);
    let ms = times[times.len() / 2];
    Ok(2.0 * (n * 4) as f64 / (ms * 1e-3) / 1e9)
}

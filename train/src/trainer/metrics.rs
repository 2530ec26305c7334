//! OUT/metrics.jsonl: one JSON object per step (loss, lr, grad norm, tokens processed and
//! scored, both per second, MFU on a GPU (mfu.rs), and the memory the run has taken so far)
//! and per held-out evaluation. On resume the file is cut back to the checkpoint's step, so it
//! reads as if the run was never interrupted. What the user sees while it runs is progress.rs.

use crate::error::{Result, TrainError};
use serde_json::{json, Value};
use solar_engine::Device;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const METRICS_FILE: &str = "metrics.jsonl";

pub struct MetricsLog {
    file: File,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens OUT/metrics.jsonl, keeping only records of steps <= `keep_through` (0: none).
    pub fn open(out: &Path, keep_through: usize) -> Result<MetricsLog> {
        let path = out.join(METRICS_FILE);
        let kept: Vec<String> = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s as usize <= keep_through)
            })
            .map(String::from)
            .collect();
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| TrainError::file(&path, format!("cannot open: {e}")))?;
        for l in kept {
            writeln!(file, "{l}").map_err(|e| TrainError::file(&path, format!("cannot write: {e}")))?;
        }
        Ok(MetricsLog { file, path })
    }

    pub fn record(&mut self, v: &Value) -> Result<()> {
        writeln!(self.file, "{v}")
            .and_then(|()| self.file.flush())
            .map_err(|e| TrainError::file(&self.path, format!("cannot write: {e}")))
    }
}

/// A step line's memory fields: `peak_alloc_bytes`, the engine's high-water of what it holds
/// on `device` since the run started (tensor storage on the CPU, device buffers on CUDA:
/// solar_engine::alloc_stats), and `peak_rss_bytes`, the process's peak resident set.
pub fn memory_fields(device: Device) -> Value {
    json!({
        "peak_alloc_bytes": solar_engine::alloc_stats::on(device).peak(),
        "peak_rss_bytes": peak_rss_bytes(),
    })
}

/// getrusage's ru_maxrss in bytes (Linux reports KiB); 0 if the call fails.
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    (ru.ru_maxrss.max(0) as u64).saturating_mul(1024)
}

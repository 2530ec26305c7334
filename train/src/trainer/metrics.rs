//! What a run reports: one line per logging step on stderr (step/total, loss, lr, grad norm,
//! tokens/s, ETA; redrawn in place on a terminal, which is the progress display), and
//! OUT/metrics.jsonl with one JSON object per step (and per held-out evaluation). On resume the
//! file is cut back to the checkpoint's step, so it reads as if the run was never interrupted.

use crate::error::{Result, TrainError};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

pub const METRICS_FILE: &str = "metrics.jsonl";

pub struct MetricsLog {
    file: File,
    path: PathBuf,
    terminal: bool,
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
        Ok(MetricsLog { file, path, terminal: std::io::stderr().is_terminal() })
    }

    pub fn record(&mut self, v: &Value) -> Result<()> {
        writeln!(self.file, "{v}")
            .and_then(|()| self.file.flush())
            .map_err(|e| TrainError::file(&self.path, format!("cannot write: {e}")))
    }

    /// Prints a progress line: in place on a terminal, one per call otherwise.
    pub fn show(&self, line: &str, last: bool) {
        if self.terminal {
            eprint!("\r\x1b[2K{line}");
            if last {
                eprintln!();
            }
        } else {
            eprintln!("{line}");
        }
    }
}

/// h:mm:ss
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// One training log line.
pub fn format_step(
    step: usize,
    total: usize,
    loss: f64,
    lr: f64,
    grad_norm: f64,
    tok_s: f64,
    eta_s: f64,
) -> String {
    format!(
        "step {step}/{total} | loss {loss:.4} | lr {lr:.3e} | grad norm {grad_norm:.3} | {tok_s:.0} tok/s | ETA {}",
        format_duration(eta_s)
    )
}

//! Byte progress of `upscale`, `merge` and model loads (every command's, the training stages'
//! and a resumed checkpoint's) as the user sees it: on a terminal an indicatif bar on stderr in
//! bytes (done / total, rate, ETA), cleared when the work ends; off a terminal nothing while it
//! runs, so logs and `--json` output stay as they were. Upscale's and merge's summary lines then
//! say how many bytes went through and how fast.

use crate::error::Result;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use solar_model::checkpoint::OnBytes;
use solar_model::Llama;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct ByteBar {
    bar: Option<ProgressBar>,
    done: Arc<AtomicU64>,
    began: Instant,
}

impl ByteBar {
    /// A bar labelled `label` when stderr is a terminal, else a silent counter.
    pub fn new(label: &str) -> ByteBar {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(
                "{prefix:>12} [{bar:24.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> ");
            ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_prefix(label.to_string())
        });
        ByteBar { bar, done: Arc::new(AtomicU64::new(0)), began: Instant::now() }
    }

    /// The callback to hand the checkpoint reader or writer.
    pub fn on_bytes(&self) -> OnBytes {
        let (bar, done) = (self.bar.clone(), self.done.clone());
        OnBytes::new(move |n, total| {
            done.store(n, Ordering::Relaxed);
            if let Some(bar) = &bar {
                bar.set_length(total);
                bar.set_position(n);
            }
        })
    }

    /// Clears the bar; returns e.g. "1.20 GiB in 3.4 s, 361.41 MiB/s" for the summary line.
    pub fn finish(&self) -> String {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let (bytes, secs) = (self.done.load(Ordering::Relaxed), self.began.elapsed().as_secs_f64());
        let rate = HumanBytes((bytes as f64 / secs.max(1e-9)) as u64);
        format!("{} in {secs:.1} s, {rate}/s", HumanBytes(bytes))
    }
}

impl Drop for ByteBar {
    /// Work that stops early (an error) leaves no half-drawn bar behind.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.as_ref().filter(|b| !b.is_finished()) {
            bar.finish_and_clear();
        }
    }
}

/// Loads a model folder as `Llama::load` does, with a byte bar on a terminal while the
/// parameters are read.
pub fn load_llama(dir: &Path) -> Result<Llama> {
    let bar = ByteBar::new("load");
    let model = Llama::load_reporting(dir, &bar.on_bytes())?;
    bar.finish();
    Ok(model)
}

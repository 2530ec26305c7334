//! What a run shows while it trains. On a terminal: one indicatif bar per run with step/total,
//! loss, tokens/s (every token processed, scored ones beside it), MFU on a GPU and an ETA,
//! redrawn every step and left on screen when the run ends, so a pipeline of runs (the demo)
//! reads as a list of finished bars. Anywhere else (CI, a file): a plain line every
//! --log-every steps, which is what logs and tests read. Messages during a run go above the
//! bar, never through it.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// One step's numbers, as shown.
#[derive(Clone, Copy, Debug)]
pub struct StepView {
    pub step: usize,
    pub total: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Every token the step processed, per second.
    pub tok_s: f64,
    /// Scored units (tokens, or pairs) per second.
    pub scored_s: f64,
    /// Model FLOPs utilization (0..1), on a GPU whose peak is known (mfu.rs).
    pub mfu: Option<f64>,
    pub eta_s: f64,
}

pub struct Progress {
    bar: Option<ProgressBar>,
    log_every: usize,
    unit: &'static str,
}

/// h:mm:ss
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The throughput part of a line: all tokens, then the scored units.
fn throughput(v: &StepView, unit: &str) -> String {
    let scored = if unit == "tokens" { "scored tok/s".to_string() } else { format!("{unit}/s") };
    let mfu = v.mfu.map_or(String::new(), |m| format!(" | MFU {:.1}%", 100.0 * m));
    format!("{:.0} tok/s ({:.0} {scored}){mfu}", v.tok_s, v.scored_s)
}

/// One training log line (the non-terminal form).
pub fn format_step(v: &StepView, unit: &str) -> String {
    format!(
        "step {}/{} | loss {:.4} | lr {:.3e} | grad norm {:.3} | {} | ETA {}",
        v.step,
        v.total,
        v.loss,
        v.lr,
        v.grad_norm,
        throughput(v, unit),
        format_duration(v.eta_s)
    )
}

impl Progress {
    /// A bar labelled `label` on a terminal (steps `done` of `total` already behind it, as
    /// after a resume), plain lines otherwise. `unit`: what the objective scores.
    pub fn new(label: &str, total: usize, done: usize, log_every: usize, unit: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(
                // wide_msg: the message is cut to the terminal's width rather than wrapped,
                // which would leave a copy of the bar on every redraw.
                "{prefix:>20} [{bar:24.cyan/blue}] {pos}/{len} ETA {eta} | {wide_msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
                .with_style(style)
                .with_prefix(label.to_string())
                .with_position(done as u64);
            bar.reset_eta();
            bar
        });
        Progress { bar, log_every, unit }
    }

    /// Whether a bar is drawn (a terminal).
    pub fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// Shows step `v`: the bar moves every step; a line is printed every `log_every` steps
    /// and at the last one (never with log_every 0).
    pub fn step(&self, v: &StepView) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("loss {:.4} | {}", v.loss, throughput(v, self.unit)));
                bar.set_position(v.step as u64);
            }
            None if self.log_every > 0 && (v.step.is_multiple_of(self.log_every) || v.step == v.total) => {
                eprintln!("{}", format_step(v, self.unit));
            }
            None => {}
        }
    }

    /// A message for the user, above the bar when there is one.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Leaves the finished bar on screen.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
            // indicatif leaves the cursor at the end of the bar's line: what follows (the next
            // bar, the demo's next stage line) starts on its own line.
            eprintln!();
        }
    }
}

impl Drop for Progress {
    /// A run that stops early (an error, a signal) leaves its bar where it stopped.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.as_ref().filter(|b| !b.is_finished()) {
            bar.abandon();
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_carries_all_and_scored_throughput() {
        let v = StepView {
            step: 3,
            total: 10,
            loss: 1.5,
            lr: 1e-3,
            grad_norm: 0.25,
            tok_s: 2048.0,
            scored_s: 300.0,
            mfu: None,
            eta_s: 75.0,
        };
        let line = format_step(&v, "tokens");
        assert_eq!(
            line,
            "step 3/10 | loss 1.5000 | lr 1.000e-3 | grad norm 0.250 | 2048 tok/s (300 scored tok/s) | ETA 0:01:15"
        );
        assert!(format_step(&v, "pairs").contains("2048 tok/s (300 pairs/s)"));
        // On a GPU with a known peak the MFU follows the throughput, as a percentage.
        let gpu = StepView { mfu: Some(0.4123), ..v };
        assert!(format_step(&gpu, "tokens").contains("(300 scored tok/s) | MFU 41.2% | ETA"));
    }
}

//! Fault injection for the resume tests: `SOLAR_FAULT=WHERE:STEP` makes the process abort at
//! that point of that step (no destructors, no cleanup: as close to SIGKILL as a process can do
//! to itself). WHERE is `after-step` or `in-checkpoint`. Unset in normal runs, it costs nothing.

/// Aborts the process if SOLAR_FAULT names this point and step.
pub fn maybe_abort(point: &str, step: usize) {
    if let Ok(spec) = std::env::var("SOLAR_FAULT") {
        if spec == format!("{point}:{step}") {
            eprintln!("SOLAR_FAULT: aborting {point} at step {step}");
            std::process::abort();
        }
    }
}

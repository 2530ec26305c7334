//! What keeps a user's outputs safe, whatever happens to the run writing them:
//!
//! - place.rs: temporaries beside the target, the atomic swap into place, reclaiming what dead
//!   runs left behind, and rebuilding a folder beside itself with hard links
//! - file.rs: single-file outputs written beside the target and renamed over it, and the
//!   check that a command's output is neither an existing file (without overwrite) nor an input
//! - lock.rs: one writer per output folder (an flock held for the run)
//! - interrupt.rs: SIGINT/SIGTERM recorded and polled, so a run stops between steps, cleanly
//! - fault.rs: `SOLAR_FAULT_AT=N`, which kills a save at its Nth filesystem step (tests)
//!
//! checkpoint::StagingDir builds on these for every model written (init, upscale, merge, the
//! trainer's checkpoints and final model).

pub mod fault;
pub mod file;
pub mod interrupt;
pub mod lock;
pub mod place;

pub use fault::fs_step;
pub use file::{check_file_target, write_file, Input};
pub use lock::OutputLock;

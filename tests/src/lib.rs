//! solar-tests: cross-crate integration tests live in tests/; this library holds what several
//! of them share, such as running the `solar-train` binary (`cli`), snapshotting folders
//! (`folders`) and the tiny model, data and refusal checks they start from (`setup`).

pub mod cli;
pub mod folders;
pub mod setup;

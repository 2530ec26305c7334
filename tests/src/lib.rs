//! solar-tests: cross-crate integration tests live in tests/; this library holds what several
//! of them share, such as running the `solar-train` binary (`cli`) and snapshotting folders
//! (`folders`).

pub mod cli;
pub mod folders;

//! solar-tests: cross-crate integration tests live in tests/; this library holds what several
//! of them share, such as running the `solar-train` binary (`cli`), snapshotting folders
//! (`folders`), running ranks under mpirun (`mpi`) and the tiny model, data and refusal checks they start from (`setup`).

pub mod cli;
pub mod folders;
pub mod mpi;
pub mod setup;

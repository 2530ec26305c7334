//! solar-tests: cross-crate integration tests live in tests/; this library holds what several
//! of them share, such as running the `solar-train` binary (`cli`).

pub mod cli;

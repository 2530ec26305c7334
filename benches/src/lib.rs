//! Shared shapes for the criterion benchmarks (see benches/ops.rs).

//! solar-benches: criterion benchmarks (benches/ops.rs) and the matmul comparison against
//! numpy (matmul_vs_numpy.sh). The benchmark cases themselves live in solar_train::bench, so
//! `solar-train bench` and criterion time the same shapes on the same inputs; this library is
//! the place for builders that only the benchmarks need (none yet).

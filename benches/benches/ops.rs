//! Criterion benchmarks of every op, on the very cases `solar-train bench` times (shapes,
//! inputs and work counts come from solar_train::bench), so the two tools agree on what they
//! measure. Throughput: FLOPs as "elements" for matmul and attention, bytes otherwise.
//! Full run: `cargo bench -p solar-benches --bench ops`; one op: append `-- matmul`.
//! CI's short mode (a couple of minutes on 2 cores):
//!   cargo bench -p solar-benches --bench ops -- --warm-up-time 0.2 --measurement-time 0.5 --sample-size 10

use criterion::{Criterion, SamplingMode, Throughput};
use solar_train::bench::{cases, Case, Work, OP_NAMES};
use std::time::Duration;

/// FLOPs count as criterion "elements", so its elem/s column reads as FLOP/s.
fn throughput_of(work: Work) -> Throughput {
    match work {
        Work::Flops(f) => Throughput::Elements(f as u64),
        Work::Bytes(b) => Throughput::BytesDecimal(b as u64),
    }
}

/// "square 1024x1024x1024": the label alone repeats across ops, the shape alone is cryptic.
fn case_id(case: &Case) -> String {
    let shape: Vec<String> = case.shape.iter().map(|d| d.to_string()).collect();
    format!("{} {}", case.label, shape.join("x"))
}

fn bench_ops(c: &mut Criterion) {
    let all = cases();
    for op in OP_NAMES {
        let mut group = c.benchmark_group(*op);
        // Every case runs for milliseconds or more, where criterion's linear sampling would
        // need far more time than the short CI mode gives it.
        group.sampling_mode(SamplingMode::Flat);
        for case in all.iter().filter(|case| case.op == *op) {
            let mut run =
                case.prepare(0).unwrap_or_else(|e| panic!("{}: preparing the inputs failed: {e}", case.op));
            group.throughput(throughput_of(case.work));
            group.bench_function(case_id(case), |b| {
                b.iter(|| run().unwrap_or_else(|e| panic!("{op} failed: {e}")));
            });
        }
        group.finish();
    }
}

fn main() {
    // The heavy cases take ~0.1 s a run: fewer, shorter samples than criterion's defaults keep
    // a full run near two minutes. Command-line flags still override these.
    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_ops(&mut c);
    c.final_summary();
}

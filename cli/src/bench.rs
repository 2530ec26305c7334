//! `solar-train bench`: runs solar_train's op benchmark suite, printing an aligned table or,
//! with `--json`, exactly one JSON object on stdout. Progress goes to stderr, and only on a
//! terminal, so pipes stay clean.

use crate::common::{CliError, Common};
use clap::builder::PossibleValuesParser;
use clap::Args;
use solar_engine::Device;
use solar_train::bench::{format_table, run_suite, BenchOptions, BenchReport, OP_NAMES};
use std::io::{IsTerminal, Write};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Time only this op (all of them by default).
    #[arg(long, value_name = "NAME", value_parser = PossibleValuesParser::new(OP_NAMES))]
    pub op: Option<String>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Exactly N timed runs per case after one warm-up [default: adaptive, 5 to 50 runs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub repeats: Option<u64>,
}

pub fn run(args: &BenchArgs, common: &Common, device: Device) -> Result<(), CliError> {
    let opts = BenchOptions {
        device,
        op: args.op.clone(),
        repeats: args.repeats.map(|n| n as usize),
        seed: common.seed,
    };
    let threads = rayon::current_num_threads();
    let show_progress = std::io::stderr().is_terminal();
    let results = run_suite(&opts, |case| {
        if show_progress {
            eprintln!("bench: {} ({}) ...", case.op, case.label);
        }
    })?;

    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let report = BenchReport { device: device.to_string(), threads, results };
        serde_json::to_writer(&mut out, &report).map_err(std::io::Error::from).and_then(|()| writeln!(out))
    } else {
        writeln!(out, "device {device}, {threads} threads, f32\n")
            .and_then(|()| write!(out, "{}", format_table(&results)))
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| CliError(format!("cannot write the results to stdout: {e}")))
}

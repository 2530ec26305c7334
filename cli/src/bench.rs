//! `solar-train bench`: parses the bench flags (also settable from the config file) and runs
//! solar_train's op benchmark suite, printing an aligned table or, with `--json`, exactly one
//! JSON object on stdout. Progress goes to stderr, and only on a terminal, so pipes stay clean.

use crate::common::{CliError, Common, ConfigFile};
use clap::builder::PossibleValuesParser;
use clap::Args;
use solar_engine::Device;
use solar_train::bench::{check_op_name, format_table, run_suite, BenchOptions, BenchReport, OP_NAMES};
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

/// The bench settings after merging flags over the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchSettings {
    pub op: Option<String>,
    pub json: bool,
    pub repeats: Option<usize>,
}

impl BenchArgs {
    /// Takes `op`, `json` and `repeats` out of the config file; flags win.
    pub fn resolve(&self, file: &mut ConfigFile) -> Result<BenchSettings, CliError> {
        let op_from_file = file.take_str("op")?;
        if let Some(op) = &op_from_file {
            check_op_name(op).map_err(|_| {
                file.bad_value("op", &format!("unknown op '{op}'; known ops: {}", OP_NAMES.join(", ")))
            })?;
        }
        let json_from_file = file.take_bool("json")?;
        let repeats_from_file = file.take_uint("repeats")?;
        if repeats_from_file == Some(0) {
            return Err(file.bad_value("repeats", "must be at least 1"));
        }
        Ok(BenchSettings {
            op: self.op.clone().or(op_from_file),
            // A bare flag cannot say "false", so the flag only ever turns JSON on.
            json: self.json || json_from_file.unwrap_or(false),
            repeats: self.repeats.or(repeats_from_file).map(|n| n as usize),
        })
    }
}

pub fn run(settings: &BenchSettings, common: &Common, device: Device) -> Result<(), CliError> {
    let opts = BenchOptions { device, op: settings.op.clone(), repeats: settings.repeats, seed: common.seed };
    let threads = rayon::current_num_threads();
    let show_progress = std::io::stderr().is_terminal();
    let results = run_suite(&opts, |case| {
        if show_progress {
            eprintln!("bench: {} ({}) ...", case.op, case.label);
        }
    })?;

    let mut out = std::io::stdout().lock();
    let written = if settings.json {
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

//! `solar-train bench`: runs solar_train's op benchmark suite, printing an aligned table or,
//! with `--json`, exactly one JSON object on stdout. Progress goes to stderr, and only on a
//! terminal, so pipes stay clean.

use crate::common::{CliError, Common};
use clap::builder::PossibleValuesParser;
use clap::Args;
use solar_engine::Device;
use solar_train::bench::{format_table, run_gpu_suite, run_suite, BenchOptions, BenchReport, OP_NAMES};
use std::io::{IsTerminal, Write};

#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:\n  solar-train bench --device cpu --op matmul --json")]
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
    /// Print each CUDA kernel's registers, shared memory, stack and spills (ptxas, through
    /// NVRTC) instead of timing; needs NVRTC, not a GPU.
    #[arg(long)]
    pub kernels: bool,
    /// Architecture for --kernels [default: the GPU's, else sm_90].
    #[arg(long, value_name = "sm_XX")]
    pub arch: Option<String>,
}

/// `--kernels`: the ptxas report of every kernel source, compiled now for `arch`.
fn print_kernels(args: &BenchArgs, device: Device) -> Result<(), CliError> {
    let arch = match (&args.arch, device) {
        (Some(a), _) => a.clone(),
        (None, Device::Cuda(n)) => solar_engine::cuda::Gpu::get(n)?.arch.clone(),
        (None, Device::Cpu) => "sm_90".into(),
    };
    let mut rows = Vec::new();
    for src in solar_kernels::SOURCES.iter().filter(|s| s.target_for(&arch).is_some()) {
        let out = solar_kernels::compile(src, &arch).map_err(|e| CliError(e.to_string()))?;
        for k in solar_kernels::parse_ptxas_log(&out.log) {
            rows.push(serde_json::json!({"source": src.name, "kernel": k.name, "arch": arch,
                "registers": k.registers, "shared_bytes": k.shared_bytes, "stack_bytes": k.stack_bytes,
                "spill_stores": k.spill_stores, "spill_loads": k.spill_loads}));
        }
    }
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(out, "{}", serde_json::json!({"arch": arch, "kernels": rows}))
    } else {
        let mut r = writeln!(
            out,
            "{:<14} {:<44} {:>5} {:>8} {:>6} {:>7}",
            "source", "kernel", "regs", "smem", "stack", "spills"
        );
        for k in &rows {
            // serde_json's Display ignores widths; format the numbers as numbers.
            let n = |key: &str| k[key].as_u64().unwrap_or(0);
            r = r.and_then(|()| {
                writeln!(
                    out,
                    "{:<14} {:<44} {:>5} {:>8} {:>6} {:>3}/{}",
                    k["source"].as_str().unwrap_or(""),
                    k["kernel"].as_str().unwrap_or(""),
                    n("registers"),
                    n("shared_bytes"),
                    n("stack_bytes"),
                    n("spill_stores"),
                    n("spill_loads")
                )
            });
        }
        r
    };
    written.map_err(|e| CliError(format!("cannot write to stdout: {e}")))
}

pub fn run(args: &BenchArgs, common: &Common, device: Device) -> Result<(), CliError> {
    let opts = BenchOptions {
        device,
        op: args.op.clone(),
        repeats: args.repeats.map(|n| n as usize),
        seed: common.seed,
    };
    if args.kernels {
        return print_kernels(args, device);
    }
    let threads = rayon::current_num_threads();
    let show_progress = std::io::stderr().is_terminal();
    let (gpu, results) = if device.is_cuda() {
        let (info, results) = run_gpu_suite(&opts, |label| {
            if show_progress {
                eprintln!("bench: {label} ...");
            }
        })?;
        (Some(info), results)
    } else {
        let results = run_suite(&opts, |case| {
            if show_progress {
                eprintln!("bench: {} ({}) ...", case.op, case.label);
            }
        })?;
        (None, results)
    };

    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let report = BenchReport { device: device.to_string(), threads, gpu, results };
        serde_json::to_writer(&mut out, &report).map_err(std::io::Error::from).and_then(|()| writeln!(out))
    } else {
        let head = match &gpu {
            Some(g) => format!(
                "device {device} ({}, {}), copy {:.0} GB/s, bf16 peak {}\n",
                g.name,
                g.arch,
                g.copy_gbps,
                g.peak_bf16_tflops.map_or("unknown".into(), |p| format!("{p:.0} TFLOP/s (spec)"))
            ),
            None => format!("device {device}, {threads} threads, f32\n"),
        };
        writeln!(out, "{head}").and_then(|()| write!(out, "{}", format_table(&results)))
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| CliError(format!("cannot write the results to stdout: {e}")))
}

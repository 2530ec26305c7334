//! `solar-train demo`: the whole SOLAR pipeline in miniature, offline (solar_train::demo does
//! the work). Progress goes to stderr as it runs; the table goes to stdout at the end.

use crate::common::{CliError, Common};
use clap::Args;
use solar_train::demo::report::table;
use solar_train::demo::{run_demo, DemoOptions};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
#[command(after_help = "Example:\n  solar-train demo --quick --out runs/demo-quick")]
pub struct DemoArgs {
    /// Where the models, data, report.md, report.json and images go.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// A smaller model and fewer steps (about a minute; what the tests run).
    #[arg(long)]
    pub quick: bool,
    /// Replace an existing output folder (once the new demo is complete).
    #[arg(long)]
    pub overwrite: bool,
}

pub fn demo(args: &DemoArgs, common: &Common) -> Result<(), CliError> {
    let opts = DemoOptions {
        out: args.out.clone(),
        overwrite: args.overwrite,
        quick: args.quick,
        seed: common.seed,
        device: common.run_on,
    };
    let rows = run_demo(&opts, |line| eprintln!("demo {line}"))?;
    println!("{}", table(&rows));
    eprintln!(
        "report: {} (and report.json, loss_*.svg, layers_upscaled.svg beside it)",
        args.out.join("report.md").display()
    );
    Ok(())
}

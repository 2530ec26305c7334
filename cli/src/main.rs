//! `solar-train`: Solar's command line. Thin on purpose: it parses flags (clap), merges them
//! over an optional `--config FILE.toml`, and calls solar_train. Exit codes: 0 success,
//! 1 a runtime error, 2 a usage error (clap's own parse errors exit 2 as well).
//! Subcommands arrive with the issues that build them; today there is `bench`.

mod bench;
mod common;

use clap::{Parser, Subcommand};
use common::{CliError, CommonArgs, ConfigFile};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "solar-train", version, about = "Train SOLAR-style language models on Solar's own engine")]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Time each op on representative shapes (median of repeated runs after a warm-up).
    Bench(bench::BenchArgs),
}

fn run(cli: &Cli) -> Result<(), CliError> {
    let mut file = ConfigFile::open(cli.common.config.as_deref())?;
    match &cli.command {
        Command::Bench(args) => {
            let settings = args.resolve(&mut file)?;
            let common = cli.common.resolve(&mut file)?;
            file.finish()?;
            let device = common.select_device()?;
            common.init_threads()?;
            bench::run(&settings, &common, device)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

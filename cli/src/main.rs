//! `solar-train`: Solar's command line. Thin on purpose: it parses flags (clap), splices in an
//! optional `--config FILE.toml` (config_file.rs), and calls solar_model / solar_train.
//! Exit codes: 0 success, 1 a runtime error, 2 a usage error (a bad flag on the command line).

mod bench;
mod common;
mod config_file;
mod demo_cmd;
mod flag_walk;
mod generate_cmd;
mod launch;
mod merge_cmd;
mod model_cmds;
mod plan_cmd;
mod train_cmds;
mod usage;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use common::{CliError, CommonArgs};
use solar_model::output::{interrupt, OutputLock};
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
    /// The SOLAR pipeline in miniature, offline: base, upscale, pretrain, SFT, DPO, merge, eval.
    Demo(demo_cmd::DemoArgs),
    /// Write a randomly initialized model (or only its config) as an HF folder.
    Init(model_cmds::InitArgs),
    /// Depth up-scaling: stack layer ranges of a base model (SOLAR: --remove 8 on 32 layers).
    Upscale(model_cmds::UpscaleArgs),
    /// Mean next-token loss, perplexity and token count of a model on a data file.
    Eval(model_cmds::EvalArgs),
    /// Generate text from a prompt (greedy, or sampled with --temperature and --top-p).
    Generate(generate_cmd::GenerateArgs),
    /// Continued pretraining on packed text (documents never attend to each other).
    Pretrain(train_cmds::PretrainArgs),
    /// Instruction tuning: loss on the responses only (alpaca, openorca, prompt-completion, messages).
    Sft(train_cmds::SftArgs),
    /// Preference alignment (DPO, IPO, hinge) on {prompt, chosen, rejected} pairs.
    Dpo(train_cmds::DpoArgs),
    /// Merge models as mergekit does (linear, slerp, task-arithmetic, ties, dare-ties,
    /// dare-linear, passthrough), from flags or a mergekit YAML (--config merge.yml).
    Merge(merge_cmd::MergeArgs),
    /// Time each op on representative shapes (median of repeated runs after a warm-up).
    Bench(bench::BenchArgs),
    /// Memory per device of a training run (ZeRO 0/1/2 over N devices) and whether it fits,
    /// from config.json alone.
    Plan(plan_cmd::PlanArgs),
}

impl Command {
    /// The folder this command writes, if it writes one: held locked for the whole run.
    fn output(&self) -> Option<&std::path::Path> {
        match self {
            Command::Demo(a) => Some(&a.out),
            Command::Init(a) => Some(&a.out),
            Command::Upscale(a) => Some(&a.out),
            Command::Merge(a) => Some(&a.out),
            Command::Pretrain(a) => Some(&a.train.out),
            Command::Sft(a) => Some(&a.train.out),
            Command::Dpo(a) => Some(&a.train.out),
            Command::Eval(_) | Command::Generate(_) | Command::Bench(_) | Command::Plan(_) => None,
        }
    }
    /// The trainers, which run data parallel when a launcher started them as ranks.
    fn trains(&self) -> bool {
        matches!(self, Command::Pretrain(_) | Command::Sft(_) | Command::Dpo(_))
    }
}

fn run(cli: &Cli) -> Result<(), CliError> {
    let mut common = cli.common.resolve();
    let place = if cli.command.trains() { launch::place()? } else { None };
    if let Some(p) = &place {
        common.run_on = launch::select_device(&common, p)?;
        common.threads = common.threads.or(launch::cpu_threads(p, common.run_on));
    }
    common.init_threads()?;
    if let Some(p) = &place {
        launch::join(p, common.run_on)?;
    }
    // One writer per output folder, for the whole run (of a job's ranks, rank 0 writes); a
    // command that writes one also stops cleanly on SIGINT/SIGTERM instead of dying mid-save.
    let _lock = match cli.command.output() {
        Some(out) => {
            interrupt::install();
            match &place {
                Some(p) if p.rank > 0 => None,
                _ => Some(OutputLock::acquire(out)?),
            }
        }
        None => None,
    };
    let select = |common: &common::Common| match &place {
        Some(_) => Ok(common.run_on),
        None => common.select_device(),
    };
    match &cli.command {
        Command::Demo(args) => {
            common.run_on = common.select_device()?;
            demo_cmd::demo(args, &common)
        }
        Command::Init(args) => model_cmds::init(args, &common),
        Command::Upscale(args) => model_cmds::upscale_cmd(args),
        Command::Eval(args) => {
            common.run_on = common.select_device()?;
            model_cmds::eval(args, common.run_on)
        }
        Command::Generate(args) => {
            common.run_on = common.select_device()?;
            generate_cmd::generate(args, &common)
        }
        Command::Pretrain(args) => {
            common.run_on = select(&common)?;
            train_cmds::pretrain(args, &common)
        }
        Command::Sft(args) => {
            common.run_on = select(&common)?;
            train_cmds::sft(args, &common)
        }
        Command::Dpo(args) => {
            common.run_on = select(&common)?;
            train_cmds::dpo(args, &common)
        }
        Command::Merge(args) => merge_cmd::run(args, &common),
        Command::Bench(args) => {
            let device = common.select_device()?;
            bench::run(args, &common, device)
        }
        Command::Plan(args) => plan_cmd::run(args, &common),
    }
}

/// The root command with every argument overriding itself, so a later flag (the user's) wins
/// over an earlier one (the config file's).
fn command() -> clap::Command {
    let mut cmd = Cli::command().args_override_self(true).mut_subcommands(|s| s.args_override_self(true));
    cmd.build();
    cmd
}

/// Runtime errors exit 1; a run stopped by SIGINT/SIGTERM exits 128 + the signal, whatever
/// error its unwinding produced, as shells expect.
fn fail(e: CliError) -> ExitCode {
    let code = match interrupt::received() {
        Some(sig) => interrupt::exit_code(sig),
        None => 1,
    };
    launch::fail(&e.to_string(), code)
}

fn main() -> ExitCode {
    // A closed stdout (`solar-train eval ... | head`) ends the process quietly, as other
    // command-line tools do, instead of panicking inside println!.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to the default before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = config_file::normalize(std::env::args_os().collect());
    let has_file = config_file::config_path(&args).is_some();
    let missing = |e: &clap::Error| e.kind() == clap::error::ErrorKind::MissingRequiredArgument;
    // The command line alone must parse: its mistakes are usage errors (exit 2), and --help and
    // --version end here. Required flags may still come from the config file.
    let cmd = command();
    match cmd.clone().try_get_matches_from(&args) {
        Err(e) if !(has_file && missing(&e)) => e.exit(),
        _ => {}
    }
    let expanded = match config_file::expand(args.clone(), &cmd) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let matches = match cmd.try_get_matches_from(&expanded) {
        Ok(m) => m,
        Err(e) if missing(&e) => e.exit(),
        // A value in the file that its flag refuses is the same usage error as the flag: exit 2.
        Err(e) => {
            eprintln!("error: {}", config_file::file_error(&args, &e));
            return ExitCode::from(2);
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return fail(CliError(e.to_string())),
    };
    // Flag values and combinations are judged in one place, before any work: exit 2.
    if let Err(msg) = usage::check(&cli) {
        eprintln!("error: {msg}");
        return ExitCode::from(2);
    }
    match run(&cli) {
        // A signal that arrived during a save the run chose to finish still ends the run.
        Ok(()) if interrupt::received().is_some() => {
            fail(CliError("interrupted after the output was completed".into()))
        }
        Ok(()) => {
            solar_engine::comm::finish();
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

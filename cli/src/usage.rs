//! The one place where flag values and combinations are judged, after parsing and before any
//! work (no file is read, no folder touched): every problem found here is a usage error, exit 2,
//! like clap's own. Runtime failures (bad files, bad data, divergence) exit 1 elsewhere.
//! Numbers are checked so NaN fails too (a comparison with NaN is false), and infinities are
//! refused wherever a finite value is meant.

use crate::common::DeviceChoice;
use crate::train_cmds::{dpo_config, TrainFlags};
use crate::{Cli, Command};

/// Ok, or the message of the first invalid value or combination.
pub fn check(cli: &Cli) -> Result<(), String> {
    let seed = cli.common.seed.unwrap_or(0);
    match &cli.command {
        Command::Pretrain(a) => train_flags(&a.train, seed),
        Command::Sft(a) => train_flags(&a.train, seed),
        Command::Dpo(a) => {
            train_flags(&a.train, seed)?;
            dpo_config(a.beta, &a.loss, a.label_smoothing).map(|_| ()).map_err(|e| e.0)
        }
        // --beta is judged whatever the task: a NaN is a mistake even where it goes unused.
        Command::Eval(a) => {
            if a.out.is_some() && a.out == a.image {
                return Err("--out and --image name the same file: give each its own".into());
            }
            dpo_config(a.beta, &a.loss, 0.0).map(|_| ()).map_err(|e| e.0)
        }
        Command::Generate(a) => crate::generate_cmd::check(a),
        Command::Plan(a) => a.check(),
        Command::Merge(a) => {
            let lora = a.method.as_deref() == Some("lora");
            if lora && (a.base.is_none() || a.adapter.is_none() || !a.models.is_empty()) {
                return Err("merge --method lora takes --base DIR and --adapter DIR (no --models)".into());
            }
            if !lora && a.adapter.is_some() {
                return Err("--adapter goes with --method lora (folding a LoRA adapter into --base)".into());
            }
            if a.weights.iter().flatten().any(|w| !w.is_finite()) {
                return Err("--weights must be finite numbers".into());
            }
            if a.lambda.is_some_and(|l| !l.is_finite()) {
                return Err("--lambda must be a finite number".into());
            }
            if a.t.is_some_and(|t| !t.is_finite()) {
                return Err("--t must be a finite number (0 = the first model, 1 = the second)".into());
            }
            if a.density.is_some_and(|d| !(d > 0.0 && d <= 1.0)) {
                return Err("--density must be in (0, 1] (the share of each task vector kept)".into());
            }
            Ok(())
        }
        // The emulator runs kernels one fiber at a time on the CPU: a timing there would
        // describe this machine's scheduler, never a GPU. --kernels compiles, it does not time.
        Command::Bench(a) if !a.kernels && cli.common.device == Some(DeviceChoice::Emulator) => Err(
            "bench --device emu: the emulator proves kernels correct but cannot time them; use --device cuda \
             on a GPU, or --kernels for the ptxas report"
                .into(),
        ),
        _ => Ok(()),
    }
}

fn train_flags(f: &TrainFlags, seed: u64) -> Result<(), String> {
    f.config(seed).validate()?;
    f.lora_spec()?;
    if f.resume && f.overwrite {
        return Err("--resume continues the run in --out and --overwrite replaces it: pass one".into());
    }
    if f.eval_every > 0 && f.eval_data.is_none() {
        return Err("--eval-every needs --eval-data (the held-out data to evaluate on)".into());
    }
    Ok(())
}

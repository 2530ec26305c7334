//! What every subcommand shares: the common flags (`--device`, `--threads`, `--seed`,
//! `--config`; config_file.rs merges the TOML file), byte sizes such as `--max-shard-size 5GB`,
//! and the runtime error type (exit 1; clap's usage errors exit 2).

use clap::Args;
use solar_engine::Device;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A runtime error: `main` prints it as `error: ...` and exits 1. (Usage errors are clap's,
/// which exit 2 on their own: every flag value is validated while parsing.)
#[derive(Debug)]
pub struct CliError(pub String);

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<solar_engine::Error> for CliError {
    fn from(e: solar_engine::Error) -> Self {
        CliError(e.to_string())
    }
}

impl From<solar_model::ModelError> for CliError {
    fn from(e: solar_model::ModelError) -> Self {
        CliError(e.to_string())
    }
}

impl From<solar_train::error::TrainError> for CliError {
    fn from(e: solar_train::error::TrainError) -> Self {
        CliError(e.to_string())
    }
}

/// `--device`: `auto` picks CUDA when this build has a backend for it, else the CPU; `emu` is
/// the CUDA backend with its kernels run by the emulator executor on the CPU (checks on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Emulator,
    Fixed(Device),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => return Ok(DeviceChoice::Auto),
            "emu" | "emulator" => return Ok(DeviceChoice::Emulator),
            _ => {}
        }
        s.parse::<Device>()
            .map(DeviceChoice::Fixed)
            .map_err(|_| format!("unknown device '{s}' (expected auto, cpu, cuda, cuda:N or emu)"))
    }
}

/// A generous bound: more threads than this is a typo, not a machine.
const MAX_THREADS: u64 = 4096;

/// The flags every subcommand takes (global, so they go before or after the subcommand).
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Where to run: auto (CUDA if present, else the CPU), cpu, cuda, cuda:N, or emu (the CUDA
    /// backend's kernels on the CPU emulator, with memory and race checks; slow, never timed).
    #[arg(long, global = true, value_name = "DEVICE")]
    pub device: Option<DeviceChoice>,
    /// Worker threads for the CPU backend [default: one per core].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_THREADS))]
    pub threads: Option<u64>,
    /// Seed for every random choice (initialization, data order, sampling, benchmark inputs) [default: 0].
    #[arg(long, global = true, value_name = "N")]
    pub seed: Option<u64>,
    /// A TOML file with the same keys as the flags (flags given here override it). For `init`,
    /// a .json file is the model's config.json instead; for `merge`, a .yml/.yaml file is a
    /// mergekit config.
    #[arg(long, global = true, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
}

/// The common settings with their defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub device: DeviceChoice,
    /// The device `--device` resolved to (set by the subcommands that compute).
    pub run_on: Device,
    /// `None`: rayon's default, one per core.
    pub threads: Option<usize>,
    pub seed: u64,
}

impl CommonArgs {
    pub fn resolve(&self) -> Common {
        Common {
            device: self.device.unwrap_or(DeviceChoice::Auto),
            run_on: Device::Cpu,
            threads: self.threads.map(|n| n as usize),
            seed: self.seed.unwrap_or(0),
        }
    }
}

impl Common {
    /// The device to run on: `auto` takes the first GPU when one is usable and otherwise says
    /// on stderr why it runs on the CPU; an unavailable explicit device is an error naming what
    /// is missing (driver, device, NVRTC).
    pub fn select_device(&self) -> Result<Device, CliError> {
        match self.device {
            DeviceChoice::Auto => {
                let (device, why_not) = Device::auto();
                match why_not {
                    Some(reason) => eprintln!("note: --device auto: running on the CPU ({reason})"),
                    None => eprintln!("note: --device auto: running on {device}"),
                }
                Ok(device)
            }
            DeviceChoice::Emulator => {
                solar_engine::cuda::use_emulator();
                let d = Device::Cuda(0);
                d.ensure_available()?;
                eprintln!(
                    "note: --device emu: the CUDA backend on the emulator executor (checks on, no timings)"
                );
                Ok(d)
            }
            DeviceChoice::Fixed(d) => {
                d.ensure_available()?;
                Ok(d)
            }
        }
    }

    /// Sizes rayon's global pool, which every parallel loop in the engine (gemm included) uses.
    pub fn init_threads(&self) -> Result<(), CliError> {
        let Some(n) = self.threads else { return Ok(()) };
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| CliError(format!("cannot start {n} worker threads: {e}")))
    }
}

/// The model in `dir` with the LoRA adapter folder `adapter` (PEFT's format) applied, if any.
pub fn load_adapted(
    dir: &std::path::Path,
    adapter: Option<&std::path::Path>,
    device: Device,
) -> Result<solar_model::Llama, CliError> {
    if solar_model::lora::peft_io::is_adapter_dir(dir) && !dir.join("config.json").is_file() {
        return Err(CliError(format!(
            "{}: holds a LoRA adapter, not a model: pass its base as --model and this folder as --adapter",
            dir.display()
        )));
    }
    let model = solar_train::byte_bar::load_llama(dir)?;
    let model = match adapter {
        Some(a) => {
            let lora = solar_model::lora::peft_io::load_adapter(a, &model.config)?;
            model.with_lora(lora)?
        }
        None => model,
    };
    Ok(model.to_device(device)?)
}

/// A byte size: a plain number of bytes or a number with KB, MB, GB (powers of 1000, as
/// transformers' max_shard_size) or KiB, MiB, GiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a size (e.g. 5GB, 500MB, 1048576)"))?;
    let mult = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    let bytes = (n * mult).round();
    if bytes < 1.0 {
        return Err(format!("'{s}' must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// `--dtype` of a written model.
pub fn parse_save_dtype(s: &str) -> Result<solar_model::checkpoint::SafeDType, String> {
    solar_model::checkpoint::SafeDType::parse(s)
        .ok_or_else(|| format!("unknown dtype '{s}' (f32, bf16 or f16)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_cuda_device_is_a_runtime_error_naming_it() {
        let args =
            CommonArgs { device: Some("cuda:7".parse().unwrap()), threads: None, seed: None, config: None };
        let e = args.resolve().select_device().unwrap_err();
        assert!(e.to_string().contains("cuda:7"), "{e}");
    }

    #[test]
    fn sizes_parse_like_transformers() {
        assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_size("60KB"), Ok(60_000));
        assert_eq!(parse_size("2MiB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("5XB").is_err() && parse_size("GB").is_err() && parse_size("0").is_err());
    }
}

//! What every subcommand shares: the common flags (`--device`, `--threads`, `--seed`,
//! `--config`), the `--config FILE.toml` file they can also come from (same keys as the flags;
//! a flag given on the command line wins), and the runtime error type (exit 1; clap's usage
//! errors exit 2). A config key no subcommand takes is an error naming the file and the key,
//! so a typo never silently falls back to a default.

use clap::Args;
use solar_engine::Device;
use std::fmt;
use std::path::{Path, PathBuf};
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

/// `--device`: `auto` picks CUDA when this build has a backend for it, else the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Fixed(Device),
}

impl FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(DeviceChoice::Auto);
        }
        s.parse::<Device>()
            .map(DeviceChoice::Fixed)
            .map_err(|_| format!("unknown device '{s}' (expected auto, cpu, cuda or cuda:N)"))
    }
}

/// A generous bound: more threads than this is a typo, not a machine.
const MAX_THREADS: u64 = 4096;

/// The flags every subcommand takes (global, so they go before or after the subcommand).
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Where to run: auto (CUDA if present, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, global = true, value_name = "DEVICE")]
    pub device: Option<DeviceChoice>,
    /// Worker threads for the CPU backend [default: one per core].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=MAX_THREADS))]
    pub threads: Option<u64>,
    /// Seed for every random choice (initialization, data order, benchmark inputs) [default: 0].
    #[arg(long, global = true, value_name = "N")]
    pub seed: Option<u64>,
    /// A TOML file with the same keys as the flags (flags given here override it).
    #[arg(long, global = true, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
}

/// The common settings after merging flags over the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    /// Settled by `select_device` once the whole config file has been checked.
    pub device: DeviceChoice,
    /// `None`: rayon's default, one per core.
    pub threads: Option<usize>,
    pub seed: u64,
}

impl CommonArgs {
    /// Merges the flags over `file`, taking the common keys out of it.
    pub fn resolve(&self, file: &mut ConfigFile) -> Result<Common, CliError> {
        let device_from_file = match file.take_str("device")? {
            Some(s) => Some(s.parse::<DeviceChoice>().map_err(|e| file.bad_value("device", &e))?),
            None => None,
        };
        let threads_from_file = file.take_uint("threads")?;
        if threads_from_file.is_some_and(|n| n == 0 || n > MAX_THREADS) {
            return Err(file.bad_value("threads", &format!("must be between 1 and {MAX_THREADS}")));
        }
        let seed_from_file = file.take_uint("seed")?;

        Ok(Common {
            device: self.device.or(device_from_file).unwrap_or(DeviceChoice::Auto),
            threads: self.threads.or(threads_from_file).map(|n| n as usize),
            seed: self.seed.or(seed_from_file).unwrap_or(0),
        })
    }
}

impl Common {
    /// The device to run on: `auto` says on stderr which one it picked, and an unavailable
    /// device (CUDA, for now) is an error.
    pub fn select_device(&self) -> Result<Device, CliError> {
        match self.device {
            DeviceChoice::Auto => {
                eprintln!(
                    "note: --device auto: this build of Solar has no CUDA backend yet; running on the CPU"
                );
                Ok(Device::Cpu)
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

/// The `--config` file's keys, taken out one by one as the flags are merged; whatever is left
/// at the end is unknown. Without `--config` it is empty.
#[derive(Debug)]
pub struct ConfigFile {
    path: Option<PathBuf>,
    table: toml::Table,
    known: Vec<&'static str>,
}

impl ConfigFile {
    pub fn empty() -> ConfigFile {
        ConfigFile { path: None, table: toml::Table::new(), known: Vec::new() }
    }

    /// Reads and parses `path`; a missing or unparsable file is a runtime error naming it.
    pub fn load(path: &Path) -> Result<ConfigFile, CliError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError(format!("cannot read config file {}: {e}", path.display())))?;
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| CliError(format!("config file {} is not valid TOML: {e}", path.display())))?;
        Ok(ConfigFile { path: Some(path.to_path_buf()), table, known: Vec::new() })
    }

    /// `load` when a path is given, else `empty`.
    pub fn open(path: Option<&Path>) -> Result<ConfigFile, CliError> {
        path.map_or_else(|| Ok(ConfigFile::empty()), ConfigFile::load)
    }

    fn name(&self) -> String {
        self.path.as_ref().map_or_else(|| "<none>".to_string(), |p| p.display().to_string())
    }

    /// The error for a key whose value is the wrong type or out of range.
    pub fn bad_value(&self, key: &str, why: &str) -> CliError {
        CliError(format!("config file {}: key '{key}': {why}", self.name()))
    }

    fn take(&mut self, key: &'static str) -> Option<toml::Value> {
        self.known.push(key);
        self.table.remove(key)
    }

    pub fn take_str(&mut self, key: &'static str) -> Result<Option<String>, CliError> {
        match self.take(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.bad_value(key, &format!("expected a string, found {}", v.type_str()))),
        }
    }

    pub fn take_uint(&mut self, key: &'static str) -> Result<Option<u64>, CliError> {
        match self.take(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) if i >= 0 => Ok(Some(i as u64)),
            Some(v) => Err(self.bad_value(key, &format!("expected a non-negative integer, found {v}"))),
        }
    }

    pub fn take_bool(&mut self, key: &'static str) -> Result<Option<bool>, CliError> {
        match self.take(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(b)),
            Some(v) => Err(self.bad_value(key, &format!("expected true or false, found {v}"))),
        }
    }

    /// Errors on the first key nobody took, listing the keys this command knows.
    pub fn finish(self) -> Result<(), CliError> {
        match self.table.keys().next() {
            None => Ok(()),
            Some(key) => Err(CliError(format!(
                "config file {}: unknown key '{key}' (known keys: {})",
                self.name(),
                self.known.join(", ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConfigFile {
        ConfigFile { path: Some("x.toml".into()), table: text.parse().unwrap(), known: Vec::new() }
    }

    #[test]
    fn flags_override_the_file_and_the_file_fills_the_rest() {
        let args = CommonArgs {
            device: Some(DeviceChoice::Fixed(Device::Cpu)),
            threads: Some(3),
            seed: None,
            config: None,
        };
        let mut f = file("device = \"auto\"\nthreads = 1\nseed = 7\n");
        let c = args.resolve(&mut f).unwrap();
        assert_eq!(c, Common { device: DeviceChoice::Fixed(Device::Cpu), threads: Some(3), seed: 7 });
        f.finish().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_and_key() {
        let args = CommonArgs { device: None, threads: None, seed: None, config: None };
        let mut f = file("thread = 2\n");
        args.resolve(&mut f).unwrap();
        let msg = f.finish().unwrap_err().to_string();
        assert!(msg.contains("x.toml") && msg.contains("'thread'") && msg.contains("threads"), "{msg}");

        let msg = args.resolve(&mut file("threads = \"two\"\n")).unwrap_err().to_string();
        assert!(msg.contains("x.toml") && msg.contains("threads"), "{msg}");
        let msg = args.resolve(&mut file("device = \"tpu\"\n")).unwrap_err().to_string();
        assert!(msg.contains("x.toml") && msg.contains("tpu"), "{msg}");
    }

    #[test]
    fn cuda_is_a_runtime_error_until_the_backend_lands() {
        let args =
            CommonArgs { device: Some("cuda:1".parse().unwrap()), threads: None, seed: None, config: None };
        let e = args.resolve(&mut ConfigFile::empty()).unwrap().select_device().unwrap_err();
        assert!(e.to_string().contains("CUDA"), "{e}");
    }
}

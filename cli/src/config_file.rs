//! `--config FILE.toml`: the same keys as the flags, for any subcommand. The file's keys become
//! flags placed right after the subcommand, ahead of what the user typed, and every argument
//! overrides itself, so a flag given on the command line wins over the file. Keys are checked
//! against the subcommand's own flags (dashes or underscores both work): an unknown key is a
//! runtime error naming the file and the key (exit 1); a value the flag refuses is the usage
//! error the flag would give (exit 2), naming the file and the key.

use crate::common::CliError;
use clap::{ArgAction, Command};
use std::ffi::OsString;
use std::path::Path;

/// Global options that take a value (so the token after them is not the subcommand).
const GLOBAL_VALUE_OPTIONS: [&str; 4] = ["--device", "--threads", "--seed", "--config"];

/// Index in `args` of the subcommand: the first token that is neither an option nor the value
/// of a global option.
fn subcommand_index(args: &[OsString]) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if GLOBAL_VALUE_OPTIONS.contains(&a.as_ref()) {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            return Some(i);
        }
    }
    None
}

/// The `--config` path on the command line, if any.
pub fn config_path(args: &[OsString]) -> Option<OsString> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--config" {
            return it.next().cloned();
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(v.into());
        }
    }
    None
}

fn value_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The flags a config file's table stands for, for subcommand `sub`.
fn file_flags(path: &Path, table: &toml::Table, sub: &Command) -> Result<Vec<OsString>, CliError> {
    let bad =
        |key: &str, why: String| CliError(format!("config file {}: key '{key}': {why}", path.display()));
    let known: Vec<&str> =
        sub.get_arguments().filter_map(|a| a.get_long()).filter(|l| *l != "config").collect();
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = sub.get_arguments().find(|a| a.get_long() == Some(long.as_str()) && long != "config")
        else {
            return Err(CliError(format!(
                "config file {}: unknown key '{key}' (known keys: {})",
                path.display(),
                known.join(", ")
            )));
        };
        let flag = format!("--{long}");
        match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => out.push(flag.into()),
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => {}
            (ArgAction::SetTrue, v) => return Err(bad(key, format!("expected true or false, found {v}"))),
            (_, toml::Value::Array(items)) => {
                out.push(flag.into());
                for item in items {
                    let text =
                        value_text(item).ok_or_else(|| bad(key, format!("cannot use {item} as a value")))?;
                    out.push(text.into());
                }
            }
            (_, v) => {
                let text = value_text(v).ok_or_else(|| bad(key, format!("cannot use {v} as a value")))?;
                out.push(format!("{flag}={text}").into());
            }
        }
    }
    Ok(out)
}

/// `init --config config.json` names the model's config (the spelling), not a TOML
/// file of flags: it becomes `--model-config config.json`.
fn init_model_config(args: Vec<OsString>) -> Vec<OsString> {
    rename_config(args, &[".json"], "--model-config")
}

/// `--config FILE` becomes `FLAG FILE` when FILE ends with one of `exts`.
fn rename_config(args: Vec<OsString>, exts: &[&str], flag: &str) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        let matches = |v: &str| exts.iter().any(|e| v.ends_with(e));
        if s == "--config" {
            match it.next() {
                Some(v) if matches(&v.to_string_lossy()) => out.extend([flag.into(), v]),
                Some(v) => out.extend([a, v]),
                None => out.push(a),
            }
        } else if s.strip_prefix("--config=").is_some_and(matches) {
            out.push(s.replacen("--config", flag, 1).into());
        } else {
            out.push(a);
        }
    }
    out
}

/// The command line with `init --config x.json` spelled `init --model-config x.json`, and
/// `merge --config x.yml` spelled `merge --merge-config x.yml`.
pub fn normalize(args: Vec<OsString>) -> Vec<OsString> {
    match subcommand_index(&args) {
        Some(i) if args[i] == "init" => init_model_config(args),
        // `merge --config merge.yml` is a mergekit config, not a TOML file of flags.
        Some(i) if args[i] == "merge" => rename_config(args, &[".yml", ".yaml"], "--merge-config"),
        _ => args,
    }
}

/// The (normalized) command line with the config file's keys spliced in after the subcommand,
/// or the command line as it is when there is no `--config`. `cmd` is the built root command.
pub fn expand(args: Vec<OsString>, cmd: &Command) -> Result<Vec<OsString>, CliError> {
    let at = subcommand_index(&args);
    let (Some(path), Some(at)) = (config_path(&args), at) else {
        return Ok(args);
    };
    let path = Path::new(&path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError(format!("cannot read config file {}: {e}", path.display())))?;
    let table = text
        .parse::<toml::Table>()
        .map_err(|e| CliError(format!("config file {} is not valid TOML: {e}", path.display())))?;
    let name = args[at].to_string_lossy();
    let Some(sub) = cmd.find_subcommand(name.as_ref()) else { return Ok(args) };
    let injected = file_flags(path, &table, sub)?;
    let mut out = args[..=at].to_vec();
    out.extend(injected);
    out.extend(args[at + 1..].iter().cloned());
    Ok(out)
}

/// Turns a parse error caused by the file's values into an error naming the file and key.
pub fn file_error(args: &[OsString], e: &clap::Error) -> CliError {
    let path = config_path(args).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let arg = e.get(clap::error::ContextKind::InvalidArg).map(|a| a.to_string()).unwrap_or_default();
    let key = arg.trim_start_matches('-').split([' ', '=']).next().unwrap_or("").replace('-', "_");
    let first_line = e.to_string().lines().next().unwrap_or("").trim_start_matches("error: ").to_string();
    CliError(format!("config file {path}: key '{key}': {first_line}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_subcommand_is_found_after_global_options() {
        assert_eq!(subcommand_index(&os(&["x", "--device", "cpu", "bench", "--op", "rope"])), Some(3));
        assert_eq!(subcommand_index(&os(&["x", "--config=a.toml", "eval"])), Some(2));
        assert_eq!(config_path(&os(&["x", "eval", "--config", "a.toml"])), Some("a.toml".into()));
    }

    #[test]
    fn init_takes_a_json_config_as_the_model_config() {
        let got = init_model_config(os(&["x", "init", "--config", "c.json", "--out", "o"]));
        assert_eq!(got, os(&["x", "init", "--model-config", "c.json", "--out", "o"]));
        let got = init_model_config(os(&["x", "init", "--config=run.toml"]));
        assert_eq!(got, os(&["x", "init", "--config=run.toml"]));
    }
}

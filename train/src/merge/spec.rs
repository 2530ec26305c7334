//! What to merge, independent of where it was said: the method, the base model, the output's
//! layer slices with their source models, and the parameters at each level. Both the command
//! line (`from_cli`) and mergekit YAML (config.rs) build one; `check` refuses unknown or
//! out-of-range parameters before any checkpoint is opened.

use super::params::{Params, Scalar, Setting};
use super::MergeMethod;
use crate::error::{Result, TrainError};
use solar_model::checkpoint::SafeDType;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One source of an output slice: a model and the half-open range of its layers to use
/// (None: all of them, mergekit's `models:` form).
#[derive(Clone, Debug, PartialEq)]
pub struct InputSlice {
    pub model: PathBuf,
    pub layers: Option<Range<usize>>,
    pub params: Params,
}

/// A run of output layers, each merged from the same-offset layer of every source.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputSlice {
    pub sources: Vec<InputSlice>,
    pub params: Params,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MergeSpec {
    pub method: MergeMethod,
    /// Task vectors are taken against it; SLERP's t = 0 end. Its config and tokenizer are
    /// copied to the output (else the first model's).
    pub base: Option<PathBuf>,
    pub slices: Vec<OutputSlice>,
    /// Global parameters.
    pub params: Params,
    /// Stored dtype of the output (None: the first input's dtype per tensor).
    pub dtype: Option<SafeDType>,
    /// Seeds DARE's random drops.
    pub seed: u64,
    /// The YAML file this came from, so errors can name it.
    pub source: Option<PathBuf>,
}

/// The command line's merge flags (also the demo's way in: fill what it needs, default the rest).
#[derive(Clone, Debug, Default)]
pub struct CliMerge {
    pub method: String,
    pub models: Vec<PathBuf>,
    pub base: Option<PathBuf>,
    /// One per model in `models`; default 1 each.
    pub weights: Option<Vec<f64>>,
    pub t: Option<f64>,
    pub density: Option<f64>,
    pub lambda: Option<f64>,
    pub normalize: Option<bool>,
    /// Passthrough of one model: its half-open layer ranges, stacked in order.
    pub slices: Option<Vec<Range<usize>>>,
    pub seed: u64,
    pub dtype: Option<SafeDType>,
}

fn num(x: f64) -> Setting {
    Setting::Scalar(Scalar::Num(x))
}

impl MergeSpec {
    pub fn from_cli(cli: &CliMerge) -> Result<MergeSpec> {
        let msg = |m: String| TrainError::Msg(format!("merge: {m}"));
        let method = MergeMethod::parse(&cli.method).ok_or_else(|| {
            msg(format!("unknown method `{}` (known: {})", cli.method, super::METHOD_NAMES.join(", ")))
        })?;
        if cli.models.is_empty() {
            return Err(msg("no models given (--models A B ...)".into()));
        }
        if let Some(w) = &cli.weights {
            if w.len() != cli.models.len() {
                return Err(msg(format!(
                    "--weights has {} values for {} models (one weight per model in --models, in order)",
                    w.len(),
                    cli.models.len()
                )));
            }
        }
        let mut params = Params::new();
        let flags: [(&str, Option<f64>); 3] =
            [("t", cli.t), ("density", cli.density), ("lambda", cli.lambda)];
        for (name, value) in flags {
            if let Some(x) = value {
                if !method.global_params().contains(&name) && !method.model_params().contains(&name) {
                    return Err(msg(format!("--{name} does not apply to {method}")));
                }
                params.insert(name.to_string(), num(x));
            }
        }
        if let Some(n) = cli.normalize {
            if !method.global_params().contains(&"normalize") {
                return Err(msg(format!("--normalize does not apply to {method}")));
            }
            params.insert("normalize".into(), Setting::Scalar(Scalar::Bool(n)));
        }
        if cli.weights.is_some() && !method.model_params().contains(&"weight") {
            return Err(msg(format!("--weights does not apply to {method}")));
        }
        let weight_of = |i: usize| cli.weights.as_ref().map_or(1.0, |w| w[i]);
        let with_weight = |i: usize| {
            let mut p = Params::new();
            if method.model_params().contains(&"weight") {
                p.insert("weight".into(), num(weight_of(i)));
            }
            p
        };

        let slices = if method == MergeMethod::Passthrough {
            passthrough_slices(cli)?
        } else {
            if cli.slices.is_some() {
                return Err(msg("--slices is for --method passthrough".into()));
            }
            let mut sources: Vec<InputSlice> = cli
                .models
                .iter()
                .enumerate()
                .map(|(i, m)| InputSlice { model: m.clone(), layers: None, params: with_weight(i) })
                .collect();
            if let Some(base) = &cli.base {
                if !sources.iter().any(|s| same_path(&s.model, base)) {
                    // As mergekit does: a base not among the models joins them (with no weight:
                    // task methods never weight the base; linear then asks for one).
                    sources.push(InputSlice { model: base.clone(), layers: None, params: Params::new() });
                }
            }
            vec![OutputSlice { sources, params: Params::new() }]
        };
        // SLERP's t = 0 end is the first model unless --base says otherwise.
        let base = match (&cli.base, method) {
            (Some(b), _) => Some(b.clone()),
            (None, MergeMethod::Slerp) => Some(cli.models[0].clone()),
            (None, m) if m.needs_base() => {
                return Err(msg(format!("--method {m} needs --base DIR (task vectors are taken against it)")))
            }
            (None, _) => None,
        };
        if method == MergeMethod::Slerp && slices[0].sources.len() != 2 {
            return Err(msg(format!(
                "--method slerp merges exactly two models, given {} (with --base)",
                slices[0].sources.len()
            )));
        }
        if method == MergeMethod::Slerp && cli.t.is_none() {
            return Err(msg("--method slerp needs --t T (0 gives the first model, 1 the second)".into()));
        }
        let spec = MergeSpec { method, base, slices, params, dtype: cli.dtype, seed: cli.seed, source: None };
        spec.check()?;
        Ok(spec)
    }

    /// Every model folder the spec names, base first when there is one, without repeats.
    pub fn models(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = Vec::new();
        let all = self.base.iter().chain(self.slices.iter().flat_map(|s| s.sources.iter().map(|i| &i.model)));
        for m in all {
            if !out.iter().any(|o| same_path(o, m)) {
                out.push(m.clone());
            }
        }
        out
    }

    /// Refuses parameters the method does not know and values out of range, naming where.
    pub fn check(&self) -> Result<()> {
        let method = self.method;
        let mut levels: Vec<(String, &Params)> = vec![("parameters".into(), &self.params)];
        for (i, s) in self.slices.iter().enumerate() {
            levels.push((format!("slices[{i}].parameters"), &s.params));
            for (j, src) in s.sources.iter().enumerate() {
                // Whole models come from a `models:` list (or --models); ranges from `slices:`.
                let at = match src.layers {
                    None => format!("models[{j}] ({}).parameters", src.model.display()),
                    Some(_) => format!("slices[{i}].sources[{j}] ({}).parameters", src.model.display()),
                };
                levels.push((at, &src.params));
            }
        }
        for (at, params) in levels {
            for (name, setting) in params {
                let known = method.global_params().contains(&name.as_str())
                    || method.model_params().contains(&name.as_str());
                if !known {
                    let mut all: Vec<&str> = method.global_params().to_vec();
                    all.extend(method.model_params());
                    let list = if all.is_empty() { "none".to_string() } else { all.join(", ") };
                    return Err(self.error(format!(
                        "{at}: unknown parameter `{name}` for merge_method {method} (known: {list})"
                    )));
                }
                let bad = |why: &str| self.error(format!("{at}.{name}: {why}"));
                let numbers = setting.numbers();
                match name.as_str() {
                    "t" if numbers.iter().any(|x| !(0.0..=1.0).contains(x)) => {
                        return Err(bad("t must lie in [0, 1] (0 gives the base model)"))
                    }
                    "density" if numbers.iter().any(|x| !(*x > 0.0 && *x <= 1.0)) => {
                        return Err(bad("density must lie in (0, 1] (the fraction of each task vector kept)"))
                    }
                    "normalize" | "rescale" | "int8_mask" if !numbers.is_empty() => {
                        return Err(bad("expected true or false"))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    pub(crate) fn error(&self, msg: String) -> TrainError {
        match &self.source {
            Some(path) => TrainError::file(path, msg),
            None => TrainError::Msg(format!("merge: {msg}")),
        }
    }
}

/// Passthrough from the command line: one model's `--slices`, or whole models stacked in order.
fn passthrough_slices(cli: &CliMerge) -> Result<Vec<OutputSlice>> {
    let whole = |m: &PathBuf| OutputSlice {
        sources: vec![InputSlice { model: m.clone(), layers: None, params: Params::new() }],
        params: Params::new(),
    };
    match &cli.slices {
        None => Ok(cli.models.iter().map(whole).collect()),
        Some(_) if cli.models.len() != 1 => Err(TrainError::Msg(
            "merge: --slices takes the layers of one model (--models M); for several, use a mergekit YAML --config"
                .into(),
        )),
        Some(ranges) => Ok(ranges
            .iter()
            .map(|r| OutputSlice {
                sources: vec![InputSlice {
                    model: cli.models[0].clone(),
                    layers: Some(r.clone()),
                    params: Params::new(),
                }],
                params: Params::new(),
            })
            .collect()),
    }
}

/// Two spellings of one folder (`a/m` and `./a/m/`) are the same model.
pub(crate) fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

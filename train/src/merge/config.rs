//! mergekit's YAML merge config, so users can bring the configs they already have: `models`
//! (whole models, each with `parameters`) or `slices` (each with `sources` of `model` +
//! `layer_range`), `base_model`, `merge_method`, `parameters` at global, slice and model level,
//! and `dtype` / `out_dtype`. Model references are local folders, relative to the current
//! directory as in mergekit (or, failing that, to the config file's folder). Keys this engine
//! cannot honour (`modules`, `tokenizer`, a union tokenizer, `chat_template`) are refused rather
//! than silently ignored; unknown keys are errors too, since they are usually typos.

use super::params::{describe, key_text, Params, Setting};
use super::spec::{same_path, InputSlice, MergeSpec, OutputSlice};
use super::MergeMethod;
use crate::error::{Result, TrainError};
use serde_norway::{Mapping, Value};
use solar_model::checkpoint::SafeDType;
use std::path::{Path, PathBuf};

const TOP_KEYS: [&str; 8] = [
    "merge_method",
    "base_model",
    "models",
    "slices",
    "parameters",
    "dtype",
    "out_dtype",
    "tokenizer_source",
];

/// Reads the file, turning every problem into an error that names it and the key.
struct Reader<'a> {
    path: &'a Path,
}

impl Reader<'_> {
    fn err(&self, msg: impl Into<String>) -> TrainError {
        TrainError::file(self.path, msg.into())
    }

    fn map<'v>(&self, v: &'v Value, at: &str) -> Result<&'v Mapping> {
        v.as_mapping().ok_or_else(|| self.err(format!("{at}: expected a mapping, found {}", describe(v))))
    }

    fn keys(&self, map: &Mapping, known: &[&str], at: &str) -> Result<()> {
        for key in map.keys() {
            if !key.as_str().is_some_and(|k| known.contains(&k)) {
                return Err(self.err(format!(
                    "{at}: unknown key {} (known: {})",
                    key_text(key),
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    fn string<'v>(&self, v: &'v Value, at: &str) -> Result<&'v str> {
        v.as_str().ok_or_else(|| self.err(format!("{at}: expected a string, found {}", describe(v))))
    }

    /// A model reference: a local folder that must exist.
    fn model(&self, v: &Value, at: &str) -> Result<PathBuf> {
        let name = self.string(v, at)?;
        if name.contains('+') {
            return Err(self.err(format!("{at}: `{name}`: model+LoRA references are not supported")));
        }
        let here = PathBuf::from(name);
        if here.is_dir() {
            return Ok(here);
        }
        let beside = self.path.parent().map(|d| d.join(name));
        match beside {
            Some(p) if here.is_relative() && p.is_dir() => Ok(p),
            _ => Err(self.err(format!(
                "{at}: model `{name}` is not a folder (give a local HF model folder; hub names are not downloaded)"
            ))),
        }
    }

    fn params(&self, v: Option<&Value>, at: &str) -> Result<Params> {
        let mut out = Params::new();
        let Some(v) = v else { return Ok(out) };
        if v.is_null() {
            return Ok(out);
        }
        for (key, value) in self.map(v, at)? {
            let name = self.string(key, at)?;
            let setting = Setting::from_yaml(value, &format!("{at}.{name}")).map_err(|e| self.err(e))?;
            out.insert(name.to_string(), setting);
        }
        Ok(out)
    }

    fn layer_range(&self, v: Option<&Value>, at: &str) -> Result<std::ops::Range<usize>> {
        let bad = || self.err(format!("{at}.layer_range: expected [start, end], two whole numbers"));
        let items = v.and_then(Value::as_sequence).ok_or_else(bad)?;
        let ends: Vec<u64> = items.iter().filter_map(Value::as_u64).collect();
        match ends[..] {
            [a, b] if items.len() == 2 => Ok(a as usize..b as usize),
            _ => Err(bad()),
        }
    }

    fn dtype(&self, v: &Value, at: &str) -> Result<SafeDType> {
        let text = self.string(v, at)?;
        SafeDType::parse(text)
            .ok_or_else(|| self.err(format!("{at}: unknown dtype `{text}` (float32, bfloat16 or float16)")))
    }
}

impl MergeSpec {
    /// Reads a mergekit YAML config. `seed` seeds DARE (mergekit's configs carry none).
    pub fn from_yaml(path: &Path, seed: u64) -> Result<MergeSpec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TrainError::file(path, format!("cannot read the merge config: {e}")))?;
        Self::from_yaml_str(&text, path, seed)
    }

    /// Parses YAML text; `path` names the file in errors and anchors relative model folders.
    pub fn from_yaml_str(text: &str, path: &Path, seed: u64) -> Result<MergeSpec> {
        let r = Reader { path };
        let doc: Value = serde_norway::from_str(text).map_err(|e| r.err(format!("not valid YAML: {e}")))?;
        let top = r.map(&doc, "the config")?;
        for key in top.keys() {
            match key.as_str() {
                Some("modules") => {
                    return Err(r.err("`modules` configs are not supported (use models or slices)"))
                }
                Some("tokenizer") => {
                    return Err(r.err("`tokenizer` is not supported: the base model's tokenizer is copied"))
                }
                Some("chat_template") => {
                    return Err(r.err(
                        "`chat_template` is not supported: the base model's tokenizer files are copied",
                    ))
                }
                _ => {}
            }
        }
        r.keys(top, &TOP_KEYS, "the config")?;

        let method_v = top.get("merge_method").ok_or_else(|| r.err("missing `merge_method`"))?;
        let method_text = r.string(method_v, "merge_method")?;
        let method = MergeMethod::parse(method_text).ok_or_else(|| {
            r.err(format!(
                "merge_method: unknown method `{method_text}` (known: {})",
                super::METHOD_NAMES.join(", ")
            ))
        })?;
        let base = match top.get("base_model") {
            None | Some(Value::Null) => None,
            Some(v) => Some(r.model(v, "base_model")?),
        };
        let slices = match (top.get("models"), top.get("slices")) {
            (Some(m), None) => vec![models_slice(&r, m, base.as_deref())?],
            (None, Some(s)) => slices(&r, s)?,
            _ => return Err(r.err("give exactly one of `models` or `slices`")),
        };
        if let Some(v) = top.get("tokenizer_source") {
            let ok = match v.as_str() {
                Some("base") => true,
                Some(_) => {
                    let m = r.model(v, "tokenizer_source").ok();
                    let first =
                        base.clone().or_else(|| slices.first()?.sources.first().map(|s| s.model.clone()));
                    matches!((m, first), (Some(m), Some(f)) if same_path(&m, &f))
                }
                None => false,
            };
            if !ok {
                return Err(r.err(
                    "tokenizer_source: only `base` (the base or first model's tokenizer, which is copied) is supported",
                ));
            }
        }
        let mut dtype = None;
        for key in ["dtype", "out_dtype"] {
            if let Some(v) = top.get(key).filter(|v| !v.is_null()) {
                dtype = Some(r.dtype(v, key)?);
            }
        }
        let params = r.params(top.get("parameters"), "parameters")?;
        let spec = MergeSpec { method, base, slices, params, dtype, seed, source: Some(path.to_path_buf()) };
        spec.check()?;
        Ok(spec)
    }
}

/// `models:` as mergekit normalizes it: one slice over every layer of every model, the base
/// added (with no parameters) when it is not listed.
fn models_slice(r: &Reader<'_>, v: &Value, base: Option<&Path>) -> Result<OutputSlice> {
    let items = v.as_sequence().ok_or_else(|| r.err("models: expected a list of {model, parameters}"))?;
    if items.is_empty() {
        return Err(r.err("models: the list is empty"));
    }
    let mut sources = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("models[{i}]");
        let map = r.map(item, &at)?;
        r.keys(map, &["model", "parameters"], &at)?;
        let model_v = map.get("model").ok_or_else(|| r.err(format!("{at}: missing `model`")))?;
        let model = r.model(model_v, &format!("{at}.model"))?;
        let params = r.params(map.get("parameters"), &format!("{at}.parameters"))?;
        sources.push(InputSlice { model, layers: None, params });
    }
    if let Some(b) = base {
        if !sources.iter().any(|s| same_path(&s.model, b)) {
            sources.push(InputSlice { model: b.to_path_buf(), layers: None, params: Params::new() });
        }
    }
    Ok(OutputSlice { sources, params: Params::new() })
}

fn slices(r: &Reader<'_>, v: &Value) -> Result<Vec<OutputSlice>> {
    let items = v.as_sequence().ok_or_else(|| r.err("slices: expected a list of {sources, parameters}"))?;
    if items.is_empty() {
        return Err(r.err("slices: the list is empty"));
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("slices[{i}]");
        let map = r.map(item, &at)?;
        r.keys(map, &["sources", "parameters"], &at)?;
        let srcs =
            map.get("sources").and_then(Value::as_sequence).filter(|s| !s.is_empty()).ok_or_else(|| {
                r.err(format!("{at}: missing `sources` (a list of {{model, layer_range}})"))
            })?;
        let mut sources = Vec::new();
        for (j, src) in srcs.iter().enumerate() {
            let at = format!("{at}.sources[{j}]");
            let m = r.map(src, &at)?;
            r.keys(m, &["model", "layer_range", "parameters"], &at)?;
            let model_v = m.get("model").ok_or_else(|| r.err(format!("{at}: missing `model`")))?;
            let model = r.model(model_v, &format!("{at}.model"))?;
            let layers = r.layer_range(m.get("layer_range"), &at)?;
            let params = r.params(m.get("parameters"), &format!("{at}.parameters"))?;
            sources.push(InputSlice { model, layers: Some(layers), params });
        }
        let params = r.params(map.get("parameters"), &format!("{at}.parameters"))?;
        out.push(OutputSlice { sources, params });
    }
    Ok(out)
}

//! A merge spec resolved against the checkpoints, before any tensor data is read: each output
//! tensor with its input tensors (which model, which name) and its parameters evaluated for that
//! tensor's name and layer position. Everything a user can get wrong (a missing folder, models
//! of different shapes or vocabularies, a base model that is not among a slice's sources, a
//! missing weight, slices of different lengths) fails here, so nothing is written.
//!
//! Layout as mergekit plans it: the embeddings come from the first slice's sources, each output
//! layer from the same offset into every source's layer range, the final norm and lm_head from
//! the last slice's sources. Gradient parameters run over each slice's layers (t = i / (n - 1),
//! t = 1 for a one-layer slice); embeddings, norm and lm_head see t = 0, as in mergekit.

use super::params::{At, Scalar};
use super::spec::{same_path, InputSlice, MergeSpec, OutputSlice};
use super::MergeMethod;
use crate::error::{Result, TrainError};
use solar_model::checkpoint::{Checkpoint, SafeDType};
use solar_model::names::{layer_name, parameter_shapes, parse_layer_name, EMBED, LM_HEAD};
use solar_model::LlamaConfig;
use std::ops::Range;
use std::path::PathBuf;

/// One input of an output tensor.
#[derive(Clone, Debug)]
pub struct MergeInput {
    /// Index into `MergePlan::models`.
    pub model: usize,
    /// The tensor's name in that model (its own layer index; `model.embed_tokens.weight` for
    /// lm_head of a model with tied embeddings).
    pub tensor: String,
    pub weight: Option<f64>,
    pub density: f64,
    pub scale: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// The stored dtype of the base (or first) input.
    pub dtype: SafeDType,
    pub inputs: Vec<MergeInput>,
    /// Which input is the base model (SLERP's t = 0 end, the task vectors' origin).
    pub base: Option<usize>,
    pub t: Option<f64>,
    pub normalize: bool,
    pub lambda: f64,
    pub rescale: bool,
}

pub struct MergePlan {
    pub method: MergeMethod,
    pub seed: u64,
    pub dirs: Vec<PathBuf>,
    pub models: Vec<Checkpoint>,
    /// The output's config: the base (or first) model's, with the output's depth.
    pub config: LlamaConfig,
    /// Where the tokenizer and generation config are copied from.
    pub copy_from: PathBuf,
    pub tensors: Vec<OutputTensor>,
    /// Things worth telling the user that are not errors.
    pub notes: Vec<String>,
}

/// One output slice with its sources resolved to models and layer ranges.
struct Resolved<'a> {
    slice: &'a OutputSlice,
    /// (model index, its input slice, layer range) per source.
    sources: Vec<(usize, &'a InputSlice, Range<usize>)>,
}

impl MergePlan {
    pub fn resolve(spec: &MergeSpec) -> Result<MergePlan> {
        let dirs = spec.models();
        let mut models = Vec::with_capacity(dirs.len());
        for dir in &dirs {
            let ckpt = Checkpoint::open(dir)?;
            ckpt.validate()?;
            models.push(ckpt);
        }
        let mut notes = Vec::new();
        check_architectures(&dirs, &models, &mut notes)?;
        let index_of = |p: &PathBuf| dirs.iter().position(|d| same_path(d, p));
        let base = spec.base.as_ref().and_then(index_of);

        let mut resolved = Vec::new();
        for (i, slice) in spec.slices.iter().enumerate() {
            let mut sources = Vec::new();
            for src in &slice.sources {
                let m = index_of(&src.model)
                    .ok_or_else(|| spec.error(format!("model {} not opened", src.model.display())))?;
                let n = models[m].config().num_hidden_layers;
                let range = src.layers.clone().unwrap_or(0..n);
                if range.start >= range.end || range.end > n {
                    return Err(spec.error(format!(
                        "slices[{i}]: layer_range [{}, {}] of {} is not a range of its {n} layers (need 0 <= start < end <= {n})",
                        range.start,
                        range.end,
                        src.model.display()
                    )));
                }
                sources.push((m, src, range));
            }
            check_slice(spec, i, &sources, &dirs, base)?;
            resolved.push(Resolved { slice, sources });
        }

        // Output layer -> (slice, offset into its sources' ranges, gradient position t).
        let mut layers = Vec::new();
        for (s, r) in resolved.iter().enumerate() {
            let n = r.sources[0].2.len();
            for k in 0..n {
                layers.push((s, k, if n > 1 { k as f64 / (n - 1) as f64 } else { 1.0 }));
            }
        }
        let reference = base.unwrap_or(resolved[0].sources[0].0);
        let config = LlamaConfig { num_hidden_layers: layers.len(), ..models[reference].config().clone() };

        let mut tensors = Vec::new();
        for (name, shape) in parameter_shapes(&config) {
            let (r, offset, t) = match parse_layer_name(&name) {
                Some((l, _)) => (&resolved[layers[l].0], Some(layers[l].1), layers[l].2),
                None if name == EMBED => (&resolved[0], None, 0.0),
                None => (&resolved[resolved.len() - 1], None, 0.0),
            };
            tensors.push(plan_tensor(spec, &dirs, &models, base, r, name, shape, offset, t, &mut notes)?);
        }
        Ok(MergePlan {
            method: spec.method,
            seed: spec.seed,
            copy_from: dirs[reference].clone(),
            dirs,
            models,
            config,
            tensors,
            notes,
        })
    }
}

/// Same shapes everywhere: hidden size, heads, FFN width and, above all, the vocabulary.
fn check_architectures(dirs: &[PathBuf], models: &[Checkpoint], notes: &mut Vec<String>) -> Result<()> {
    let first = models[0].config();
    // Each field with a tensor whose shape it sets, so the error can name one.
    let fields = |c: &LlamaConfig| {
        [
            ("hidden_size", c.hidden_size, EMBED),
            ("intermediate_size", c.intermediate_size, "model.layers.0.mlp.gate_proj.weight"),
            ("num_attention_heads", c.num_attention_heads, "model.layers.0.self_attn.q_proj.weight"),
            ("num_key_value_heads", c.num_key_value_heads, "model.layers.0.self_attn.k_proj.weight"),
            ("head_dim", c.head_dim, "model.layers.0.self_attn.q_proj.weight"),
        ]
    };
    for (dir, m) in dirs.iter().zip(models).skip(1) {
        let c = m.config();
        if c.vocab_size != first.vocab_size {
            return Err(TrainError::Msg(format!(
                "merge: model {}: tensor `{EMBED}`: vocabulary of {} tokens, but {} has {} (merged models must share a vocabulary)",
                dir.display(),
                c.vocab_size,
                dirs[0].display(),
                first.vocab_size
            )));
        }
        for ((field, a, tensor), (_, b, _)) in fields(c).into_iter().zip(fields(first)) {
            if a != b {
                let (got, want) = (shape_of(m, tensor), shape_of(&models[0], tensor));
                return Err(TrainError::Msg(format!(
                    "merge: model {}: tensor `{tensor}` has shape {got:?}, but {} has {want:?} ({field} {a} vs {b}): \
                     the models do not share an architecture",
                    dir.display(),
                    dirs[0].display()
                )));
            }
        }
        if c.model_type != first.model_type {
            notes.push(format!(
                "{} is {}, {} is {}",
                dir.display(),
                c.model_type.name(),
                dirs[0].display(),
                first.model_type.name()
            ));
        }
        let tok = |d: &PathBuf| std::fs::read(d.join("tokenizer.json")).ok();
        if let (Some(a), Some(b)) = (tok(dir), tok(&dirs[0])) {
            if a != b {
                notes.push(format!(
                    "tokenizer.json of {} differs from {}'s",
                    dir.display(),
                    dirs[0].display()
                ));
            }
        }
    }
    Ok(())
}

fn shape_of(m: &Checkpoint, tensor: &str) -> Vec<usize> {
    m.info(tensor).map(|i| i.shape.clone()).unwrap_or_default()
}

/// What each method needs of a slice's sources.
fn check_slice(
    spec: &MergeSpec,
    i: usize,
    sources: &[(usize, &InputSlice, Range<usize>)],
    dirs: &[PathBuf],
    base: Option<usize>,
) -> Result<()> {
    let len = sources[0].2.len();
    if let Some((_, src, r)) = sources.iter().find(|s| s.2.len() != len) {
        return Err(spec.error(format!(
            "slices[{i}]: {} gives {} layers but {} gives {len}: every source of a slice needs as many layers",
            src.model.display(),
            r.len(),
            sources[0].1.model.display()
        )));
    }
    let method = spec.method;
    let has_base = base.is_some_and(|b| sources.iter().any(|s| s.0 == b));
    match method {
        MergeMethod::Passthrough if sources.len() != 1 => Err(spec.error(format!(
            "slices[{i}]: passthrough takes exactly one source per slice, found {}",
            sources.len()
        ))),
        MergeMethod::Slerp if sources.len() > 2 => {
            Err(spec.error(format!("slices[{i}]: slerp merges exactly two models, found {}", sources.len())))
        }
        m if m.needs_base() && !has_base => Err(spec.error(match base {
            None => format!("merge_method {m} needs a base_model"),
            Some(b) => format!("slices[{i}]: the base model {} is not among its sources", dirs[b].display()),
        })),
        _ => Ok(()),
    }
}

/// A parameter for one tensor: the source model's setting, then the slice's, then the global.
fn lookup(
    spec: &MergeSpec,
    slice: &OutputSlice,
    src: Option<&InputSlice>,
    name: &str,
    at: At<'_>,
) -> Option<Scalar> {
    let levels = src.map(|s| &s.params).into_iter().chain([&slice.params, &spec.params]);
    levels.filter_map(|p| p.get(name)).find_map(|s| s.evaluate(at))
}

fn number(v: Option<Scalar>, name: &str, tensor: &str) -> Result<Option<f64>> {
    match v {
        None => Ok(None),
        Some(Scalar::Num(x)) => Ok(Some(x)),
        Some(Scalar::Bool(_)) => Err(TrainError::Msg(format!(
            "merge: tensor `{tensor}`: parameter `{name}` must be a number, not true/false"
        ))),
    }
}

fn flag(v: Option<Scalar>, default: bool) -> bool {
    match v {
        None => default,
        Some(Scalar::Bool(b)) => b,
        Some(Scalar::Num(x)) => x != 0.0,
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_tensor(
    spec: &MergeSpec,
    dirs: &[PathBuf],
    models: &[Checkpoint],
    base: Option<usize>,
    r: &Resolved<'_>,
    name: String,
    shape: Vec<usize>,
    offset: Option<usize>,
    t: f64,
    notes: &mut Vec<String>,
) -> Result<OutputTensor> {
    let method = spec.method;
    let mut inputs = Vec::with_capacity(r.sources.len());
    for &(m, src, ref range) in &r.sources {
        let mut tensor = match (offset, parse_layer_name(&name)) {
            (Some(k), Some((_, suffix))) => layer_name(range.start + k, suffix),
            _ => name.clone(),
        };
        if tensor == LM_HEAD && models[m].info(LM_HEAD).is_none() {
            notes.push(format!("{} ties its embeddings: its {EMBED} serves as {LM_HEAD}", dirs[m].display()));
            tensor = EMBED.to_string();
        }
        let info = models[m].info(&tensor).ok_or_else(|| {
            TrainError::Msg(format!("merge: model {}: tensor `{tensor}` is missing", dirs[m].display()))
        })?;
        if info.shape != shape {
            return Err(TrainError::Msg(format!(
                "merge: model {}: tensor `{tensor}` has shape {:?}, but the merged model needs {shape:?}",
                dirs[m].display(),
                info.shape
            )));
        }
        let at = At { tensor: &tensor, t };
        let get = |p: &str| number(lookup(spec, r.slice, Some(src), p, at), p, &tensor);
        let is_base = Some(m) == base;
        let weight = get("weight")?;
        let needs_weight = method == MergeMethod::Linear || (method.uses_task_vectors() && !is_base);
        if needs_weight && weight.is_none() {
            return Err(spec.error(format!(
                "missing parameter `weight` for model {} (tensor `{tensor}`)",
                dirs[m].display()
            )));
        }
        let density = get("density")?.unwrap_or(1.0);
        inputs.push(MergeInput { model: m, tensor: tensor.clone(), weight, density, scale: get("scale")? });
    }
    let mut base_input = base.and_then(|b| inputs.iter().position(|i| i.model == b));
    if method == MergeMethod::Slerp {
        // SLERP's first tensor is the base (t = 0), whatever order the config lists them in.
        if let Some(b) = base_input {
            inputs.swap(0, b);
            base_input = Some(0);
        }
    }
    let at = At { tensor: &name, t };
    let global = |p: &str| lookup(spec, r.slice, None, p, at);
    let t_value = number(global("t"), "t", &name)?;
    if method == MergeMethod::Slerp && t_value.is_none() && inputs.len() == 2 {
        return Err(spec.error(format!("missing parameter `t` (tensor `{name}`)")));
    }
    let lambda = number(global("lambda"), "lambda", &name)?.unwrap_or(1.0);
    let dtype =
        models[inputs[base_input.unwrap_or(0)].model].dtype_of(&inputs[base_input.unwrap_or(0)].tensor)?;
    Ok(OutputTensor {
        normalize: flag(global("normalize"), method.default_normalize()),
        rescale: flag(global("rescale"), method.default_rescale()),
        name,
        shape,
        dtype,
        inputs,
        base: base_input,
        t: t_value,
        lambda,
    })
}

//! `merge`: resolves a spec into a plan (every check before anything is written), then streams
//! the output through the checkpoint writer one tensor at a time: read each input tensor as f32,
//! apply the method, write. Passthrough copies stored bytes untouched (as upscale does) unless a
//! `scale` applies. The output folder appears atomically, with the base (or first) model's
//! config (at the output's depth) and tokenizer files.

use super::methods::{self, Combine};
use super::plan::{MergePlan, OutputTensor};
use super::spec::MergeSpec;
use super::MergeMethod;
use crate::error::{Result, TrainError};
use solar_model::checkpoint::{
    decode_f32, write_checkpoint, PlannedTensor, SafeDType, TensorSink, WriteOptions,
};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct MergeReport {
    pub method: MergeMethod,
    /// The input model folders, base first when there is one.
    pub models: Vec<PathBuf>,
    pub layers: usize,
    pub tensors: usize,
    pub num_parameters: u64,
    /// Bytes of tensor data written.
    pub total_size: u64,
    pub files: Vec<String>,
    pub dtype: SafeDType,
    /// Worth telling the user, not errors (tied embeddings used as lm_head, differing tokenizers).
    pub notes: Vec<String>,
}

/// Merges as `spec` says into `out` (refused if it exists unless `opts.overwrite`). The output
/// dtype is `opts.dtype`, else the spec's (YAML `dtype`), else each tensor's base dtype.
pub fn merge(spec: &MergeSpec, out: &Path, opts: &WriteOptions) -> Result<MergeReport> {
    let plan = MergePlan::resolve(spec)?;
    let opts = WriteOptions { dtype: opts.dtype.or(spec.dtype), ..opts.clone() };
    let planned: Vec<PlannedTensor> = plan
        .tensors
        .iter()
        .map(|t| PlannedTensor { name: t.name.clone(), dtype: t.dtype, shape: t.shape.clone() })
        .collect();
    let mut bytes = Vec::new();
    let mut failure: Option<TrainError> = None;
    let written = write_checkpoint(out, &plan.config, &planned, &opts, Some(&plan.copy_from), |i, sink| {
        // Between tensors a SIGINT/SIGTERM abandons the output cleanly (nothing is in place yet).
        solar_model::output::interrupt::check()?;
        let tensor = &plan.tensors[i];
        let result = fill(&plan, tensor, sink, &mut bytes);
        // The writer speaks ModelError; keep ours whole (it names the model and tensor) and
        // hand the writer a stand-in so it abandons the output.
        result.map_err(|e| {
            let msg = e.to_string();
            failure = Some(e);
            solar_model::ModelError::Msg(msg)
        })
    });
    let report = match (written, failure) {
        (Ok(r), _) => r,
        (Err(_), Some(e)) => return Err(e),
        (Err(e), None) => return Err(e.into()),
    };
    let mut notes = plan.notes.clone();
    notes.dedup();
    Ok(MergeReport {
        method: plan.method,
        models: plan.dirs.clone(),
        layers: plan.config.num_hidden_layers,
        tensors: report.tensors,
        num_parameters: plan.config.num_parameters(),
        total_size: report.total_size,
        files: report.files,
        dtype: report.dtype,
        notes,
    })
}

/// Reads one input tensor as f32.
fn load(plan: &MergePlan, input: usize, t: &OutputTensor, buf: &mut Vec<u8>) -> Result<Vec<f32>> {
    let inp = &t.inputs[input];
    let ckpt = &plan.models[inp.model];
    let src = ckpt.dtype_of(&inp.tensor)?;
    let mut out = Vec::with_capacity(t.shape.iter().product());
    ckpt.stream_bytes(&inp.tensor, buf, |b| {
        decode_f32(src, b, &mut out);
        Ok(())
    })?;
    Ok(out)
}

fn fill(plan: &MergePlan, t: &OutputTensor, sink: &mut TensorSink<'_>, buf: &mut Vec<u8>) -> Result<()> {
    let unscaled = t.inputs.len() == 1 && t.inputs[0].scale.is_none();
    if plan.method == MergeMethod::Passthrough && unscaled {
        let inp = &t.inputs[0];
        let ckpt = &plan.models[inp.model];
        let src = ckpt.dtype_of(&inp.tensor)?;
        return Ok(ckpt.stream_bytes(&inp.tensor, buf, |b| sink.write_bytes(src, b))?);
    }
    let merged = compute(plan, t, buf)?;
    Ok(sink.write_f32(&merged)?)
}

fn compute(plan: &MergePlan, t: &OutputTensor, buf: &mut Vec<u8>) -> Result<Vec<f32>> {
    let weights =
        |idx: &[usize]| -> Vec<f64> { idx.iter().map(|&i| t.inputs[i].weight.unwrap_or(0.0)).collect() };
    match plan.method {
        MergeMethod::Passthrough => {
            let mut x = load(plan, 0, t, buf)?;
            let s = t.inputs[0].scale.unwrap_or(1.0);
            x.iter_mut().for_each(|v| *v = (*v as f64 * s) as f32);
            Ok(x)
        }
        MergeMethod::Linear => {
            let all: Vec<usize> = (0..t.inputs.len()).collect();
            let w = weights(&all);
            let total: f64 = w.iter().sum();
            if t.normalize && total == 0.0 {
                return Err(TrainError::Msg(format!(
                    "merge: tensor `{}`: the weights sum to 0, so they cannot be normalized (set normalize: false)",
                    t.name
                )));
            }
            let xs = (0..t.inputs.len()).map(|i| load(plan, i, t, buf)).collect::<Result<Vec<_>>>()?;
            let refs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
            Ok(methods::linear(&refs, &w, t.normalize))
        }
        MergeMethod::Slerp => {
            let a = load(plan, 0, t, buf)?;
            if t.inputs.len() == 1 {
                return Ok(a);
            }
            let b = load(plan, 1, t, buf)?;
            Ok(methods::slerp(t.t.unwrap_or(0.0), &a, &b))
        }
        _ => task_vectors(plan, t, buf),
    }
}

/// Task arithmetic, TIES and DARE: deltas against the base, sparsified, combined, added back.
fn task_vectors(plan: &MergePlan, t: &OutputTensor, buf: &mut Vec<u8>) -> Result<Vec<f32>> {
    let Some(b) = t.base else {
        return Err(TrainError::Msg(format!("merge: tensor `{}`: no base model among the inputs", t.name)));
    };
    let base = load(plan, b, t, buf)?;
    let others: Vec<usize> = (0..t.inputs.len()).filter(|&i| i != b).collect();
    let mut deltas = Vec::with_capacity(others.len());
    for (position, &i) in others.iter().enumerate() {
        let mut d = load(plan, i, t, buf)?;
        d.iter_mut().zip(&base).for_each(|(x, b)| *x -= b);
        let density = t.inputs[i].density;
        if density < 1.0 {
            let before = methods::l1(&d);
            match plan.method {
                MergeMethod::Ties => {
                    let k = methods::kept_count(density, d.len());
                    if k == 0 {
                        return Err(TrainError::Msg(format!(
                            "merge: model {}: tensor `{}`: density {density} keeps none of its {} entries",
                            plan.dirs[t.inputs[i].model].display(),
                            t.inputs[i].tensor,
                            d.len()
                        )));
                    }
                    methods::keep_top_magnitude(&mut d, k);
                }
                MergeMethod::DareTies | MergeMethod::DareLinear => {
                    let mut rng = methods::dare_rng(plan.seed, &t.name, position);
                    methods::random_drop(&mut d, density, &mut rng);
                }
                _ => {}
            }
            if t.rescale && plan.method != MergeMethod::TaskArithmetic {
                methods::rescale_l1(&mut d, before);
            }
        }
        deltas.push(d);
    }
    if deltas.is_empty() {
        return Ok(base);
    }
    let w: Vec<f64> = others.iter().map(|&i| t.inputs[i].weight.unwrap_or(0.0)).collect();
    let how = Combine { elect_sign: plan.method.elects_sign(), normalize: t.normalize, lambda: t.lambda };
    Ok(methods::combine(&base, &deltas, &w, how))
}

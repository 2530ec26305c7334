//! Depth up-scaling (SOLAR, arXiv 2312.15166): a new model whose layers are copies of a base
//! model's layers in a chosen order. `--remove M` on an n-layer base keeps base [0, n-M) then
//! base [M, n) (n = 32, M = 8: 48 layers, the seam is base 23 followed by base 8); `--slices`
//! stacks half-open ranges in order, like mergekit's passthrough merge. Embeddings, the final
//! norm and lm_head are copied unchanged.
//!
//! The copy streams chunk by chunk from the base checkpoint into the checkpoint writer, bytes
//! passing through untouched when the dtype stays, so memory stays near one read buffer however
//! large the model.

use crate::checkpoint::{write_checkpoint, Checkpoint, PlannedTensor, WriteOptions};
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::names::{layer_name, parameter_shapes, parse_layer_name};
use std::ops::Range;
use std::path::Path;

/// How the new layers are chosen, before the base's depth is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerSpec {
    /// `--remove M`: base [0, n-M) then base [M, n).
    Remove(usize),
    /// `--slices a:b,c:d,...`: the half-open ranges, stacked in order.
    Slices(Vec<Range<usize>>),
}

impl LayerSpec {
    /// Parses `--slices` text such as `0:24,8:32`. Ranges are checked against the base in `plan`.
    pub fn parse_slices(text: &str) -> Result<LayerSpec> {
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim) {
            let parsed = part
                .split_once(':')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
            let Some((a, b)) = parsed else {
                return Err(ModelError::Msg(format!(
                    "--slices: `{part}` is not a layer range a:b (half-open, e.g. 0:24,8:32)"
                )));
            };
            ranges.push(a..b);
        }
        Ok(LayerSpec::Slices(ranges))
    }

    /// The layer map for a base of `n` layers; errors name the flag and `n`.
    pub fn plan(&self, n: usize) -> Result<LayerPlan> {
        match self {
            LayerSpec::Remove(m) => LayerPlan::remove(n, *m),
            LayerSpec::Slices(ranges) => LayerPlan::from_slices(ranges, n),
        }
    }
}

/// For each new layer, the base layer it copies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    sources: Vec<usize>,
}

impl LayerPlan {
    /// SOLAR's map: base [0, n-m) ++ base [m, n), 2(n-m) layers. m = 0 doubles the base.
    pub fn remove(n: usize, m: usize) -> Result<LayerPlan> {
        if m >= n {
            return Err(ModelError::Msg(format!(
                "--remove {m}: must be less than the base model's {n} layers (0 <= M < {n})"
            )));
        }
        Ok(LayerPlan { sources: (0..n - m).chain(m..n).collect() })
    }

    /// Stacks half-open ranges of base layers; each needs 0 <= a < b <= n.
    pub fn from_slices(ranges: &[Range<usize>], n: usize) -> Result<LayerPlan> {
        if ranges.is_empty() {
            return Err(ModelError::Msg("--slices: no layer ranges given".into()));
        }
        let mut sources = Vec::new();
        for r in ranges {
            if r.start >= r.end || r.end > n {
                return Err(ModelError::Msg(format!(
                    "--slices: `{}:{}` is not a layer range of the base model's {n} layers (need 0 <= a < b <= {n})",
                    r.start, r.end
                )));
            }
            sources.extend(r.clone());
        }
        Ok(LayerPlan { sources })
    }

    /// `sources()[i]` is the base layer that new layer i copies.
    pub fn sources(&self) -> &[usize] {
        &self.sources
    }
    pub fn len(&self) -> usize {
        self.sources.len()
    }
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The base tensor a new tensor copies: layer tensors map through the plan, the rest
    /// (embeddings, final norm, lm_head) are their own source.
    pub fn source_name(&self, new_name: &str) -> Option<String> {
        match parse_layer_name(new_name) {
            Some((i, suffix)) => self.sources.get(i).map(|&src| layer_name(src, suffix)),
            None => Some(new_name.to_string()),
        }
    }

    /// The up-scaled config: the base's with the new depth.
    pub fn config(&self, base: &LlamaConfig) -> LlamaConfig {
        LlamaConfig { num_hidden_layers: self.len(), ..base.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct UpscaleReport {
    pub base_layers: usize,
    pub new_layers: usize,
    /// New layer i copies base layer `layer_map[i]`.
    pub layer_map: Vec<usize>,
    pub tensors: usize,
    /// Bytes of tensor data written.
    pub total_size: u64,
    pub num_parameters: u64,
    pub files: Vec<String>,
}

/// Up-scales the checkpoint in `model_dir` into `out_dir` (atomic; refused if it exists unless
/// `opts.overwrite`). The base is validated against its config first, so a broken base fails
/// before anything is written.
pub fn upscale(
    model_dir: &Path,
    out_dir: &Path,
    spec: &LayerSpec,
    opts: &WriteOptions,
) -> Result<UpscaleReport> {
    let base = Checkpoint::open(model_dir)?;
    base.validate()?;
    let plan = spec.plan(base.config().num_hidden_layers)?;
    let config = plan.config(base.config());

    // (new name, base name) in HF order for the new model.
    let mut sources = Vec::new();
    let mut planned = Vec::new();
    for (name, shape) in parameter_shapes(&config) {
        let Some(src) = plan.source_name(&name) else {
            return Err(ModelError::Msg(format!("upscale: no source for tensor `{name}`")));
        };
        let dtype = base.dtype_of(&src)?;
        planned.push(PlannedTensor { name, dtype, shape });
        sources.push(src);
    }

    let mut buf = Vec::new();
    let report = write_checkpoint(out_dir, &config, &planned, opts, Some(model_dir), |i, sink| {
        // Between tensors a SIGINT/SIGTERM abandons the output cleanly (nothing is in place yet).
        crate::output::interrupt::check()?;
        let dtype = planned[i].dtype;
        base.stream_bytes(&sources[i], &mut buf, |bytes| sink.write_bytes(dtype, bytes))
    })?;
    Ok(UpscaleReport {
        base_layers: base.config().num_hidden_layers,
        new_layers: plan.len(),
        layer_map: plan.sources().to_vec(),
        tensors: report.tensors,
        total_size: report.total_size,
        num_parameters: config.num_parameters(),
        files: report.files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solar_map_from_the_paper() {
        let plan = LayerPlan::remove(32, 8).unwrap();
        assert_eq!(plan.len(), 48);
        assert_eq!(plan.sources()[..24], (0..24).collect::<Vec<_>>()[..]);
        assert_eq!(plan.sources()[24..], (8..32).collect::<Vec<_>>()[..]);
        // Same map as mergekit passthrough [0, 24] then [8, 32].
        let slices = LayerSpec::parse_slices("0:24, 8:32").unwrap().plan(32).unwrap();
        assert_eq!(slices, plan);
    }

    #[test]
    fn names_map_through_the_plan() {
        let plan = LayerPlan::remove(8, 2).unwrap();
        assert_eq!(
            plan.source_name("model.layers.7.mlp.up_proj.weight").unwrap(),
            "model.layers.3.mlp.up_proj.weight"
        );
        assert_eq!(plan.source_name("lm_head.weight").unwrap(), "lm_head.weight");
        assert_eq!(plan.source_name("model.layers.12.mlp.up_proj.weight"), None);
    }
}

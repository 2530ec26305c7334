//! Model merging with mergekit's semantics (`solar-train merge`, and the demo's merge of two
//! specialists): linear, SLERP, task arithmetic, TIES, DARE (TIES and linear) and passthrough
//! layer stacking, from command-line flags or an existing mergekit YAML config.
//!
//! - spec.rs: `MergeSpec` (what to merge), `MergeSpec::from_cli`, parameter checks
//! - config.rs: `MergeSpec::from_yaml`, mergekit's YAML (models or slices, parameters, dtype)
//! - params.rs: parameter settings: scalars, per-layer gradients, `{filter, value}` lists
//! - plan.rs: the spec resolved against the checkpoints: every output tensor, its inputs and
//!   parameters, after checking that all models share architecture, shapes and vocabulary
//! - methods.rs: the per-tensor math (plain slices of f32, no engine: merging is not training)
//! - run.rs: `merge`: streams tensor by tensor into an atomic checkpoint write
//!
//! Memory stays near one tensor per input model: inputs are read, merged and written one
//! output tensor at a time, never a whole model.

mod config;
pub mod methods;
pub mod params;
mod plan;
mod run;
mod spec;

pub use params::{gradient_at, At, Params, Scalar, Setting};
pub use plan::{MergeInput, MergePlan, OutputTensor};
pub use run::{merge, MergeReport};
pub use spec::{CliMerge, InputSlice, MergeSpec, OutputSlice};

use std::fmt;

/// The merge methods, named as mergekit's `merge_method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeMethod {
    Linear,
    Slerp,
    TaskArithmetic,
    Ties,
    DareTies,
    DareLinear,
    Passthrough,
}

pub const METHOD_NAMES: [&str; 7] =
    ["linear", "slerp", "task_arithmetic", "ties", "dare_ties", "dare_linear", "passthrough"];

impl MergeMethod {
    /// Accepts mergekit's spelling (`dare_ties`) and the command line's (`dare-ties`).
    pub fn parse(text: &str) -> Option<MergeMethod> {
        Some(match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "linear" => MergeMethod::Linear,
            "slerp" => MergeMethod::Slerp,
            "task_arithmetic" => MergeMethod::TaskArithmetic,
            "ties" => MergeMethod::Ties,
            "dare_ties" => MergeMethod::DareTies,
            "dare_linear" => MergeMethod::DareLinear,
            "passthrough" => MergeMethod::Passthrough,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MergeMethod::Linear => "linear",
            MergeMethod::Slerp => "slerp",
            MergeMethod::TaskArithmetic => "task_arithmetic",
            MergeMethod::Ties => "ties",
            MergeMethod::DareTies => "dare_ties",
            MergeMethod::DareLinear => "dare_linear",
            MergeMethod::Passthrough => "passthrough",
        }
    }

    /// Task-vector methods merge theta_i - base and add the result back onto the base.
    pub fn uses_task_vectors(self) -> bool {
        matches!(
            self,
            MergeMethod::TaskArithmetic | MergeMethod::Ties | MergeMethod::DareTies | MergeMethod::DareLinear
        )
    }

    /// Methods that cannot run without a base model.
    pub fn needs_base(self) -> bool {
        self.uses_task_vectors() || self == MergeMethod::Slerp
    }

    /// TIES sign election (mergekit's consensus_method = sum).
    pub fn elects_sign(self) -> bool {
        matches!(self, MergeMethod::Ties | MergeMethod::DareTies)
    }

    /// Parameters set once per output tensor (mergekit's `parameters()`).
    pub fn global_params(self) -> &'static [&'static str] {
        match self {
            MergeMethod::Linear => &["normalize"],
            MergeMethod::Slerp => &["t"],
            MergeMethod::Passthrough => &[],
            _ => &["normalize", "lambda", "rescale", "int8_mask"],
        }
    }

    /// Parameters set per input model (mergekit's `tensor_parameters()`).
    pub fn model_params(self) -> &'static [&'static str] {
        match self {
            MergeMethod::Linear => &["weight"],
            MergeMethod::Slerp => &[],
            MergeMethod::Passthrough => &["scale"],
            _ => &["weight", "density"],
        }
    }

    /// mergekit's defaults: linear and TIES normalize; task arithmetic and DARE do not.
    pub fn default_normalize(self) -> bool {
        matches!(self, MergeMethod::Linear | MergeMethod::Ties)
    }

    /// mergekit's defaults: DARE rescales what survives the drop; TIES' magnitude pruning does not.
    pub fn default_rescale(self) -> bool {
        matches!(self, MergeMethod::DareTies | MergeMethod::DareLinear)
    }
}

impl fmt::Display for MergeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

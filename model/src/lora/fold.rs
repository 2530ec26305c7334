//! Folding an adapter into its base: every adapted projection becomes W + s * B A and the result
//! is an ordinary HF model folder (PEFT's merge_and_unload, saved), which every other command
//! reads like any model. The base is loaded whole (it is one model, not a merge of many), and
//! the output is written atomically like every model.

use super::peft_io::load_adapter;
use crate::checkpoint::{Checkpoint, WriteOptions, WriteReport};
use crate::error::Result;
use crate::names::EMBED;
use crate::Llama;
use std::path::Path;

/// Writes `base` with the adapter in `adapter` folded in to `out`, stored as `opts.dtype` or,
/// by default, as the base is stored; tokenizer files come from the base.
pub fn fold_adapter(base: &Path, adapter: &Path, out: &Path, opts: &WriteOptions) -> Result<WriteReport> {
    let stored = Checkpoint::open(base)?.dtype_of(EMBED)?;
    let model = Llama::load(base)?;
    let lora = load_adapter(adapter, &model.config)?;
    let folded = model.with_lora(lora)?.folded()?;
    let opts = WriteOptions { dtype: Some(opts.dtype.unwrap_or(stored)), ..opts.clone() };
    folded.save(out, &opts, Some(base))
}

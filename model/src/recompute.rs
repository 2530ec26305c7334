//! Activation recompute for the decoder (`--recompute`): with it on and a tape present, each
//! layer is one checkpointed region of the engine's tape (solar_engine::recompute). The tape
//! keeps the layer's input x [B, T, C] only; the layer's internals (q, k, v, attention output,
//! the MLP's F-wide gate/up) are rebuilt from x during backward and freed straight after, so
//! activations held across the whole model shrink from about L x (a dozen [B, T, C]-sized
//! tensors) to L x [B, T, C] plus one layer's worth. Gradients stay bitwise the same.
//!
//! The region owns a view of the model holding only layer l's parameters (the same tensors,
//! same ids: Arc clones, no copy), and its LoRA adapters if any, so it outlives the borrow of
//! the model, as the tape does.

use crate::error::ModelError;
use crate::llama::Llama;
use crate::names;
use solar_engine::ops::{self, AttentionMask};
use solar_engine::recompute::{checkpoint, Region};
use solar_engine::{Tape, Tensor};
use std::sync::Arc;

impl Llama {
    /// A model holding only layer `l`'s parameters, enough for `block(.., l, ..)`.
    fn layer_view(&self, l: usize) -> Llama {
        let prefix = names::layer_name(l, "");
        let (names, params): (Vec<String>, Vec<Tensor>) = self
            .named_params()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(n, t)| (n.to_string(), t.clone()))
            .unzip();
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        let lora = self.lora.as_ref().map(|a| a.layer_view(l));
        Llama { config: self.config.clone(), names, params, index, lora, recompute: false }
    }

    /// Decoder block `l` on x [B, T, C] as a recomputed region of `tape` (training only:
    /// masked attention over `mask`).
    pub(crate) fn checkpointed_block(
        &self,
        tape: Option<&Tape>,
        l: usize,
        x: &Tensor,
        positions: &Tensor,
        mask: &AttentionMask,
    ) -> crate::Result<Tensor> {
        let view = Arc::new(self.layer_view(l));
        // With adapters the base is frozen (never watched): the region's parameters are the
        // layer's adapters alone.
        let params = match &view.lora {
            Some(a) if a.enabled() => a.named_params().map(|(_, t)| t.clone()).collect(),
            Some(_) => Vec::new(),
            None => view.params.clone(),
        };
        let (positions, mask) = (positions.clone(), mask.clone());
        let f: Region = Arc::new(move |tape: Option<&Tape>, x: &Tensor| {
            view.block(tape, l, x, &positions, |_, q, k, v| Ok(ops::attention(q, k, v, &mask)?)).map_err(
                |e| match e {
                    ModelError::Engine(e) => e,
                    other => solar_engine::Error::invalid("recompute", other.to_string()),
                },
            )
        });
        Ok(checkpoint(tape, x, &params, f)?)
    }
}

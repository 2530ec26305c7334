//! The LoRA side of the model: attaching adapters freezes the base (off the tape, and on CUDA
//! held once in bf16, since nobody updates it and no f32 master is needed), the optimizer sees
//! only the adapters, and folding turns base + adapters back into a plain model. An f64 copy of
//! the whole model serves the finite-difference gradient checks.

use super::{Lora, Target};
use crate::error::Result;
use crate::names;
use crate::Llama;
use solar_engine::{DType, Device, Tensor};
use std::collections::HashMap;

impl Llama {
    /// The model (and its adapters) in f64 on the CPU: finite-difference gradient checks.
    pub fn to_f64_for_checks(mut self) -> Result<Llama> {
        for p in &mut self.params {
            *p = p.to_dtype(DType::F64)?;
        }
        if let Some(lora) = &mut self.lora {
            for (_, p) in lora.named_params_mut() {
                *p = p.to_dtype(DType::F64)?;
            }
        }
        Ok(self)
    }

    /// Adds LoRA adapters: from now on only they train, and the base is frozen (held in bf16
    /// once on CUDA: no f32 master is needed for weights nobody updates).
    pub fn with_lora(mut self, mut lora: Lora) -> Result<Llama> {
        lora.move_to(self.device())?;
        self.lora = Some(lora);
        self.freeze_base()?;
        Ok(self)
    }

    pub(crate) fn freeze_base(&mut self) -> Result<()> {
        if self.lora.is_some() && self.device().is_cuda() {
            for p in &mut self.params {
                if p.dtype() != DType::BF16 {
                    *p = p.to_dtype(DType::BF16)?;
                }
            }
        }
        Ok(())
    }

    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    pub fn lora_mut(&mut self) -> Option<&mut Lora> {
        self.lora.as_mut()
    }

    /// Removes and returns the adapters, leaving the base.
    pub fn take_lora(&mut self) -> Option<Lora> {
        self.lora.take()
    }

    /// What the optimizer trains, (name, tensor): the adapters when there are any, else every
    /// parameter.
    pub fn trainable_params(&self) -> Vec<(&str, &Tensor)> {
        match &self.lora {
            Some(l) => l.named_params().collect(),
            None => self.named_params().collect(),
        }
    }

    pub fn trainable_params_mut(&mut self) -> Vec<(&str, &mut Tensor)> {
        match &mut self.lora {
            Some(l) => l.named_params_mut().collect(),
            None => self.names.iter().map(String::as_str).zip(self.params.iter_mut()).collect(),
        }
    }

    /// The base with the adapters folded in (W + s B A per adapted projection), f32, no adapters.
    pub fn folded(&self) -> Result<Llama> {
        let mut named = HashMap::new();
        for (name, p) in self.named_params() {
            let p = p.to_device(Device::Cpu)?.to_dtype(DType::F32)?;
            let target = names::parse_layer_name(name)
                .and_then(|(l, suffix)| Some((l, Target::of_weight_suffix(suffix)?)));
            let t = match (&self.lora, target) {
                (Some(lora), Some((l, t))) => lora.fold(l, t, &p)?,
                _ => p,
            };
            named.insert(name.to_string(), t);
        }
        Llama::new(self.config.clone(), named)
    }
}

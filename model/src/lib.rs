//! solar-model: the Llama/Mistral model on the engine, HF checkpoint IO, depth up-scaling,
//! generation and the tokenizer. Filled by the model issue; empty until then so that nothing
//! pretends to work.

pub use solar_engine as engine;

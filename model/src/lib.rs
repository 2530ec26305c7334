//! solar-model: the Llama/Mistral model on the Solar engine, config.json, HF checkpoint IO,
//! depth up-scaling, generation and the tokenizer.

pub mod checkpoint;
pub mod config;
pub mod dus;
pub mod error;
pub mod generate;
pub mod init;
pub mod llama;
pub mod lora;
pub mod names;
pub mod output;
pub mod presets;
mod recompute;
pub mod tokenizer;

pub use config::{LlamaConfig, ModelType};
pub use error::{ModelError, Result};
pub use llama::{Llama, ModelInput};
pub use solar_engine as engine;

//! Data files: JSONL reading with FILE:LINE errors, and the language-model text formats.

pub mod jsonl;
pub mod lm;
pub mod pairs;
pub mod pretrain;
pub mod records;
pub mod rows;
pub mod sft;
pub mod template;

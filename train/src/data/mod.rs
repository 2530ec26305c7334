//! Data files: JSONL reading with FILE:LINE errors, and the language-model text formats.

pub mod jsonl;
pub mod lm;
pub mod rows;

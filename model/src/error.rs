//! The model crate's error: every message names the file and, where it applies, the tensor or
//! the config field, so a user can fix their checkpoint without reading our code.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },

    #[error("{}: field `{field}`: {msg}", path.display())]
    Field { path: PathBuf, field: String, msg: String },

    #[error("{}: tensor `{tensor}`: {msg}", path.display())]
    Tensor { path: PathBuf, tensor: String, msg: String },

    #[error("{0}")]
    Engine(#[from] solar_engine::Error),

    #[error("{0}")]
    Msg(String),

    /// SIGINT or SIGTERM arrived; the current output was abandoned (or finished) cleanly.
    #[error("interrupted by {0}: stopped cleanly, outputs are complete or untouched")]
    Interrupted(&'static str),
}

pub type Result<T> = std::result::Result<T, ModelError>;

impl ModelError {
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        ModelError::File { path: path.to_path_buf(), msg: msg.into() }
    }
    pub fn field(path: &Path, field: &str, msg: impl Into<String>) -> Self {
        ModelError::Field { path: path.to_path_buf(), field: field.into(), msg: msg.into() }
    }
    pub fn tensor(path: &Path, tensor: &str, msg: impl Into<String>) -> Self {
        ModelError::Tensor { path: path.to_path_buf(), tensor: tensor.into(), msg: msg.into() }
    }
    /// An IO error on `path`, with what we were doing.
    pub fn io(path: &Path, what: &str, e: std::io::Error) -> Self {
        ModelError::File { path: path.to_path_buf(), msg: format!("{what}: {e}") }
    }
}

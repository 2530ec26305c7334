//! The training side's error: data problems name FILE:LINE and the field; model and engine
//! errors pass through with their own file, tensor and op names.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{}:{line}: {msg}", path.display())]
    Line { path: PathBuf, line: usize, msg: String },

    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },

    #[error("{0}")]
    Model(#[from] solar_model::ModelError),

    #[error("{0}")]
    Engine(#[from] solar_engine::Error),

    #[error("{0}")]
    Msg(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub fn line(path: &Path, line: usize, msg: impl Into<String>) -> Self {
        TrainError::Line { path: path.to_path_buf(), line, msg: msg.into() }
    }
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        TrainError::File { path: path.to_path_buf(), msg: msg.into() }
    }
}

//! The error type of `selfcascade-sd`.

use thiserror::Error;

/// Everything that can go wrong while loading or running a Stable Diffusion model.
#[derive(Debug, Error)]
pub enum Error {
    /// A model folder or component that is missing or malformed.
    #[error("{0}")]
    Model(String),
    /// A config value the implementation cannot honour.
    #[error("{path}: {message}")]
    Config {
        /// The config file.
        path: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// A weight file problem: missing, unexpected or mis-shaped tensors, corrupt files.
    #[error("{0}")]
    Weights(String),
    /// Inputs of the wrong shape or kind.
    #[error("{0}")]
    Input(String),
    /// Tokenizer failures.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error of the backend-generic algorithms.
    #[error(transparent)]
    Core(#[from] selfcascade_core::Error),
}

impl Error {
    /// An I/O error for `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

impl From<Error> for selfcascade_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Core(c) => c,
            other => selfcascade_core::Error::Model(other.to_string()),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

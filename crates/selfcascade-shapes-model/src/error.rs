//! Errors of the shapes model: configuration, checkpoints, and the crates it builds on.

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What can go wrong building, training, saving or loading the shapes model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model or training configuration that cannot be honoured.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A checkpoint file that is not one this crate wrote (or is damaged).
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file involved.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Errors of the UNet and weight loading.
    #[error(transparent)]
    Sd(#[from] selfcascade_sd::Error),
    /// Errors of the schedulers and the sampler.
    #[error(transparent)]
    Core(#[from] selfcascade_core::Error),
    /// Errors of the shapes world (rendering).
    #[error(transparent)]
    Shapes(#[from] selfcascade_shapes::ShapesError),
}

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn checkpoint(path: &std::path::Path, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.display().to_string(),
            message: message.into(),
        }
    }
}

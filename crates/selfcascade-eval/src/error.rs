//! The error type of `selfcascade-eval`.

use thiserror::Error;

/// Everything that can go wrong while scoring images.
#[derive(Debug, Error)]
pub enum Error {
    /// An image that cannot be read or decoded, with its path.
    #[error("{path}: {message}")]
    Image {
        /// The image file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Inputs that cannot be scored (too few images, mismatched feature sizes, empty folders).
    #[error("{0}")]
    Input(String),
    /// A numerical failure (a decomposition that did not converge, non-finite statistics).
    #[error("{0}")]
    Numeric(String),
    /// A feature cache or weight file problem.
    #[error(transparent)]
    Model(#[from] selfcascade_sd::Error),
    /// An I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
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

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

//! Error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong in this crate. Rendering, grids and PNG I/O return it; measurement never
/// fails (an empty image simply has no objects).
#[derive(Debug, thiserror::Error)]
pub enum ShapesError {
    /// A width or height of zero was requested.
    #[error("image size {width}x{height} is empty")]
    EmptyImage {
        /// Requested width in pixels.
        width: u32,
        /// Requested height in pixels.
        height: u32,
    },
    /// A side above [`crate::MAX_SIDE`] was requested.
    #[error("image size {width}x{height} exceeds the maximum side {max}")]
    TooLarge {
        /// Requested width in pixels.
        width: u32,
        /// Requested height in pixels.
        height: u32,
        /// The largest side allowed.
        max: u32,
    },
    /// A flat buffer does not hold `3 * width * height` values.
    #[error("buffer holds {got} values, expected {expected}")]
    BufferSize {
        /// Number of values given.
        got: usize,
        /// Number of values needed.
        expected: usize,
    },
    /// A grid was asked for with no images or no columns.
    #[error("a grid needs at least one non-empty image and at least one column")]
    EmptyGrid,
    /// A scene violates the world's invariants (see [`crate::Scene::validate`]).
    #[error("invalid scene: {0}")]
    InvalidScene(String),
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// PNG encoding or decoding failed.
    #[error("png error on {path}: {source}")]
    Png {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
}

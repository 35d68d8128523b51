//! The error type of `selfcascade-core`.

use thiserror::Error;

/// Everything that can go wrong in the backend-generic algorithms.
///
/// Messages say what was wrong and what would be right, so a command-line tool can print them as they are.
#[derive(Debug, Error)]
pub enum Error {
    /// A scheduler configuration that cannot be used as given.
    #[error("scheduler config: {0}")]
    SchedulerConfig(String),
    /// A scheduler used wrongly (no timesteps set, index out of range, ...).
    #[error("scheduler: {0}")]
    Scheduler(String),
    /// A requested image size that cannot be planned.
    #[error("scale plan: {0}")]
    Plan(String),
    /// Invalid sampler settings (steps, strength, shapes).
    #[error("sampler: {0}")]
    Sampler(String),
    /// Latents became NaN or infinite.
    #[error("non-finite latents (NaN or inf) at stage {stage}, step {step} (timestep {timestep}); try another seed, fewer steps, or f32")]
    NonFinite {
        /// Stage index (0 = base size).
        stage: usize,
        /// Step index inside the stage.
        step: usize,
        /// Diffusion timestep of that step.
        timestep: f64,
    },
    /// The progress callback asked to stop.
    #[error("cancelled at stage {stage}, step {step}")]
    Cancelled {
        /// Stage index.
        stage: usize,
        /// Step index inside the stage.
        step: usize,
    },
    /// Injected noise of the wrong shape or missing.
    #[error("noise: {0}")]
    Noise(String),
    /// A failure inside a model (reported by a `Denoiser` implementation).
    #[error("{0}")]
    Model(String),
    /// An I/O error with the path it concerns.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

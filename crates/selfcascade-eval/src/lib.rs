//! Image-quality metrics as the paper reports them: FID and KID between two image sets, following
//! clean-fid's "clean" protocol, computed natively.
//!
//! - [`resize`]: Pillow-exact resampling (bicubic on float channels for `clean`, Lanczos on 8-bit
//!   images for `lanczos-crop`).
//! - [`inception`]: the FID Inception-v3 in burn, loading pytorch-fid's published weights.
//! - [`metrics`]: FID (matrix square root through symmetric eigendecompositions) and KID (cubic
//!   polynomial kernel, unbiased, random subsets).
//! - [`features`]: features of images and folders, with a per-folder cache.
//!
//! ```
//! use selfcascade_eval::metrics::{fid_kid, Features, KidOptions};
//! let a = Features::new((0..64).map(|i| (i % 7) as f32).collect(), 16, 4)?;
//! let b = Features::new((0..64).map(|i| (i % 5) as f32).collect(), 16, 4)?;
//! let score = fid_kid(&a, &b, KidOptions::default())?;
//! assert!(score.fid > 0.0 && score.n_real == 16);
//! # Ok::<(), selfcascade_eval::Error>(())
//! ```

pub mod error;
pub mod features;
pub mod inception;
pub mod metrics;
pub mod resize;

pub use error::{Error, Result};

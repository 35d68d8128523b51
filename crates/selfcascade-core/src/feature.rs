//! φ_n(h, t): the time-aware feature upsamplers of the tuned self-cascade model.

use crate::error::Result;
use burn::tensor::{backend::Backend, Tensor};

/// A set of N feature upsamplers, one per injection point of the UNet encoder (after down blocks
/// 0..N−2 and after the mid block for SD: N = 4). The UNet calls [`FeatureUpsampler::upsample`] with the
/// pivot's features at point `n` and the current timestep embedding, and adds the result to its own
/// high-resolution features at that point: ĥ_n = h_n + φ_n(h_n^{r−1}, t).
pub trait FeatureUpsampler<B: Backend> {
    /// Number of injection points N.
    fn num_points(&self) -> usize;
    /// Channels expected at each injection point (0 for `n ≥ num_points()`).
    fn channels(&self, n: usize) -> usize;
    /// Number of trainable parameters (the "trainable params" column of the paper's tables).
    fn trainable_parameters(&self) -> usize;
    /// φ_n(pivot_features, temb), resized to `size` = (height, width) of the high-resolution features.
    /// `temb` is the UNet's timestep embedding `[B, time_embed_dim]` for the same batch. A point, channel
    /// count or embedding width the upsampler does not have is an error, never a panic.
    fn upsample(
        &self,
        n: usize,
        pivot_features: Tensor<B, 4>,
        temb: Tensor<B, 2>,
        size: (usize, usize),
    ) -> Result<Tensor<B, 4>>;
}

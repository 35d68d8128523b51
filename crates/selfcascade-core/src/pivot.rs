//! φ_r: the fixed interpolation that carries a clean latent to the next stage's size.

use burn::tensor::{
    backend::Backend,
    module::interpolate,
    ops::{InterpolateMode, InterpolateOptions},
    Tensor,
};
use serde::{Deserialize, Serialize};

/// Resizes a clean latent `[B, C, h, w]` to `[B, C, height, width]`.
pub trait PivotUpsampler<B: Backend> {
    /// The resized latent.
    fn upsample(&self, latent: Tensor<B, 4>, height: usize, width: usize) -> Tensor<B, 4>;
}

/// Interpolation modes with PyTorch `F.interpolate` semantics (align_corners = False; bicubic a = −0.75).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// `mode="nearest"`.
    Nearest,
    /// `mode="bilinear"`.
    Bilinear,
    /// `mode="bicubic"` (the reference code's choice, the default).
    #[default]
    Bicubic,
}

impl std::str::FromStr for Interpolation {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "nearest" => Ok(Self::Nearest),
            "bilinear" => Ok(Self::Bilinear),
            "bicubic" => Ok(Self::Bicubic),
            _ => Err(crate::Error::Sampler(format!(
                "unknown interpolation `{s}`; expected nearest, bilinear or bicubic"
            ))),
        }
    }
}

impl<B: Backend> PivotUpsampler<B> for Interpolation {
    fn upsample(&self, latent: Tensor<B, 4>, height: usize, width: usize) -> Tensor<B, 4> {
        let [_, _, h, w] = latent.dims();
        if (h, w) == (height, width) {
            return latent;
        }
        let mode = match self {
            Self::Nearest => InterpolateMode::Nearest,
            Self::Bilinear => InterpolateMode::Bilinear,
            Self::Bicubic => InterpolateMode::Bicubic,
        };
        // burn defaults to align_corners = true; PyTorch's default is false.
        interpolate(
            latent,
            [height, width],
            InterpolateOptions::new(mode).with_align_corners(false),
        )
    }
}

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

/// φ applied to the last two (spatial) dimensions of a clean latent: `[B, C, h, w]` as is, or every
/// frame of a video latent `[B, C, T, h, w]` (the frame count is unchanged), to `height × width`.
pub fn upsample_spatial<B: Backend, const D: usize>(
    up: &(impl PivotUpsampler<B> + ?Sized),
    latent: Tensor<B, D>,
    height: usize,
    width: usize,
) -> Tensor<B, D> {
    let dims = latent.dims();
    let (b, c, h, w) = (dims[0], dims[1], dims[D - 2], dims[D - 1]);
    let t: usize = dims[2..D - 2].iter().product();
    let mut out = dims;
    out[D - 2] = height;
    out[D - 1] = width;
    // [B, C, T, h, w] → [B, T, C, h·w] → [B·T, C, h, w]: frames into the batch.
    let frames = latent
        .reshape([b, c, t, h * w])
        .swap_dims(1, 2)
        .reshape([b * t, c, h, w]);
    up.upsample(frames, height, width)
        .reshape([b, t, c, height * width])
        .swap_dims(1, 2)
        .reshape(out)
}

//! Hooks into the UNet forward pass used by the self-cascade method and its baselines, and the
//! PyTorch-exact resizes they need.

use crate::error::{Error, Result};
use crate::nn::{kernels, Conv2d};
use burn::tensor::{
    backend::Backend,
    module::interpolate,
    ops::{InterpolateMode, InterpolateOptions},
    Int, Tensor, TensorData,
};
use selfcascade_core::FeatureUpsampler;

/// Per-call changes to the UNet forward pass. `UNetHooks::default()` changes nothing and costs nothing.
///
/// The hooks act on the high-resolution sample only: the pivot of [`PivotInjection`] runs through the
/// plain encoder (no attention scaling, no re-dilation).
pub struct UNetHooks<'a, B: Backend> {
    /// Attn-SF: given the token count N of a self-attention layer (`attn1`), the factor its usual
    /// `1/sqrt(d_head)` logit scale is multiplied by (Jin et al.: `sqrt(ln N_test / ln N_train)`).
    /// Cross-attention (`attn2`) is never scaled. The factor must be finite and positive.
    pub self_attention_scale: Option<&'a dyn Fn(usize) -> f64>,
    /// ScaleCrafter re-dilation: given the diffusers path of a 3×3 convolution of a ResNet (`conv1`,
    /// `conv2`), a downsampler or an upsampler (e.g. `down_blocks.1.resnets.0.conv1`,
    /// `down_blocks.1.downsamplers.0.conv`, `mid_block.resnets.0.conv2`, `up_blocks.0.upsamplers.0.conv`),
    /// the dilation factor f for that convolution, or `None` to leave it alone. See [`redilated_conv`].
    #[allow(clippy::type_complexity)]
    pub dilation: Option<&'a dyn Fn(&str) -> Option<f64>>,
    /// The tuned self-cascade variant's feature injection from the previous stage's clean latent.
    pub pivot: Option<PivotInjection<'a, B>>,
}

impl<B: Backend> Default for UNetHooks<'_, B> {
    fn default() -> Self {
        Self {
            self_attention_scale: None,
            dilation: None,
            pivot: None,
        }
    }
}

impl<B: Backend> std::fmt::Debug for UNetHooks<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UNetHooks")
            .field("self_attention_scale", &self.self_attention_scale.is_some())
            .field("dilation", &self.dilation.is_some())
            .field("pivot", &self.pivot.as_ref().map(|p| p.latent.dims()))
            .finish()
    }
}

impl<B: Backend> UNetHooks<'_, B> {
    /// The Attn-SF factor for a self-attention layer over `tokens` tokens (1 when unset).
    pub(crate) fn attention_scale(&self, tokens: usize) -> Result<f64> {
        match self.self_attention_scale {
            None => Ok(1.0),
            Some(f) => {
                let s = f(tokens);
                if s.is_finite() && s > 0.0 {
                    Ok(s)
                } else {
                    Err(Error::Input(format!(
                        "self_attention_scale returned {s} for a self-attention layer of {tokens} tokens; \
                         it must be finite and positive"
                    )))
                }
            }
        }
    }
}

/// The tuned self-cascade variant's input (Algorithm 1 of the paper, as in the authors' code): the
/// pivot runs through the same frozen `conv_in`, down blocks and mid block, with the same time
/// embedding and text; after down blocks 0, 1, 2 (those that exist) and after the mid block, the
/// hidden state passed on becomes `h + φ_n(h_pivot, temb)`. The skip connections stay those of the
/// high-resolution sample; the pivot's own skips are discarded.
pub struct PivotInjection<'a, B: Backend> {
    /// The previous stage's clean latent `[B, C, h/2, w/2]` for a sample `[B, C, h, w]` (same batch).
    pub latent: Tensor<B, 4>,
    /// The feature upsamplers φ_n; `num_points()` and `channels(n)` must match
    /// [`super::UNet2DConditionModel::injection_channels`].
    pub upsampler: &'a dyn FeatureUpsampler<B>,
}

/// Nearest-neighbour resize to `size` = (height, width), exactly as PyTorch's
/// `F.interpolate(x, size=size, mode="nearest")` (source index `floor(dst · (in/out as f32))`).
pub fn resize_nearest<B: Backend>(x: Tensor<B, 4>, size: (usize, usize)) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let (oh, ow) = size;
    if (oh, ow) == (h, w) {
        return x;
    }
    if oh == 2 * h && ow == 2 * w {
        return kernels::upsample_nearest2x(x);
    }
    let device = x.device();
    let index = |input: usize, output: usize| -> Tensor<B, 1, Int> {
        let idx: Vec<i64> = if output == 2 * input {
            (0..output).map(|o| (o / 2) as i64).collect()
        } else {
            let scale = input as f32 / output as f32;
            (0..output)
                .map(|o| ((o as f32 * scale).floor() as i64).min(input as i64 - 1))
                .collect()
        };
        Tensor::from_data(TensorData::new(idx, [output]), &device)
    };
    let x = if oh != h {
        x.select(2, index(h, oh))
    } else {
        x
    };
    if ow != w {
        x.select(3, index(w, ow))
    } else {
        x
    }
}

/// Bilinear resize to `size` = (height, width) with half-pixel centres and no antialiasing, as PyTorch's
/// `F.interpolate(x, size=size, mode="bilinear", align_corners=False)`. Same size is the identity.
pub fn resize_bilinear<B: Backend>(x: Tensor<B, 4>, size: (usize, usize)) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    if (h, w) == size {
        return x;
    }
    interpolate(
        x,
        [size.0, size.1],
        InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
    )
}

/// The largest dilation factor [`redilated_conv`] accepts (ScaleCrafter uses at most 4).
pub const MAX_DILATION: f64 = 64.0;

/// A 3×3 convolution re-dilated by factor `f` (ScaleCrafter, He et al. 2024): integer `f` runs the
/// convolution with dilation `f` and padding `f`; fractional `f` uses `d = ceil(f)`, resizes the input
/// bilinearly by `d/f` (rounding the size half-to-even, as Python's `round`), convolves with dilation
/// `d`, and resizes the result bilinearly back to the size the undilated convolution produces. (The
/// reference code resizes to `floor(size/stride)`, which differs only for odd sizes at stride 2,
/// where it would break the UNet's skip connections.)
pub fn redilated_conv<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    f: f64,
    name: &str,
) -> Result<Tensor<B, 4>> {
    if !(f.is_finite() && f > 0.0 && f <= MAX_DILATION) {
        return Err(Error::Input(format!(
            "dilation hook returned {f} for `{name}`; it must be positive and at most {MAX_DILATION}"
        )));
    }
    if f == 1.0 {
        return Ok(conv.forward(x));
    }
    let d = f.ceil();
    let [_, _, h, w] = x.dims();
    let (k, s, p) = (conv.kernel_size(), conv.stride, conv.padding);
    let out = |n: usize| (n + 2 * p).saturating_sub(k) / s + 1;
    let plain_size = (out(h), out(w));
    let factor = d / f;
    let x = if factor == 1.0 {
        x
    } else {
        let scaled = |n: usize| ((n as f64 * factor).round_ties_even() as usize).max(1);
        resize_bilinear(x, (scaled(h), scaled(w)))
    };
    let y = conv.forward_dilated(x, d as usize);
    Ok(resize_bilinear(y, plain_size))
}

/// Errors unless `upsampler` has one point per entry of `expected`, with those channels (a UNet's
/// injection channels).
pub(crate) fn check_upsampler_channels<B: Backend>(
    upsampler: &dyn selfcascade_core::FeatureUpsampler<B>,
    expected: &[usize],
) -> Result<()> {
    let up = upsampler;
    let got: Vec<usize> = (0..up.num_points()).map(|n| up.channels(n)).collect();
    if got != expected {
        return Err(Error::Input(format!(
            "the feature upsampler has {} injection points with channels {got:?}; this UNet injects \
             at {} points with channels {expected:?}",
            got.len(),
            expected.len()
        )));
    }
    Ok(())
}

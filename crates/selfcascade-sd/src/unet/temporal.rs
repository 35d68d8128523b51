//! The temporal layers of the video UNet (diffusers' `TemporalConvLayer` and `TransformerTemporalModel`,
//! ModelScope text-to-video's design). Both take frames folded into the batch, `[B·T, C, H, W]` with the
//! frames of one video adjacent, mix information across the T frames at each pixel, and add their
//! result to the input.

use super::attention::BasicTransformerBlock;
use crate::error::{Error, Result};
use crate::load::{Init, Vb};
use crate::nn::{kernels, GroupNorm, Linear};
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

/// `[B·T, C, H, W]` → `[B, C, T, H·W]`: one video per row, frames along dim 2.
pub(crate) fn unfold_frames<B: Backend>(x: Tensor<B, 4>, frames: usize) -> Result<Tensor<B, 4>> {
    let [bt, c, h, w] = x.dims();
    if frames == 0 || !bt.is_multiple_of(frames) {
        return Err(Error::Input(format!(
            "a batch of {bt} frames cannot be split into videos of {frames} frames"
        )));
    }
    Ok(x.reshape([bt / frames, frames, c, h * w]).swap_dims(1, 2))
}

/// `[B, C, T, H·W]` → `[B·T, C, H, W]`.
pub(crate) fn fold_frames<B: Backend>(x: Tensor<B, 4>, h: usize, w: usize) -> Tensor<B, 4> {
    let [b, c, t, _] = x.dims();
    x.swap_dims(1, 2).reshape([b * t, c, h, w])
}

/// A `Conv3d` with kernel (3, 1, 1) and padding (1, 0, 0): a 3-tap convolution along the frames,
/// pixel by pixel. Held as a 2-D convolution with a 3×1 kernel over `[B, C, T, H·W]`.
#[derive(Module, Debug)]
pub struct TemporalConv<B: Backend> {
    /// `[out, in, 3, 1]` (`[out, in, 3, 1, 1]` on disk).
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> TemporalConv<B> {
    fn new(vb: &Vb<B>, in_channels: usize, out_channels: usize) -> Result<Self> {
        let bound = 1.0 / ((3 * in_channels) as f64).sqrt();
        let w = vb.tensor(
            "weight",
            [out_channels, in_channels, 3, 1, 1],
            Init::Uniform(bound),
        )?;
        Ok(Self {
            weight: Param::from_tensor(w.reshape([out_channels, in_channels, 3, 1])),
            bias: vb.param("bias", [out_channels], Init::Uniform(bound))?,
        })
    }

    /// The convolution on `[B, C, T, N]` (zero padding of one frame at each end).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        kernels::temporal_conv(x, self.weight.val(), Some(self.bias.val()))
    }
}

/// One stage of [`TemporalConvLayer`]: GroupNorm over all frames, SiLU, (dropout,) temporal conv.
#[derive(Module, Debug)]
pub struct TemporalConvStage<B: Backend> {
    /// `convN.0`.
    pub norm: GroupNorm<B>,
    /// `convN.2` (stage 1) or `convN.3` (stages 2–4, after the dropout at `.2`).
    pub conv: TemporalConv<B>,
}

impl<B: Backend> TemporalConvStage<B> {
    fn new(vb: &Vb<B>, conv_index: usize, channels: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(&vb.pp(0), groups, channels, 1e-5)?,
            conv: TemporalConv::new(&vb.pp(conv_index), channels, channels)?,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(self.norm.forward_silu(x))
    }
}

/// `TemporalConvLayer`: four (GroupNorm, SiLU, Conv3d (3,1,1)) stages along the frames, plus the input.
/// diffusers zero-initialises the last convolution, so an untrained layer is an identity.
#[derive(Module, Debug)]
pub struct TemporalConvLayer<B: Backend> {
    /// `conv1`.
    pub conv1: TemporalConvStage<B>,
    /// `conv2`.
    pub conv2: TemporalConvStage<B>,
    /// `conv3`.
    pub conv3: TemporalConvStage<B>,
    /// `conv4`.
    pub conv4: TemporalConvStage<B>,
}

impl<B: Backend> TemporalConvLayer<B> {
    /// Loads the layer at `vb` (e.g. `down_blocks.0.temp_convs.1`) over `channels` channels.
    pub fn new(vb: &Vb<B>, channels: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            conv1: TemporalConvStage::new(&vb.pp("conv1"), 2, channels, groups)?,
            conv2: TemporalConvStage::new(&vb.pp("conv2"), 3, channels, groups)?,
            conv3: TemporalConvStage::new(&vb.pp("conv3"), 3, channels, groups)?,
            conv4: TemporalConvStage::new(&vb.pp("conv4"), 3, channels, groups)?,
        })
    }

    /// The layer on `x` `[B·T, C, H, W]` holding videos of `frames` frames.
    pub fn forward(&self, x: Tensor<B, 4>, frames: usize) -> Result<Tensor<B, 4>> {
        let [_, _, h, w] = x.dims();
        let v = unfold_frames(x, frames)?;
        let y = [&self.conv1, &self.conv2, &self.conv3, &self.conv4]
            .iter()
            .fold(v.clone(), |y, stage| stage.forward(y));
        Ok(fold_frames(v.add(y), h, w))
    }
}

/// `TransformerTemporalModel`: GroupNorm (ε 1e-6) over all frames, `proj_in`, transformer blocks whose
/// two attentions are both self-attention across the frames of each pixel (`double_self_attention`),
/// `proj_out`, plus the input.
#[derive(Module, Debug)]
pub struct TransformerTemporalModel<B: Backend> {
    /// `norm`.
    pub norm: GroupNorm<B>,
    /// `proj_in`.
    pub proj_in: Linear<B>,
    /// `transformer_blocks`.
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    /// `proj_out`.
    pub proj_out: Linear<B>,
}

impl<B: Backend> TransformerTemporalModel<B> {
    /// Loads the model at `vb` (e.g. `transformer_in`, `down_blocks.0.temp_attentions.1`) over `channels`
    /// channels with `heads` heads of width `head_dim` (one transformer block).
    pub fn new(
        vb: &Vb<B>,
        channels: usize,
        heads: usize,
        head_dim: usize,
        groups: usize,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        if inner == 0 {
            return Err(Error::Model(format!(
                "{}: {heads} heads of width {head_dim}",
                vb.path("")
            )));
        }
        Ok(Self {
            norm: GroupNorm::new(&vb.pp("norm"), groups, channels, 1e-6)?,
            proj_in: Linear::new(&vb.pp("proj_in"), channels, inner, true)?,
            transformer_blocks: vec![BasicTransformerBlock::new(
                &vb.pp("transformer_blocks").pp(0),
                inner,
                heads,
                head_dim,
                None,
            )?],
            proj_out: Linear::new(&vb.pp("proj_out"), inner, channels, true)?,
        })
    }

    /// The model on `x` `[B·T, C, H, W]` holding videos of `frames` frames.
    pub fn forward(&self, x: Tensor<B, 4>, frames: usize) -> Result<Tensor<B, 4>> {
        let [_, c, h, w] = x.dims();
        let v = self.norm.forward(unfold_frames(x.clone(), frames)?);
        let [b, _, t, n] = v.dims();
        // [B, C, T, N] → one sequence of T tokens per pixel: [B·N, T, C].
        let tokens = v.permute([0, 3, 2, 1]).reshape([b * n, t, c]);
        let mut s = self.proj_in.forward(tokens);
        for block in &self.transformer_blocks {
            s = block.forward(s, None, 1.0);
        }
        let out = self
            .proj_out
            .forward(s)
            .reshape([b, n, t, c])
            .permute([0, 3, 2, 1]);
        Ok(fold_frames(out, h, w).add(x))
    }
}

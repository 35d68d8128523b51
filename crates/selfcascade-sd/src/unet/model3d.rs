//! `UNet3DConditionModel` (ModelScope text-to-video): construction from a diffusers folder and the
//! forward pass on video latents `[B, C, T, h, w]`.

use super::blocks::{
    down_path, injection_channels, unet_blocks, up_path, BlockSpec, DownBlock2D,
    UNetMidBlock2DCrossAttn, UpBlock2D,
};
use super::config::UNetArch;
use super::config3d::UNet3DConditionConfig;
use super::embeddings::{timestep_embedding, timestep_tensor, TimestepEmbedding};
use super::hooks::UNetHooks;
use super::temporal::TransformerTemporalModel;
use crate::error::{Error, Result};
use crate::load::{open_component, Vb};
use crate::nn::{kernels, Conv2d, GroupNorm};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use std::path::Path;

/// Heads of `transformer_in` (fixed in diffusers, whatever the config).
const TRANSFORMER_IN_HEADS: usize = 8;

/// The video UNet (diffusers' `UNet3DConditionModel`, ModelScope text-to-video): SD's UNet with the
/// frames folded into the batch for every spatial layer, a [`super::TemporalConvLayer`] after every
/// ResNet, a [`TransformerTemporalModel`] after every spatial transformer and after `conv_in`
/// (`transformer_in`), and the text and time embedding repeated per frame. Field names follow
/// diffusers' parameter names.
#[derive(Module, Debug)]
pub struct UNet3DConditionModel<B: Backend> {
    /// `conv_in`.
    pub conv_in: Conv2d<B>,
    /// `time_embedding`.
    pub time_embedding: TimestepEmbedding<B>,
    /// `transformer_in`.
    pub transformer_in: TransformerTemporalModel<B>,
    /// `down_blocks` (`CrossAttnDownBlock3D` / `DownBlock3D`).
    pub down_blocks: Vec<DownBlock2D<B>>,
    /// `mid_block` (`UNetMidBlock3DCrossAttn`).
    pub mid_block: UNetMidBlock2DCrossAttn<B>,
    /// `up_blocks` (`CrossAttnUpBlock3D` / `UpBlock3D`).
    pub up_blocks: Vec<UpBlock2D<B>>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm<B>,
    /// `conv_out`.
    pub conv_out: Conv2d<B>,
    #[module(skip)]
    config: UNet3DConditionConfig,
    #[module(skip)]
    arch: UNetArch,
}

impl<B: Backend> UNet3DConditionModel<B> {
    /// Builds the model from `config` with parameters from `vb` (loaded or randomly initialised).
    pub fn new(vb: &Vb<B>, config: &UNet3DConditionConfig) -> Result<Self> {
        let arch = config.arch()?;
        let head_dims = config.head_dims()?;
        let c0 = arch.channels[0];
        let temb = arch.time_embed_dim;
        // diffusers builds every spatial transformer of the video UNet with linear projections.
        let spec = |i: usize| BlockSpec {
            temb,
            groups: arch.groups,
            eps: config.norm_eps,
            heads: arch.heads[i],
            transformer_layers: 1,
            context_dim: arch.cross_attention_dim,
            linear_projection: true,
            temporal: true,
        };
        let (down_blocks, mid_block, up_blocks) =
            unet_blocks(vb, &arch, config.mid_block_scale_factor, spec)?;
        Ok(Self {
            conv_in: Conv2d::new(&vb.pp("conv_in"), config.in_channels, c0, 3, 1, 1)?,
            time_embedding: TimestepEmbedding::new(&vb.pp("time_embedding"), c0, temb)?,
            transformer_in: TransformerTemporalModel::new(
                &vb.pp("transformer_in"),
                c0,
                TRANSFORMER_IN_HEADS,
                head_dims[0],
                arch.groups,
            )?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(
                &vb.pp("conv_norm_out"),
                arch.groups,
                c0,
                config.norm_eps,
            )?,
            conv_out: Conv2d::new(&vb.pp("conv_out"), c0, config.out_channels, 3, 1, 1)?,
            config: config.clone(),
            arch,
        })
    }

    /// Loads a diffusers component folder (`…/unet` with `config.json` and safetensors weights, e.g.
    /// `variant = Some("fp16")`, converted to float32). Loading is strict: a missing, mis-shaped or
    /// unexpected tensor is an error naming it.
    pub fn load(dir: &Path, variant: Option<&str>, device: &B::Device) -> Result<Self> {
        let config = UNet3DConditionConfig::from_file(&dir.join("config.json"))?;
        let weights = open_component(dir, variant)?;
        let model = Self::new(&weights.root::<B>(device), &config)?;
        weights.finish()?;
        Ok(model)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &UNet3DConditionConfig {
        &self.config
    }

    /// The architecture resolved from the config.
    pub fn arch(&self) -> &UNetArch {
        &self.arch
    }

    /// Channels of the features at each injection point of the tuned variant (as the image UNet:
    /// after down blocks 0..min(3, n), then the mid block; ModelScope: `[320, 640, 1280, 1280]`).
    pub fn injection_channels(&self) -> Vec<usize> {
        injection_channels(&self.config.block_out_channels, self.mid_block.channels())
    }

    /// Width of the time embedding passed to the blocks (and, one row per frame, to feature upsamplers).
    pub fn time_embed_dim(&self) -> usize {
        self.arch.time_embed_dim
    }

    /// Errors unless `upsampler` has this UNet's injection points and channels.
    pub fn check_feature_upsampler(
        &self,
        upsampler: &dyn selfcascade_core::FeatureUpsampler<B>,
    ) -> Result<()> {
        super::hooks::check_upsampler_channels(upsampler, &self.injection_channels())
    }

    /// Predicts for `sample` `[B, in_channels, T, h, w]` (any T, h, w ≥ 1) at `timesteps` (one value
    /// for the whole batch, or one per video) with text `encoder_hidden_states` `[B, M,
    /// cross_attention_dim]`. Returns `[B, out_channels, T, h, w]`. `hooks` reach the spatial layers
    /// (Attn-SF scales the spatial self-attention only, re-dilation the spatial convolutions). The tuned
    /// variant's pivot (`hooks.pivot`) is the previous stage's clean video at half the frame size with
    /// its frames folded into the batch, `[B·T, C, h/2, w/2]` ([`fold_frames`]); it runs through the
    /// same input layers and blocks, and φ_n gets the time embedding repeated per frame.
    pub fn forward(
        &self,
        sample: Tensor<B, 5>,
        timesteps: &[f64],
        encoder_hidden_states: Tensor<B, 3>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 5>> {
        let [b, c, t, h, w] = sample.dims();
        if c != self.config.in_channels || b == 0 || t == 0 || h == 0 || w == 0 {
            return Err(Error::Input(format!(
                "sample has shape [{b}, {c}, {t}, {h}, {w}]; expected [B ≥ 1, {}, T ≥ 1, h ≥ 1, w ≥ 1]",
                self.config.in_channels
            )));
        }
        let [eb, m, d] = encoder_hidden_states.dims();
        let cross = self.arch.cross_attention_dim;
        if eb != b || d != cross || m == 0 {
            return Err(Error::Input(format!(
                "encoder_hidden_states has shape [{eb}, {m}, {d}]; expected [{b}, M ≥ 1, {cross}] \
                 for a sample of batch {b}"
            )));
        }
        if let Some(pivot) = &hooks.pivot {
            let [pb, pc, ph, pw] = pivot.latent.dims();
            if pb != b * t || pc != c || 2 * ph != h || 2 * pw != w {
                return Err(Error::Input(format!(
                    "pivot latent has shape [{pb}, {pc}, {ph}, {pw}]; for a sample [{b}, {c}, {t}, {h}, \
                     {w}] it must be the frames folded into the batch at half the size, [{}, {c}, h/2, w/2]",
                    b * t
                )));
            }
            self.check_feature_upsampler(pivot.upsampler)?;
        }
        let device = sample.device();
        let timesteps = timestep_tensor::<B>(b, timesteps, &device)?;
        let c0 = self.time_embedding.in_features();
        let emb = self
            .time_embedding
            .forward(timestep_embedding(timesteps, c0, true, 0.0));
        // One row per frame, the frames of a video adjacent (`repeat_interleave`).
        let per_frame_2 = |x: Tensor<B, 2>| {
            let [rows, k] = x.dims();
            x.unsqueeze_dim::<3>(1)
                .repeat_dim(1, t)
                .reshape([rows * t, k])
        };
        let emb = per_frame_2(emb);
        let temb_act = kernels::silu(emb.clone());
        let context = encoder_hidden_states
            .unsqueeze_dim::<4>(1)
            .repeat_dim(1, t)
            .reshape([b * t, m, d]);

        let input = |x: Tensor<B, 4>| -> Result<Tensor<B, 4>> {
            self.transformer_in.forward(self.conv_in.forward(x), t)
        };
        let x = input(fold_frames(sample))?;
        let pivot = match &hooks.pivot {
            Some(p) => Some((input(p.latent.clone())?, p.upsampler)),
            None => None,
        };
        let (x, skips) = down_path(
            &self.down_blocks,
            &self.mid_block,
            x,
            pivot,
            &emb,
            (&temb_act, &context, t),
            hooks,
        )?;
        let x = up_path(&self.up_blocks, x, skips, &temb_act, &context, t, hooks)?;
        let x = self.conv_out.forward(self.conv_norm_out.forward_silu(x));
        let out_c = x.dims()[1];
        Ok(x.reshape([b, t, out_c, h, w]).swap_dims(1, 2))
    }
}

/// `[B, C, T, h, w]` → `[B·T, C, h, w]`: the frames of each video adjacent in the batch (the video UNet's
/// layout for its spatial layers, and for a pivot).
pub fn fold_frames<B: Backend>(x: Tensor<B, 5>) -> Tensor<B, 4> {
    let [b, c, t, h, w] = x.dims();
    x.swap_dims(1, 2).reshape([b * t, c, h, w])
}

/// `[B·T, C, h, w]` → `[B, C, T, h, w]`, the inverse of [`fold_frames`]. Errors unless the batch is a
/// multiple of `frames` (≥ 1).
pub fn unfold_frames<B: Backend>(x: Tensor<B, 4>, frames: usize) -> Result<Tensor<B, 5>> {
    let [bt, c, h, w] = x.dims();
    if frames == 0 || !bt.is_multiple_of(frames) {
        return Err(Error::Input(format!(
            "{bt} rows cannot be split into videos of {frames} frames"
        )));
    }
    Ok(x.reshape([bt / frames, frames, c, h, w]).swap_dims(1, 2))
}

//! `UNet3DConditionModel` (ModelScope text-to-video): construction from a diffusers folder and the
//! forward pass on video latents `[B, C, T, h, w]`.

use super::blocks::{up_path, BlockSpec, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D};
use super::config::{BlockKind, UNetArch};
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
        let n = arch.channels.len();
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
        let mut down_blocks = Vec::with_capacity(n);
        let mut out_ch = c0;
        for i in 0..n {
            let in_ch = out_ch;
            out_ch = arch.channels[i];
            down_blocks.push(DownBlock2D::new(
                &vb.pp("down_blocks").pp(i),
                in_ch,
                out_ch,
                arch.layers[i],
                arch.down[i] == BlockKind::CrossAttn,
                i + 1 < n,
                &spec(i),
            )?);
        }
        let mut up_blocks = Vec::with_capacity(n);
        let mut out_ch = arch.channels[n - 1];
        for i in 0..n {
            let r = n - 1 - i;
            let prev = out_ch;
            out_ch = arch.channels[r];
            up_blocks.push(UpBlock2D::new(
                &vb.pp("up_blocks").pp(i),
                arch.channels[r.saturating_sub(1)],
                prev,
                out_ch,
                arch.layers[r] + 1,
                arch.up[i] == BlockKind::CrossAttn,
                i + 1 < n,
                &spec(r),
            )?);
        }
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
            mid_block: UNetMidBlock2DCrossAttn::new(
                &vb.pp("mid_block"),
                arch.channels[n - 1],
                config.mid_block_scale_factor,
                &spec(n - 1),
            )?,
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

    /// Predicts for `sample` `[B, in_channels, T, h, w]` (any T, h, w ≥ 1) at `timesteps` (one value
    /// for the whole batch, or one per video) with text `encoder_hidden_states` `[B, M,
    /// cross_attention_dim]`. Returns `[B, out_channels, T, h, w]`. `hooks` reach the spatial layers
    /// (Attn-SF scales the spatial self-attention only, re-dilation the spatial convolutions); the
    /// tuned variant's pivot injection is not supported by the video UNet and is an error.
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
        if hooks.pivot.is_some() {
            return Err(Error::Input(
                "pivot feature injection (the tuned self-cascade variant) is not supported by the \
                 video UNet"
                    .into(),
            ));
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
        let temb_act = kernels::silu(per_frame_2(emb));
        let context = encoder_hidden_states
            .unsqueeze_dim::<4>(1)
            .repeat_dim(1, t)
            .reshape([b * t, m, d]);

        let frames = sample.swap_dims(1, 2).reshape([b * t, c, h, w]);
        let mut x = self.conv_in.forward(frames);
        x = self.transformer_in.forward(x, t)?;
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(x, &temb_act, &context, t, hooks)?;
            skips.extend(states);
            x = out;
        }
        x = self.mid_block.forward(x, &temb_act, &context, t, hooks)?;
        let x = up_path(&self.up_blocks, x, skips, &temb_act, &context, t, hooks)?;
        let x = self.conv_out.forward(self.conv_norm_out.forward_silu(x));
        let out_c = x.dims()[1];
        Ok(x.reshape([b, t, out_c, h, w]).swap_dims(1, 2))
    }
}

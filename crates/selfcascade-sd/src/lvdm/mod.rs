//! LVDM's text-to-video UNet (He et al., the paper's video model; docs/lvdm.md), loaded from the
//! original latent-diffusion checkpoint (`.ckpt`, keys `model.diffusion_model.*`) without Python.
//!
//! It is SD 1.x's UNet with (1, 3, 3) convolutions (each a per-frame 2-D convolution here), GroupNorms
//! whose statistics span all frames of a video, and transformer blocks with two temporal self-attentions
//! with relative positions ([`blocks::TemporalAttention`]) around the cross-attention.

pub mod blocks;
pub mod checkpoint;

use crate::error::{Error, Result};
use crate::load::{TensorStore, Vb, Weights};
use crate::nn::{kernels, Conv2d, GroupNorm, Linear};
use crate::unet::{timestep_embedding, timestep_tensor, UNetHooks};
use blocks::{conv_1kk, Downsample, LvdmBlock, ResBlock, SpatialTemporalTransformer, Upsample};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The UNet's settings, with the field names of LVDM's yaml (`unet_config.params`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LvdmConfig {
    /// Latent channels in (4).
    pub in_channels: usize,
    /// Latent channels out (4).
    pub out_channels: usize,
    /// Channels of the first level (320).
    pub model_channels: usize,
    /// Channel multiplier per level (`[1, 2, 4, 4]`).
    pub channel_mult: Vec<usize>,
    /// ResBlocks per down level (2; up levels have one more).
    pub num_res_blocks: usize,
    /// Downsampling factors whose levels have transformers (`[4, 2, 1]`).
    pub attention_resolutions: Vec<usize>,
    /// Attention heads (8; head width = channels / heads).
    pub num_heads: usize,
    /// Text embedding width (768, CLIP ViT-L/14).
    pub context_dim: usize,
    /// Clipping distance of the relative positions (16; the tables have 2·16 + 1 rows).
    pub temporal_length: usize,
    /// GroupNorm groups (32 in LVDM's `GroupNorm32`).
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
}

fn default_groups() -> usize {
    32
}

impl LvdmConfig {
    /// `configs/lvdm_short/text2video.yaml`'s UNet.
    pub fn lvdm_short() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            model_channels: 320,
            channel_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            attention_resolutions: vec![4, 2, 1],
            num_heads: 8,
            context_dim: 768,
            temporal_length: 16,
            norm_num_groups: 32,
        }
    }

    /// Reads a JSON file with these fields.
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::load::read_checked_config(path, |c: &Self| c.validate())
    }

    /// Errors naming the field unless the settings describe a buildable UNet.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.channel_mult.is_empty() || self.channel_mult.contains(&0) {
            return Err(format!(
                "`channel_mult` = {:?} must list positive multipliers",
                self.channel_mult
            ));
        }
        for (name, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("model_channels", self.model_channels),
            ("num_res_blocks", self.num_res_blocks),
            ("num_heads", self.num_heads),
            ("context_dim", self.context_dim),
            ("norm_num_groups", self.norm_num_groups),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if !self.model_channels.is_multiple_of(2) {
            return Err(format!(
                "`model_channels` = {} must be even (the sinusoidal time embedding)",
                self.model_channels
            ));
        }
        Ok(())
    }
}

/// Key prefix of the UNet in a latent-diffusion checkpoint.
pub const CKPT_PREFIX: &str = "model.diffusion_model";

/// LVDM's 3-D UNet (`lvdm.models.modules.openaimodel3d.UNetModel` with `SpatialTemporalTransformer`),
/// field names as the checkpoint's (`input_blocks`, `middle_block`, `output_blocks`, `time_embed`, `out`).
#[derive(Module, Debug)]
pub struct LvdmUNet<B: Backend> {
    /// `time_embed.0`, `time_embed.2`.
    pub time_embed: (Linear<B>, Linear<B>),
    /// `input_blocks.0.0`.
    pub conv_in: Conv2d<B>,
    /// `input_blocks.1…`.
    pub input_blocks: Vec<LvdmBlock<B>>,
    /// `middle_block.0`, `.1`, `.2`.
    pub middle_block: (ResBlock<B>, SpatialTemporalTransformer<B>, ResBlock<B>),
    /// `output_blocks`.
    pub output_blocks: Vec<LvdmBlock<B>>,
    /// `out.0`, `out.2`.
    pub out: (GroupNorm<B>, Conv2d<B>),
    #[module(skip)]
    config: LvdmConfig,
    /// Index in `input_blocks` of each level's last block (its downsampler, or its last ResBlock).
    #[module(skip)]
    level_ends: Vec<usize>,
}

/// Injection points of the tuned variant after the encoder levels (then one after the middle block),
/// as for the image UNet's down blocks.
const LEVEL_INJECTIONS: usize = 3;

impl<B: Backend> LvdmUNet<B> {
    /// Builds the UNet of `config` from `vb` (at the UNet's root, e.g. `model.diffusion_model`).
    pub fn new(vb: &Vb<B>, config: &LvdmConfig) -> Result<Self> {
        config.validate().map_err(|message| Error::Config {
            path: "LVDM config".into(),
            message,
        })?;
        let c = config;
        let (mc, g) = (c.model_channels, c.norm_num_groups);
        let temb = 4 * mc;
        let st = |vb: &Vb<B>, ch: usize| {
            SpatialTemporalTransformer::new(
                vb,
                ch,
                c.num_heads,
                c.context_dim,
                c.temporal_length,
                g,
            )
        };
        let inputs = vb.pp("input_blocks");
        let mut input_blocks = Vec::new();
        let mut level_ends = Vec::with_capacity(c.channel_mult.len());
        let (mut chans, mut ch, mut ds) = (vec![mc], mc, 1usize);
        let levels = c.channel_mult.len();
        for (level, mult) in c.channel_mult.iter().enumerate() {
            for _ in 0..c.num_res_blocks {
                let b = inputs.pp(input_blocks.len() + 1);
                let res = ResBlock::new(&b.pp(0), ch, mult * mc, temb, g)?;
                ch = mult * mc;
                let attn = if c.attention_resolutions.contains(&ds) {
                    Some(st(&b.pp(1), ch)?)
                } else {
                    None
                };
                input_blocks.push(LvdmBlock {
                    res: Some(res),
                    attn,
                    down: None,
                    up: None,
                });
                chans.push(ch);
            }
            if level + 1 != levels {
                let b = inputs.pp(input_blocks.len() + 1);
                input_blocks.push(LvdmBlock {
                    res: None,
                    attn: None,
                    down: Some(Downsample::new(&b.pp(0), ch)?),
                    up: None,
                });
                chans.push(ch);
                ds *= 2;
            }
            level_ends.push(input_blocks.len() - 1);
        }
        let mid = vb.pp("middle_block");
        let middle_block = (
            ResBlock::new(&mid.pp(0), ch, ch, temb, g)?,
            st(&mid.pp(1), ch)?,
            ResBlock::new(&mid.pp(2), ch, ch, temb, g)?,
        );
        let outputs = vb.pp("output_blocks");
        let mut output_blocks = Vec::new();
        for (level, mult) in c.channel_mult.iter().enumerate().rev() {
            for i in 0..=c.num_res_blocks {
                let b = outputs.pp(output_blocks.len());
                let skip = chans.pop().ok_or_else(|| {
                    Error::Model("LVDM UNet: skip channels ran out while building".into())
                })?;
                let res = ResBlock::new(&b.pp(0), ch + skip, mc * mult, temb, g)?;
                ch = mc * mult;
                let mut next = 1;
                let attn = if c.attention_resolutions.contains(&ds) {
                    next = 2;
                    Some(st(&b.pp(1), ch)?)
                } else {
                    None
                };
                let up = if level > 0 && i == c.num_res_blocks {
                    ds /= 2;
                    Some(Upsample::new(&b.pp(next), ch)?)
                } else {
                    None
                };
                output_blocks.push(LvdmBlock {
                    res: Some(res),
                    attn,
                    down: None,
                    up,
                });
            }
        }
        Ok(Self {
            time_embed: (
                Linear::new(&vb.pp("time_embed").pp(0), mc, temb, true)?,
                Linear::new(&vb.pp("time_embed").pp(2), temb, temb, true)?,
            ),
            conv_in: conv_1kk(&inputs.pp(0).pp(0), c.in_channels, mc, 3, 1, 1)?,
            input_blocks,
            middle_block,
            output_blocks,
            out: (
                GroupNorm::new(&vb.pp("out").pp(0), g, ch, 1e-5)?,
                conv_1kk(&vb.pp("out").pp(2), ch, c.out_channels, 3, 1, 1)?,
            ),
            config: config.clone(),
            level_ends,
        })
    }

    /// Loads the UNet from a latent-diffusion checkpoint (`.ckpt` / `.pth`: a pickled dictionary, its
    /// tensors under `state_dict` when present, UNet keys under `model.diffusion_model.`). Strict for the
    /// UNet's keys (a missing, mis-shaped or unexpected `model.diffusion_model.*` tensor is an error);
    /// the checkpoint's other models (VAE, text encoder, schedule buffers) are left alone.
    pub fn load_ckpt(path: &Path, config: &LvdmConfig, device: &B::Device) -> Result<Self> {
        Self::from_ckpt(checkpoint::open_ckpt(path)?, config, device)
    }

    /// [`Self::load_ckpt`] from an opened checkpoint ([`checkpoint::open_ckpt`]).
    pub fn from_ckpt(ckpt: TensorStore, config: &LvdmConfig, device: &B::Device) -> Result<Self> {
        let weights = Weights::from_store(ckpt);
        let model = Self::new(&weights.root::<B>(device).pp(CKPT_PREFIX), config)?;
        weights.finish_under(&format!("{CKPT_PREFIX}."))?;
        Ok(model)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &LvdmConfig {
        &self.config
    }

    /// Channels at the tuned variant's injection points: after each of the first (up to) three encoder
    /// levels, then after the middle block (lvdm_short: `[320, 640, 1280, 1280]`).
    pub fn injection_channels(&self) -> Vec<usize> {
        let c = &self.config;
        let mut out: Vec<usize> = c
            .channel_mult
            .iter()
            .take(LEVEL_INJECTIONS)
            .map(|m| m * c.model_channels)
            .collect();
        out.push(c.model_channels * c.channel_mult.last().copied().unwrap_or(1));
        out
    }

    /// Width of the time embedding (4 × `model_channels`).
    pub fn time_embed_dim(&self) -> usize {
        4 * self.config.model_channels
    }

    /// Errors unless `upsampler` has this UNet's injection points and channels.
    pub fn check_feature_upsampler(
        &self,
        upsampler: &dyn selfcascade_core::FeatureUpsampler<B>,
    ) -> Result<()> {
        crate::unet::check_upsampler_channels(upsampler, &self.injection_channels())
    }

    /// Predicts ε for `x` `[B, in_channels, T, h, w]` (h, w multiples of 2^(levels − 1)) at `timesteps`
    /// (one for all, or one per video) with text `context` `[B, M, context_dim]`. Returns
    /// `[B, out_channels, T, h, w]`. Of `hooks`, only the tuned variant's `pivot` applies (the previous
    /// stage's clean video at half the size, frames folded into the batch `[B·T, C, h/2, w/2]`): it runs
    /// through the same blocks, and φ_n of its features (time embedding repeated per frame) is added
    /// after the first three encoder levels and after the middle block; the skips keep the un-injected
    /// features. Attn-SF and re-dilation hooks are errors.
    pub fn forward(
        &self,
        x: Tensor<B, 5>,
        timesteps: &[f64],
        context: Tensor<B, 3>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 5>> {
        let c = &self.config;
        let [b, ch, t, h, w] = x.dims();
        let align = 1usize << (c.channel_mult.len() - 1);
        if ch != c.in_channels || b == 0 || t == 0 || h == 0 || w == 0 {
            return Err(Error::Input(format!(
                "x has shape [{b}, {ch}, {t}, {h}, {w}]; expected [B ≥ 1, {}, T ≥ 1, h, w]",
                c.in_channels
            )));
        }
        if !h.is_multiple_of(align) || !w.is_multiple_of(align) {
            return Err(Error::Input(format!(
                "latent size {h}×{w} is not a multiple of {align} (this UNet down-samples {} times)",
                c.channel_mult.len() - 1
            )));
        }
        let [cb, m, d] = context.dims();
        if cb != b || d != c.context_dim || m == 0 {
            return Err(Error::Input(format!(
                "context has shape [{cb}, {m}, {d}]; expected [{b}, M ≥ 1, {}]",
                c.context_dim
            )));
        }
        if hooks.self_attention_scale.is_some() || hooks.dilation.is_some() {
            return Err(Error::Input(
                "the LVDM UNet takes no Attn-SF or re-dilation hooks (only the tuned variant's pivot)"
                    .into(),
            ));
        }
        if let Some(p) = &hooks.pivot {
            let [pb, pc, ph, pw] = p.latent.dims();
            if pb != b * t || pc != ch || 2 * ph != h || 2 * pw != w {
                return Err(Error::Input(format!(
                    "pivot latent has shape [{pb}, {pc}, {ph}, {pw}]; for x [{b}, {ch}, {t}, {h}, {w}] it must \
                     be the frames folded into the batch at half the size, [{}, {ch}, h/2, w/2]",
                    b * t
                )));
            }
            self.check_feature_upsampler(p.upsampler)?;
        }
        let device = x.device();
        let steps = timestep_tensor::<B>(b, timesteps, &device)?;
        let emb = timestep_embedding(steps, c.model_channels, true, 0.0);
        let emb = self
            .time_embed
            .1
            .forward(kernels::silu(self.time_embed.0.forward(emb)));
        // One row per frame, the frames of a video adjacent.
        let temb = emb.dims()[1];
        let emb = emb
            .unsqueeze_dim::<3>(1)
            .repeat_dim(1, t)
            .reshape([b * t, temb]);
        let emb_act = kernels::silu(emb.clone());
        let context = context
            .unsqueeze_dim::<4>(1)
            .repeat_dim(1, t)
            .reshape([b * t, m, d]);
        let mut hs = Vec::with_capacity(self.input_blocks.len() + 1);
        let mut y = self
            .conv_in
            .forward(x.swap_dims(1, 2).reshape([b * t, ch, h, w]));
        hs.push(y.clone());
        let mut pivot = hooks
            .pivot
            .as_ref()
            .map(|p| (self.conv_in.forward(p.latent.clone()), p.upsampler));
        let inject = |n: usize,
                      y: Tensor<B, 4>,
                      p: Tensor<B, 4>,
                      up: &dyn selfcascade_core::FeatureUpsampler<B>|
         -> Result<Tensor<B, 4>> {
            let [yb, yc, yh, yw] = y.dims();
            let delta = up.upsample(n, p, emb.clone(), (yh, yw))?;
            if delta.dims() != [yb, yc, yh, yw] {
                return Err(Error::Input(format!(
                    "feature upsampler {n} returned shape {:?}; expected [{yb}, {yc}, {yh}, {yw}]",
                    delta.dims()
                )));
            }
            Ok(y.add(delta))
        };
        for (i, block) in self.input_blocks.iter().enumerate() {
            y = block.forward(y, &emb_act, &context, t)?;
            hs.push(y.clone());
            if let Some((p, up)) = pivot.take() {
                let p = block.forward(p, &emb_act, &context, t)?;
                let point = self
                    .level_ends
                    .iter()
                    .take(LEVEL_INJECTIONS)
                    .position(|e| *e == i);
                if let Some(n) = point {
                    y = inject(n, y, p.clone(), up)?;
                }
                pivot = Some((p, up));
            }
        }
        let (r0, st, r1) = &self.middle_block;
        let middle = |y: Tensor<B, 4>| -> Result<Tensor<B, 4>> {
            let y = r0.forward(y, &emb_act, t)?;
            let y = st.forward(y, &context, t)?;
            r1.forward(y, &emb_act, t)
        };
        y = middle(y)?;
        if let Some((p, up)) = pivot {
            let n = self.level_ends.len().min(LEVEL_INJECTIONS);
            y = inject(n, y, middle(p)?, up)?;
        }
        for block in &self.output_blocks {
            let skip = hs
                .pop()
                .ok_or_else(|| Error::Model("LVDM UNet ran out of skip connections".into()))?;
            y = block.forward(Tensor::cat(vec![y, skip], 1), &emb_act, &context, t)?;
        }
        let v = crate::unet::to_video_layout(y, t)?;
        let y = crate::unet::from_video_layout(self.out.0.forward_silu(v), h, w);
        let y = self.out.1.forward(y);
        let oc = y.dims()[1];
        Ok(y.reshape([b, t, oc, h, w]).swap_dims(1, 2))
    }
}

//! `UNet2DConditionModel`: construction from a diffusers folder and the forward pass.

use super::blocks::{
    down_path, injection_channels, unet_blocks, up_path, BlockSpec, DownBlock2D,
    UNetMidBlock2DCrossAttn, UpBlock2D,
};
use super::config::{UNet2DConditionConfig, UNetArch};
use super::embeddings::{timestep_embedding, timestep_tensor, TimestepEmbedding};
use super::hooks::UNetHooks;
use crate::error::{Error, Result};
use crate::load::{open_component, Vb};
use crate::nn::{kernels, Conv2d, GroupNorm};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use std::path::Path;

/// Stable Diffusion's conditional UNet (diffusers' `UNet2DConditionModel`) for SD 1.x, SD 2.x and SDXL.
/// Field names follow diffusers' parameter names (`down_blocks[1].attentions[0].transformer_blocks[0]
/// .attn1.to_q` holds `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight`).
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    /// `conv_in`.
    pub conv_in: Conv2d<B>,
    /// `time_embedding`.
    pub time_embedding: TimestepEmbedding<B>,
    /// `add_embedding` (SDXL's `text_time` micro-conditioning).
    pub add_embedding: Option<TimestepEmbedding<B>>,
    /// `down_blocks`.
    pub down_blocks: Vec<DownBlock2D<B>>,
    /// `mid_block`.
    pub mid_block: UNetMidBlock2DCrossAttn<B>,
    /// `up_blocks`.
    pub up_blocks: Vec<UpBlock2D<B>>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm<B>,
    /// `conv_out`.
    pub conv_out: Conv2d<B>,
    #[module(skip)]
    config: UNet2DConditionConfig,
    #[module(skip)]
    arch: UNetArch,
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Builds the model from `config` with parameters from `vb` (loaded or randomly initialised
    /// [`crate::load::Weights`]). The config is validated first.
    pub fn new(vb: &Vb<B>, config: &UNet2DConditionConfig) -> Result<Self> {
        let arch = config.arch()?;
        let c0 = arch.channels[0];
        let temb = arch.time_embed_dim;
        let spec = |i: usize| BlockSpec {
            temb,
            groups: arch.groups,
            eps: config.norm_eps,
            heads: arch.heads[i],
            transformer_layers: arch.transformer_layers[i],
            context_dim: arch.cross_attention_dim,
            linear_projection: config.use_linear_projection,
            temporal: false,
        };
        let conv_in = Conv2d::new(
            &vb.pp("conv_in"),
            config.in_channels,
            c0,
            config.conv_in_kernel,
            1,
            config.conv_in_kernel / 2,
        )?;
        let time_embedding = TimestepEmbedding::new(&vb.pp("time_embedding"), c0, temb)?;
        let add_embedding = match arch.text_time {
            Some((_, proj_dim)) => Some(TimestepEmbedding::new(
                &vb.pp("add_embedding"),
                proj_dim,
                temb,
            )?),
            None => None,
        };
        let (down_blocks, mid_block, up_blocks) =
            unet_blocks(vb, &arch, config.mid_block_scale_factor, spec)?;
        Ok(Self {
            conv_in,
            time_embedding,
            add_embedding,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(
                &vb.pp("conv_norm_out"),
                arch.groups,
                c0,
                config.norm_eps,
            )?,
            conv_out: Conv2d::new(
                &vb.pp("conv_out"),
                c0,
                config.out_channels,
                config.conv_out_kernel,
                1,
                config.conv_out_kernel / 2,
            )?,
            config: config.clone(),
            arch,
        })
    }

    /// Loads a diffusers component folder (`…/unet` with `config.json` and safetensors weights, e.g.
    /// `variant = Some("fp16")`, converted to float32). Loading is strict: a missing, mis-shaped or
    /// unexpected tensor is an error naming it.
    pub fn load(dir: &Path, variant: Option<&str>, device: &B::Device) -> Result<Self> {
        let config = UNet2DConditionConfig::from_file(&dir.join("config.json"))?;
        let weights = open_component(dir, variant)?;
        let model = Self::new(&weights.root::<B>(device), &config)?;
        weights.finish()?;
        Ok(model)
    }

    /// The config the model was built from.
    pub fn config(&self) -> &UNet2DConditionConfig {
        &self.config
    }

    /// The architecture resolved from the config.
    pub fn arch(&self) -> &UNetArch {
        &self.arch
    }

    /// Channels of the features at each injection point of [`super::PivotInjection`]: after down
    /// blocks 0..min(3, n) and after the mid block (SD 2.1: `[320, 640, 1280, 1280]`).
    pub fn injection_channels(&self) -> Vec<usize> {
        injection_channels(&self.config.block_out_channels, self.mid_block.channels())
    }

    /// Width of the time embedding `temb` passed to the blocks (and to feature upsamplers).
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding.linear_2.out_features()
    }

    /// The time embedding `[B, time_embed_dim]` for `timesteps` (one per row, or one for all) and,
    /// for SDXL, the `(text_embeds, time_ids)` micro-conditioning.
    pub fn embed_time(
        &self,
        batch: usize,
        timesteps: &[f64],
        added: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
        device: &B::Device,
    ) -> Result<Tensor<B, 2>> {
        let t = timestep_tensor::<B>(batch, timesteps, device)?;
        let c0 = self.time_embedding.in_features();
        let emb = self.time_embedding.forward(timestep_embedding(
            t,
            c0,
            self.config.flip_sin_to_cos,
            self.config.freq_shift,
        ));
        match (&self.add_embedding, added) {
            (None, None) => Ok(emb),
            (None, Some(_)) => Err(Error::Input(
                "text_embeds/time_ids were given but this UNet has no `text_time` addition embedding \
                 (that is SDXL's conditioning)"
                    .into(),
            )),
            (Some(_), None) => Err(Error::Input(
                "this UNet (addition_embed_type = \"text_time\", SDXL) needs text_embeds [B, D] and \
                 time_ids [B, 6]"
                    .into(),
            )),
            (Some(add), Some((text_embeds, time_ids))) => {
                let [tb, td] = text_embeds.dims();
                let [ib, k] = time_ids.dims();
                let per_id = self.config.addition_time_embed_dim.unwrap_or_default();
                let expected = add.in_features();
                if tb != batch || ib != batch {
                    return Err(Error::Input(format!(
                        "text_embeds has batch {tb} and time_ids batch {ib}; the sample has batch {batch}"
                    )));
                }
                if td + k * per_id != expected {
                    return Err(Error::Input(format!(
                        "text_embeds [{tb}, {td}] and time_ids [{ib}, {k}] give {} features \
                         ({td} + {k}·{per_id}); add_embedding expects {expected}",
                        td + k * per_id
                    )));
                }
                let time_embeds = timestep_embedding(
                    time_ids.reshape([batch * k]),
                    per_id,
                    self.config.flip_sin_to_cos,
                    self.config.freq_shift,
                )
                .reshape([batch, k * per_id])
                .cast(text_embeds.dtype());
                let aug = add.forward(Tensor::cat(vec![text_embeds, time_embeds], 1));
                Ok(emb.add(aug))
            }
        }
    }

    /// Predicts for `sample` `[B, in_channels, h, w]` (any h, w ≥ 1) at `timesteps` (one value for the
    /// whole batch, or one per row) with text `encoder_hidden_states` `[B, M, cross_attention_dim]`,
    /// and for SDXL `added = Some((text_embeds [B, D], time_ids [B, 6]))`. Returns
    /// `[B, out_channels, h, w]`. `hooks` changes the pass (Attn-SF, re-dilation, pivot injection; see
    /// [`UNetHooks`]); `&UNetHooks::default()` runs the plain UNet. Malformed inputs are [`Error::Input`].
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timesteps: &[f64],
        encoder_hidden_states: Tensor<B, 3>,
        added: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        let [b, c, h, w] = sample.dims();
        if c != self.config.in_channels || b == 0 || h == 0 || w == 0 {
            return Err(Error::Input(format!(
                "sample has shape [{b}, {c}, {h}, {w}]; expected [B ≥ 1, {}, h ≥ 1, w ≥ 1]",
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
        let device = sample.device();
        if let Some(pivot) = &hooks.pivot {
            self.check_pivot(pivot, [b, c, h, w])?;
        }
        let emb = self.embed_time(b, timesteps, added, &device)?;
        let temb_act = kernels::silu(emb.clone());
        let context = encoder_hidden_states;
        let center = |x: Tensor<B, 4>| {
            if self.config.center_input_sample {
                x.mul_scalar(2.0).sub_scalar(1.0)
            } else {
                x
            }
        };

        let x = self.conv_in.forward(center(sample));
        let pivot = hooks
            .pivot
            .as_ref()
            .map(|p| (self.conv_in.forward(center(p.latent.clone())), p.upsampler));
        let (x, skips) = down_path(
            &self.down_blocks,
            &self.mid_block,
            x,
            pivot,
            &emb,
            (&temb_act, &context, 1),
            hooks,
        )?;
        let x = up_path(&self.up_blocks, x, skips, &temb_act, &context, 1, hooks)?;
        let x = self.conv_norm_out.forward_silu(x);
        Ok(self.conv_out.forward(x))
    }

    fn check_pivot(&self, pivot: &super::PivotInjection<'_, B>, sample: [usize; 4]) -> Result<()> {
        let [b, c, h, w] = sample;
        let [pb, pc, ph, pw] = pivot.latent.dims();
        if pb != b || pc != c || 2 * ph != h || 2 * pw != w {
            return Err(Error::Input(format!(
                "pivot latent has shape [{pb}, {pc}, {ph}, {pw}]; for a sample [{b}, {c}, {h}, {w}] it must \
                 be [{b}, {c}, h/2, w/2] (same batch, half the size)"
            )));
        }
        self.check_feature_upsampler(pivot.upsampler)
    }

    /// Errors unless `upsampler` has one point per injection point of this UNet with the channels of
    /// [`Self::injection_channels`].
    pub fn check_feature_upsampler(
        &self,
        upsampler: &dyn selfcascade_core::FeatureUpsampler<B>,
    ) -> Result<()> {
        super::hooks::check_upsampler_channels(upsampler, &self.injection_channels())
    }
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Applies `f` to every attention projection (`to_q`, `to_k`, `to_v`, `to_out.0` of `attn1` and
    /// `attn2` in every transformer block), in module order.
    fn map_attention_projections(
        mut self,
        f: &mut dyn FnMut(crate::nn::Linear<B>) -> crate::nn::Linear<B>,
    ) -> Self {
        let mut map_block = |t: super::attention::Transformer2DModel<B>| {
            let mut t = t;
            t.transformer_blocks = t
                .transformer_blocks
                .into_iter()
                .map(|mut b| {
                    for attn in [&mut b.attn1, &mut b.attn2] {
                        // Module clones share their tensors: mapping a clone costs no copy.
                        attn.to_q = f(attn.to_q.clone());
                        attn.to_k = f(attn.to_k.clone());
                        attn.to_v = f(attn.to_v.clone());
                        attn.to_out.0 = f(attn.to_out.0.clone());
                    }
                    b
                })
                .collect();
            t
        };
        for block in &mut self.down_blocks {
            block.attentions = std::mem::take(&mut block.attentions)
                .into_iter()
                .map(&mut map_block)
                .collect();
        }
        self.mid_block.attentions = std::mem::take(&mut self.mid_block.attentions)
            .into_iter()
            .map(&mut map_block)
            .collect();
        for block in &mut self.up_blocks {
            block.attentions = std::mem::take(&mut block.attentions)
                .into_iter()
                .map(&mut map_block)
                .collect();
        }
        self
    }

    /// This UNet with a fresh LoRA adapter of `rank` (scale alpha / rank) on every attention
    /// projection — the paper's LoRA fine-tuning baseline. Adapters are seeded from `seed` in module
    /// order; freeze the base weights first (`Module::no_grad`) so that only the adapters train.
    pub fn with_lora(self, rank: usize, alpha: f64, seed: u64) -> Result<Self> {
        // Checked once here, so the per-layer calls below cannot fail.
        if rank == 0 || !alpha.is_finite() {
            return Err(Error::Input(format!(
                "LoRA rank {rank}, alpha {alpha}: the rank must be at least 1 and alpha finite"
            )));
        }
        let mut k = 0u64;
        Ok(self.map_attention_projections(&mut |l| {
            k += 1;
            l.clone()
                .with_lora(rank, alpha, seed.wrapping_add(k))
                .unwrap_or(l)
        }))
    }

    /// This UNet with every LoRA adapter folded into its layer's weight (a plain UNet again).
    pub fn merge_lora(self) -> Self {
        self.map_attention_projections(&mut |l| l.merge_lora())
    }

    /// Parameters of the LoRA adapters.
    pub fn lora_params(&self) -> usize {
        let count = |t: &super::attention::Transformer2DModel<B>| {
            t.transformer_blocks
                .iter()
                .flat_map(|b| [&b.attn1, &b.attn2])
                .flat_map(|a| [&a.to_q, &a.to_k, &a.to_v, &a.to_out.0])
                .filter_map(|l| l.lora.as_ref())
                .map(|l| l.num_params())
                .sum::<usize>()
        };
        self.down_blocks
            .iter()
            .flat_map(|b| &b.attentions)
            .chain(&self.mid_block.attentions)
            .chain(self.up_blocks.iter().flat_map(|b| &b.attentions))
            .map(count)
            .sum()
    }
}

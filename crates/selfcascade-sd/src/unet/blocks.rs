//! The UNet's down, mid and up blocks (`CrossAttnDownBlock2D`/`DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`/`UpBlock2D`).

use super::attention::Transformer2DModel;
use super::hooks::UNetHooks;
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use crate::error::{Error, Result};
use crate::load::Vb;
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

/// What every block is built with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BlockSpec {
    pub temb: usize,
    pub groups: usize,
    pub eps: f64,
    pub heads: usize,
    pub transformer_layers: usize,
    pub context_dim: usize,
    pub linear_projection: bool,
}

impl BlockSpec {
    fn transformer<B: Backend>(
        &self,
        vb: &Vb<B>,
        channels: usize,
    ) -> Result<Transformer2DModel<B>> {
        Transformer2DModel::new(
            vb,
            channels,
            self.heads,
            self.transformer_layers,
            self.context_dim,
            self.groups,
            self.linear_projection,
        )
    }
}

/// A down block: ResNets, each followed by a transformer when it has cross-attention
/// (`CrossAttnDownBlock2D`; none for `DownBlock2D`), then an optional downsampler.
#[derive(Module, Debug)]
pub struct DownBlock2D<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions` (empty for `DownBlock2D`).
    pub attentions: Vec<Transformer2DModel<B>>,
    /// `downsamplers` (empty for the last block).
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: Backend> DownBlock2D<B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        vb: &Vb<B>,
        in_channels: usize,
        out_channels: usize,
        layers: usize,
        cross_attention: bool,
        downsample: bool,
        spec: &BlockSpec,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            let cin = if i == 0 { in_channels } else { out_channels };
            resnets.push(ResnetBlock2D::new(
                &vb.pp("resnets").pp(i),
                cin,
                out_channels,
                spec.temb,
                spec.groups,
                spec.eps,
                1.0,
            )?);
            if cross_attention {
                attentions.push(spec.transformer(&vb.pp("attentions").pp(i), out_channels)?);
            }
        }
        let downsamplers = if downsample {
            vec![Downsample2D::new(
                &vb.pp("downsamplers").pp(0),
                out_channels,
                1,
            )?]
        } else {
            Vec::new()
        };
        Ok(Self {
            resnets,
            attentions,
            downsamplers,
        })
    }

    /// The block on `x`; returns the output and the states kept for the skip connections (one per
    /// ResNet, plus the downsampled output).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb_act: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<(Tensor<B, 4>, Vec<Tensor<B, 4>>)> {
        let mut h = x;
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, temb_act, hooks)?;
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(h, context, hooks)?;
            }
            states.push(h.clone());
        }
        for down in &self.downsamplers {
            h = down.forward(h, hooks)?;
            states.push(h.clone());
        }
        Ok((h, states))
    }
}

/// `UNetMidBlock2DCrossAttn`: ResNet, then (transformer, ResNet) pairs.
#[derive(Module, Debug)]
pub struct UNetMidBlock2DCrossAttn<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions`.
    pub attentions: Vec<Transformer2DModel<B>>,
}

impl<B: Backend> UNetMidBlock2DCrossAttn<B> {
    pub(crate) fn new(
        vb: &Vb<B>,
        channels: usize,
        output_scale_factor: f64,
        spec: &BlockSpec,
    ) -> Result<Self> {
        let resnet = |i: usize| {
            ResnetBlock2D::new(
                &vb.pp("resnets").pp(i),
                channels,
                channels,
                spec.temb,
                spec.groups,
                spec.eps,
                output_scale_factor,
            )
        };
        Ok(Self {
            resnets: vec![resnet(0)?, resnet(1)?],
            attentions: vec![spec.transformer(&vb.pp("attentions").pp(0), channels)?],
        })
    }

    /// Channels in and out.
    pub fn channels(&self) -> usize {
        self.resnets
            .first()
            .map(ResnetBlock2D::in_channels)
            .unwrap_or_default()
    }

    /// The block on `x`.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb_act: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        let mut resnets = self.resnets.iter();
        let mut h = match resnets.next() {
            Some(r) => r.forward(x, temb_act, hooks)?,
            None => x,
        };
        for (attn, resnet) in self.attentions.iter().zip(resnets) {
            h = attn.forward(h, context, hooks)?;
            h = resnet.forward(h, temb_act, hooks)?;
        }
        Ok(h)
    }
}

/// An up block: ResNets on the concatenation of the running state and a skip state, each followed by a
/// transformer when it has cross-attention (`CrossAttnUpBlock2D`; none for `UpBlock2D`), then an
/// optional upsampler.
#[derive(Module, Debug)]
pub struct UpBlock2D<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions` (empty for `UpBlock2D`).
    pub attentions: Vec<Transformer2DModel<B>>,
    /// `upsamplers` (empty for the last block).
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: Backend> UpBlock2D<B> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        vb: &Vb<B>,
        in_channels: usize,
        prev_output_channels: usize,
        out_channels: usize,
        layers: usize,
        cross_attention: bool,
        upsample: bool,
        spec: &BlockSpec,
    ) -> Result<Self> {
        let mut resnets = Vec::with_capacity(layers);
        let mut attentions = Vec::new();
        for i in 0..layers {
            let skip = if i + 1 == layers {
                in_channels
            } else {
                out_channels
            };
            let cin = if i == 0 {
                prev_output_channels
            } else {
                out_channels
            };
            resnets.push(ResnetBlock2D::new(
                &vb.pp("resnets").pp(i),
                cin + skip,
                out_channels,
                spec.temb,
                spec.groups,
                spec.eps,
                1.0,
            )?);
            if cross_attention {
                attentions.push(spec.transformer(&vb.pp("attentions").pp(i), out_channels)?);
            }
        }
        let upsamplers = if upsample {
            vec![Upsample2D::new(&vb.pp("upsamplers").pp(0), out_channels)?]
        } else {
            Vec::new()
        };
        Ok(Self {
            resnets,
            attentions,
            upsamplers,
        })
    }

    /// The block on `x`, consuming one skip state per ResNet from the end of `skips`; the upsampler
    /// resizes to `upsample_size` when given, else ×2.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        skips: &mut Vec<Tensor<B, 4>>,
        temb_act: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        upsample_size: Option<(usize, usize)>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        let mut h = x;
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::Model("UNet up block ran out of skip connections".into()))?;
            h = resnet.forward(Tensor::cat(vec![h, skip], 1), temb_act, hooks)?;
            if let Some(attn) = self.attentions.get(i) {
                h = attn.forward(h, context, hooks)?;
            }
        }
        for up in &self.upsamplers {
            h = up.forward(h, upsample_size, hooks)?;
        }
        Ok(h)
    }
}

//! The UNet's down, mid and up blocks (`CrossAttnDownBlock2D`/`DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`/`UpBlock2D`), and the video UNet's blocks
//! (`CrossAttnDownBlock3D`/`DownBlock3D`, `UNetMidBlock3DCrossAttn`, `CrossAttnUpBlock3D`/`UpBlock3D`),
//! which are the same blocks with a [`TemporalConvLayer`] after every ResNet and a
//! [`TransformerTemporalModel`] after every spatial transformer. Frames are folded into the batch
//! (`[B·T, C, H, W]`); `frames` is T (1 for images, where the temporal lists are empty).

use super::attention::Transformer2DModel;
use super::hooks::UNetHooks;
use super::resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
use super::temporal::{TemporalConvLayer, TransformerTemporalModel};
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
    /// The video UNet's temporal layers.
    pub temporal: bool,
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

    /// `temp_convs.i` after ResNet i, when the block is temporal.
    fn temp_conv<B: Backend>(
        &self,
        vb: &Vb<B>,
        i: usize,
        channels: usize,
        into: &mut Vec<TemporalConvLayer<B>>,
    ) -> Result<()> {
        if self.temporal {
            into.push(TemporalConvLayer::new(
                &vb.pp("temp_convs").pp(i),
                channels,
                self.groups,
            )?);
        }
        Ok(())
    }

    /// `temp_attentions.i` after transformer i, when the block is temporal (heads as the spatial one).
    fn temp_attention<B: Backend>(
        &self,
        vb: &Vb<B>,
        i: usize,
        channels: usize,
        into: &mut Vec<TransformerTemporalModel<B>>,
    ) -> Result<()> {
        if self.temporal {
            into.push(TransformerTemporalModel::new(
                &vb.pp("temp_attentions").pp(i),
                channels,
                self.heads,
                channels / self.heads.max(1),
                self.groups,
            )?);
        }
        Ok(())
    }
}

/// The layers that follow ResNet `i` in every block: its temporal convolution, then transformer `i`
/// and its temporal transformer, each where the block has one.
#[allow(clippy::too_many_arguments)]
fn after_resnet<B: Backend>(
    i: usize,
    h: Tensor<B, 4>,
    temp_convs: &[TemporalConvLayer<B>],
    attentions: &[Transformer2DModel<B>],
    temp_attentions: &[TransformerTemporalModel<B>],
    context: &Tensor<B, 3>,
    frames: usize,
    hooks: &UNetHooks<'_, B>,
) -> Result<Tensor<B, 4>> {
    let mut h = h;
    if let Some(conv) = temp_convs.get(i) {
        h = conv.forward(h, frames)?;
    }
    if let Some(attn) = attentions.get(i) {
        h = attn.forward(h, context, hooks)?;
    }
    if let Some(attn) = temp_attentions.get(i) {
        h = attn.forward(h, frames)?;
    }
    Ok(h)
}

/// A down block: ResNets, each followed by a transformer when it has cross-attention
/// (`CrossAttnDownBlock2D`; none for `DownBlock2D`), then an optional downsampler.
#[derive(Module, Debug)]
pub struct DownBlock2D<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `attentions` (empty for `DownBlock2D`).
    pub attentions: Vec<Transformer2DModel<B>>,
    /// `temp_convs` (video UNet only).
    pub temp_convs: Vec<TemporalConvLayer<B>>,
    /// `temp_attentions` (video UNet with cross-attention only).
    pub temp_attentions: Vec<TransformerTemporalModel<B>>,
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
        let (mut attentions, mut temp_convs, mut temp_attentions) = (vec![], vec![], vec![]);
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
            spec.temp_conv(vb, i, out_channels, &mut temp_convs)?;
            if cross_attention {
                attentions.push(spec.transformer(&vb.pp("attentions").pp(i), out_channels)?);
                spec.temp_attention(vb, i, out_channels, &mut temp_attentions)?;
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
            temp_convs,
            temp_attentions,
            downsamplers,
        })
    }

    /// The block on `x` (`frames` frames per video); returns the output and the states kept for the
    /// skip connections (one per ResNet, plus the downsampled output).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb_act: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        frames: usize,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<(Tensor<B, 4>, Vec<Tensor<B, 4>>)> {
        let mut h = x;
        let mut states = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, temb_act, hooks)?;
            h = after_resnet(
                i,
                h,
                &self.temp_convs,
                &self.attentions,
                &self.temp_attentions,
                context,
                frames,
                hooks,
            )?;
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
    /// `temp_convs` (video UNet only).
    pub temp_convs: Vec<TemporalConvLayer<B>>,
    /// `temp_attentions` (video UNet only).
    pub temp_attentions: Vec<TransformerTemporalModel<B>>,
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
        let (mut temp_convs, mut temp_attentions) = (vec![], vec![]);
        spec.temp_conv(vb, 0, channels, &mut temp_convs)?;
        spec.temp_conv(vb, 1, channels, &mut temp_convs)?;
        spec.temp_attention(vb, 0, channels, &mut temp_attentions)?;
        Ok(Self {
            resnets: vec![resnet(0)?, resnet(1)?],
            attentions: vec![spec.transformer(&vb.pp("attentions").pp(0), channels)?],
            temp_convs,
            temp_attentions,
        })
    }

    /// Channels in and out.
    pub fn channels(&self) -> usize {
        self.resnets
            .first()
            .map(ResnetBlock2D::in_channels)
            .unwrap_or_default()
    }

    /// The block on `x` (`frames` frames per video): each ResNet followed by its temporal convolution,
    /// transformer and temporal transformer where present (diffusers' order).
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb_act: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        frames: usize,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        let mut h = x;
        for (i, resnet) in self.resnets.iter().enumerate() {
            h = resnet.forward(h, temb_act, hooks)?;
            h = after_resnet(
                i,
                h,
                &self.temp_convs,
                &self.attentions,
                &self.temp_attentions,
                context,
                frames,
                hooks,
            )?;
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
    /// `temp_convs` (video UNet only).
    pub temp_convs: Vec<TemporalConvLayer<B>>,
    /// `temp_attentions` (video UNet with cross-attention only).
    pub temp_attentions: Vec<TransformerTemporalModel<B>>,
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
        let (mut attentions, mut temp_convs, mut temp_attentions) = (vec![], vec![], vec![]);
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
            spec.temp_conv(vb, i, out_channels, &mut temp_convs)?;
            if cross_attention {
                attentions.push(spec.transformer(&vb.pp("attentions").pp(i), out_channels)?);
                spec.temp_attention(vb, i, out_channels, &mut temp_attentions)?;
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
            temp_convs,
            temp_attentions,
            upsamplers,
        })
    }

    #[allow(clippy::too_many_arguments)]
    /// The block on `x` (`frames` frames per video), consuming one skip state per ResNet from the end
    /// of `skips`; the upsampler resizes to `upsample_size` when given, else ×2.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        skips: &mut Vec<Tensor<B, 4>>,
        temb_act: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        upsample_size: Option<(usize, usize)>,
        frames: usize,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        let mut h = x;
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .ok_or_else(|| Error::Model("UNet up block ran out of skip connections".into()))?;
            h = resnet.forward(Tensor::cat(vec![h, skip], 1), temb_act, hooks)?;
            h = after_resnet(
                i,
                h,
                &self.temp_convs,
                &self.attentions,
                &self.temp_attentions,
                context,
                frames,
                hooks,
            )?;
        }
        for up in &self.upsamplers {
            h = up.forward(h, upsample_size, hooks)?;
        }
        Ok(h)
    }
}

/// The up path shared by the image and video UNets: each up block takes its skip states from the end
/// of `skips`. When the input size is not a multiple of 2^(number of upsamplers), each upsampler
/// resizes to the size of the next skip state (diffusers' `forward_upsample_size`).
pub(crate) fn up_path<B: Backend>(
    blocks: &[UpBlock2D<B>],
    x: Tensor<B, 4>,
    mut skips: Vec<Tensor<B, 4>>,
    temb_act: &Tensor<B, 2>,
    context: &Tensor<B, 3>,
    frames: usize,
    hooks: &UNetHooks<'_, B>,
) -> Result<Tensor<B, 4>> {
    let [_, _, h, w] = skips.first().map(|s| s.dims()).unwrap_or(x.dims());
    let upsamplers = blocks.iter().filter(|b| !b.upsamplers.is_empty()).count();
    let factor = 1usize << upsamplers.min(usize::BITS as usize - 1);
    let forward_size = h % factor != 0 || w % factor != 0;
    let mut x = x;
    for block in blocks {
        let keep = skips.len().saturating_sub(block.resnets.len());
        let mut mine = skips.split_off(keep);
        let size = match skips.last() {
            Some(s) if forward_size && !block.upsamplers.is_empty() => {
                let [_, _, sh, sw] = s.dims();
                Some((sh, sw))
            }
            _ => None,
        };
        x = block.forward(x, &mut mine, temb_act, context, size, frames, hooks)?;
    }
    Ok(x)
}

/// Injection points of the tuned self-cascade variant: after the first (up to) three down blocks, then
/// after the mid block.
pub(crate) const DOWN_INJECTIONS: usize = 3;

/// Channels at each injection point: those of down blocks 0..min(3, n), then the mid block's.
pub(crate) fn injection_channels(block_out_channels: &[usize], mid: usize) -> Vec<usize> {
    let mut out: Vec<usize> = block_out_channels
        .iter()
        .take(DOWN_INJECTIONS)
        .copied()
        .collect();
    out.push(mid);
    out
}

/// The encoder half shared by the image and video UNets: the down blocks, then the mid block, on `x`
/// (after `conv_in`). With the tuned variant's `pivot` (the pivot's features after the same input
/// layers, and the upsamplers φ_n), the pivot runs through the same blocks with plain hooks and
/// φ_n(pivot features, `emb`) is added to `x` after down blocks 0..min(3, n) and after the mid block
/// (the skip states keep the un-injected outputs). `cond` is (silu(temb), text context, frames).
/// Returns the mid block's output and the skip states, starting with `x`.
pub(crate) fn down_path<B: Backend>(
    down_blocks: &[DownBlock2D<B>],
    mid_block: &UNetMidBlock2DCrossAttn<B>,
    x: Tensor<B, 4>,
    pivot: Option<(Tensor<B, 4>, &dyn selfcascade_core::FeatureUpsampler<B>)>,
    emb: &Tensor<B, 2>,
    cond: (&Tensor<B, 2>, &Tensor<B, 3>, usize),
    hooks: &UNetHooks<'_, B>,
) -> Result<(Tensor<B, 4>, Vec<Tensor<B, 4>>)> {
    let (temb_act, context, frames) = cond;
    let plain = UNetHooks::default();
    let inject = |n: usize,
                  x: Tensor<B, 4>,
                  features: Tensor<B, 4>,
                  up: &dyn selfcascade_core::FeatureUpsampler<B>|
     -> Result<Tensor<B, 4>> {
        let [xb, xc, xh, xw] = x.dims();
        let delta = up.upsample(n, features, emb.clone(), (xh, xw))?;
        if delta.dims() != [xb, xc, xh, xw] {
            return Err(Error::Input(format!(
                "feature upsampler {n} returned shape {:?}; expected [{xb}, {xc}, {xh}, {xw}]",
                delta.dims()
            )));
        }
        Ok(x.add(delta))
    };
    let mut x = x;
    let mut pivot = pivot;
    let mut skips = vec![x.clone()];
    for (i, block) in down_blocks.iter().enumerate() {
        let (out, states) = block.forward(x, temb_act, context, frames, hooks)?;
        skips.extend(states);
        x = out;
        if let Some((p, up)) = pivot.take() {
            let (p, _) = block.forward(p, temb_act, context, frames, &plain)?;
            if i < DOWN_INJECTIONS {
                x = inject(i, x, p.clone(), up)?;
            }
            pivot = Some((p, up));
        }
    }
    x = mid_block.forward(x, temb_act, context, frames, hooks)?;
    if let Some((p, up)) = pivot {
        let p = mid_block.forward(p, temb_act, context, frames, &plain)?;
        x = inject(down_blocks.len().min(DOWN_INJECTIONS), x, p, up)?;
    }
    Ok((x, skips))
}

/// The down blocks (`down_blocks.i`), mid block (`mid_block`) and up blocks (`up_blocks.i`) of a UNet of
/// architecture `arch` under `vb`, level i's blocks built with `spec(i)` (the mid block with the last
/// level's, its ResNets' output divided by `mid_scale`).
#[allow(clippy::type_complexity)]
pub(crate) fn unet_blocks<B: Backend>(
    vb: &Vb<B>,
    arch: &super::UNetArch,
    mid_scale: f64,
    spec: impl Fn(usize) -> BlockSpec,
) -> Result<(
    Vec<DownBlock2D<B>>,
    UNetMidBlock2DCrossAttn<B>,
    Vec<UpBlock2D<B>>,
)> {
    use super::BlockKind;
    let n = arch.channels.len();
    let mut down_blocks = Vec::with_capacity(n);
    let mut out_ch = arch.channels[0];
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
    let mid_block = UNetMidBlock2DCrossAttn::new(
        &vb.pp("mid_block"),
        arch.channels[n - 1],
        mid_scale,
        &spec(n - 1),
    )?;
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
    Ok((down_blocks, mid_block, up_blocks))
}

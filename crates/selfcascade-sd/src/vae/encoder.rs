//! The VAE encoder (diffusers' `Encoder` with `double_z=True`): image → mean and log-variance moments.

use super::blocks::{Downsample2D, ResnetBlock2D, UNetMidBlock2D, VAE_EPS};
use super::config::AutoencoderKLConfig;
use crate::error::Result;
use crate::load::Vb;
use crate::nn::{Conv2d, GroupNorm};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

/// diffusers' `DownEncoderBlock2D`: ResNet blocks, then (except at the last level) a downsampler.
#[derive(Module, Debug)]
pub struct DownEncoderBlock2D<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `downsamplers` (one, or none at the last level).
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: Backend> DownEncoderBlock2D<B> {
    fn new(
        vb: &Vb<B>,
        in_ch: usize,
        out_ch: usize,
        layers: usize,
        groups: usize,
        downsample: bool,
    ) -> Result<Self> {
        let r = vb.pp("resnets");
        let resnets = (0..layers)
            .map(|j| {
                ResnetBlock2D::new(
                    &r.pp(j),
                    if j == 0 { in_ch } else { out_ch },
                    out_ch,
                    groups,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let downsamplers = if downsample {
            vec![Downsample2D::new(&vb.pp("downsamplers").pp(0), out_ch)?]
        } else {
            Vec::new()
        };
        Ok(Self {
            resnets,
            downsamplers,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = x;
        for r in &self.resnets {
            h = r.forward(h);
        }
        for d in &self.downsamplers {
            h = d.forward(h);
        }
        h
    }
}

/// diffusers' VAE `Encoder`.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// `conv_in`.
    pub conv_in: Conv2d<B>,
    /// `down_blocks`.
    pub down_blocks: Vec<DownEncoderBlock2D<B>>,
    /// `mid_block`.
    pub mid_block: UNetMidBlock2D<B>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm<B>,
    /// `conv_out` (to `2 × latent_channels`).
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    /// Loads the encoder under `vb` (`encoder`).
    pub fn new(vb: &Vb<B>, cfg: &AutoencoderKLConfig) -> Result<Self> {
        cfg.checked()?;
        let ch = &cfg.block_out_channels;
        let g = cfg.norm_num_groups;
        let first = ch[0];
        let last = ch[ch.len() - 1];
        let blocks = vb.pp("down_blocks");
        let mut down_blocks = Vec::with_capacity(ch.len());
        let mut prev = first;
        for (i, &out) in ch.iter().enumerate() {
            down_blocks.push(DownEncoderBlock2D::new(
                &blocks.pp(i),
                prev,
                out,
                cfg.layers_per_block,
                g,
                i + 1 < ch.len(),
            )?);
            prev = out;
        }
        Ok(Self {
            conv_in: Conv2d::new(&vb.pp("conv_in"), cfg.in_channels, first, 3, 1, 1)?,
            down_blocks,
            mid_block: UNetMidBlock2D::new(
                &vb.pp("mid_block"),
                last,
                g,
                cfg.mid_block_add_attention,
            )?,
            conv_norm_out: GroupNorm::new(&vb.pp("conv_norm_out"), g, last, VAE_EPS)?,
            conv_out: Conv2d::new(&vb.pp("conv_out"), last, 2 * cfg.latent_channels, 3, 1, 1)?,
        })
    }

    /// Image `[B, in, H, W]` → moments `[B, 2·latent, H/f, W/f]` (before `quant_conv`).
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.conv_in.forward(x);
        for b in &self.down_blocks {
            h = b.forward(h);
        }
        let h = self.mid_block.forward(h);
        self.conv_out.forward(self.conv_norm_out.forward_silu(h))
    }
}

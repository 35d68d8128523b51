//! The VAE decoder (diffusers' `Decoder` with group norms): latent → image.

use super::blocks::{ResnetBlock2D, UNetMidBlock2D, Upsample2D, VAE_EPS};
use super::config::AutoencoderKLConfig;
use crate::error::Result;
use crate::load::Vb;
use crate::nn::{Conv2d, GroupNorm};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

/// diffusers' `UpDecoderBlock2D`: ResNet blocks, then (except at the last level) an upsampler.
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D<B: Backend> {
    /// `resnets`.
    pub resnets: Vec<ResnetBlock2D<B>>,
    /// `upsamplers` (one, or none at the last level).
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: Backend> UpDecoderBlock2D<B> {
    fn new(
        vb: &Vb<B>,
        in_ch: usize,
        out_ch: usize,
        layers: usize,
        groups: usize,
        upsample: bool,
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
        let upsamplers = if upsample {
            vec![Upsample2D::new(&vb.pp("upsamplers").pp(0), out_ch)?]
        } else {
            Vec::new()
        };
        Ok(Self {
            resnets,
            upsamplers,
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = x;
        for r in &self.resnets {
            h = r.forward(h);
        }
        for u in &self.upsamplers {
            h = u.forward(h);
        }
        h
    }
}

/// diffusers' VAE `Decoder`.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// `conv_in`.
    pub conv_in: Conv2d<B>,
    /// `mid_block`.
    pub mid_block: UNetMidBlock2D<B>,
    /// `up_blocks`.
    pub up_blocks: Vec<UpDecoderBlock2D<B>>,
    /// `conv_norm_out`.
    pub conv_norm_out: GroupNorm<B>,
    /// `conv_out`.
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    /// Loads the decoder under `vb` (`decoder`).
    pub fn new(vb: &Vb<B>, cfg: &AutoencoderKLConfig) -> Result<Self> {
        cfg.checked()?;
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let g = cfg.norm_num_groups;
        let top = rev[0];
        let bottom = rev[rev.len() - 1];
        let blocks = vb.pp("up_blocks");
        let mut up_blocks = Vec::with_capacity(rev.len());
        let mut prev = top;
        for (i, &out) in rev.iter().enumerate() {
            up_blocks.push(UpDecoderBlock2D::new(
                &blocks.pp(i),
                prev,
                out,
                cfg.layers_per_block + 1,
                g,
                i + 1 < rev.len(),
            )?);
            prev = out;
        }
        Ok(Self {
            conv_in: Conv2d::new(&vb.pp("conv_in"), cfg.latent_channels, top, 3, 1, 1)?,
            mid_block: UNetMidBlock2D::new(
                &vb.pp("mid_block"),
                top,
                g,
                cfg.mid_block_add_attention,
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::new(&vb.pp("conv_norm_out"), g, bottom, VAE_EPS)?,
            conv_out: Conv2d::new(&vb.pp("conv_out"), bottom, cfg.out_channels, 3, 1, 1)?,
        })
    }

    /// Latent `[B, latent, h, w]` (after `post_quant_conv`) → image `[B, out, h·f, w·f]`.
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = self.mid_block.forward(self.conv_in.forward(z));
        for b in &self.up_blocks {
            h = b.forward(h);
        }
        self.conv_out.forward(self.conv_norm_out.forward_silu(h))
    }
}

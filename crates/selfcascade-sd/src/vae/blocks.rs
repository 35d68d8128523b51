//! The building blocks of the VAE, with diffusers' parameter names: `ResnetBlock2D` (no time
//! embedding), the mid-block attention (one head, group norm, residual), `UNetMidBlock2D`,
//! `Downsample2D` (asymmetric padding) and `Upsample2D` (nearest ×2 + conv).

use crate::error::Result;
use crate::load::Vb;
use crate::nn::{kernels, Conv2d, GroupNorm, Linear};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

/// ε of every VAE normalisation (diffusers hard-codes 1e-6).
pub const VAE_EPS: f64 = 1e-6;

/// diffusers' `ResnetBlock2D` without time embedding (`temb_channels=None`, output scale 1):
/// `x + conv2(silu(norm2(conv1(silu(norm1(x))))))`, with a 1×1 `conv_shortcut` when channels change.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    /// `norm1`.
    pub norm1: GroupNorm<B>,
    /// `conv1` (3×3).
    pub conv1: Conv2d<B>,
    /// `norm2`.
    pub norm2: GroupNorm<B>,
    /// `conv2` (3×3).
    pub conv2: Conv2d<B>,
    /// `conv_shortcut` (1×1), present when `in != out`.
    pub conv_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> ResnetBlock2D<B> {
    /// Loads the block under `vb`.
    pub fn new(vb: &Vb<B>, in_ch: usize, out_ch: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(&vb.pp("norm1"), groups, in_ch, VAE_EPS)?,
            conv1: Conv2d::new(&vb.pp("conv1"), in_ch, out_ch, 3, 1, 1)?,
            norm2: GroupNorm::new(&vb.pp("norm2"), groups, out_ch, VAE_EPS)?,
            conv2: Conv2d::new(&vb.pp("conv2"), out_ch, out_ch, 3, 1, 1)?,
            conv_shortcut: if in_ch != out_ch {
                Some(Conv2d::new(
                    &vb.pp("conv_shortcut"),
                    in_ch,
                    out_ch,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
        })
    }

    /// The block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = self.conv1.forward(self.norm1.forward_silu(x.clone()));
        let h = self.conv2.forward(self.norm2.forward_silu(h));
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(x),
            None => x,
        };
        skip.add(h)
    }
}

/// The mid-block attention: diffusers' `Attention(channels, heads=1, dim_head=channels,
/// norm_num_groups, residual_connection=True, rescale_output_factor=1)` over the H·W positions.
/// Loads the current names (`to_q`, `to_k`, `to_v`, `to_out.0`) or the deprecated ones
/// (`query`, `key`, `value`, `proj_attn`) of old checkpoints.
#[derive(Module, Debug)]
pub struct VaeAttention<B: Backend> {
    /// `group_norm`.
    pub group_norm: GroupNorm<B>,
    /// `to_q`.
    pub to_q: Linear<B>,
    /// `to_k`.
    pub to_k: Linear<B>,
    /// `to_v`.
    pub to_v: Linear<B>,
    /// `to_out` (`to_out.0` is the projection; diffusers' `to_out.1` is dropout).
    pub to_out: Vec<Linear<B>>,
}

impl<B: Backend> VaeAttention<B> {
    /// Loads the attention under `vb`.
    pub fn new(vb: &Vb<B>, channels: usize, groups: usize) -> Result<Self> {
        let legacy = !vb.contains("to_q.weight") && vb.contains("query.weight");
        let (q, k, v, o) = if legacy {
            ("query", "key", "value", vb.pp("proj_attn"))
        } else {
            ("to_q", "to_k", "to_v", vb.pp("to_out").pp(0))
        };
        Ok(Self {
            group_norm: GroupNorm::new(&vb.pp("group_norm"), groups, channels, VAE_EPS)?,
            to_q: Linear::new(&vb.pp(q), channels, channels, true)?,
            to_k: Linear::new(&vb.pp(k), channels, channels, true)?,
            to_v: Linear::new(&vb.pp(v), channels, channels, true)?,
            to_out: vec![Linear::new(&o, channels, channels, true)?],
        })
    }

    /// `x + to_out(attention(group_norm(x)))` on `[B, C, H, W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let n = h * w;
        let t = self
            .group_norm
            .forward(x.clone())
            .reshape([b, c, n])
            .swap_dims(1, 2);
        let heads = |lin: &Linear<B>| lin.forward(t.clone()).reshape([b, 1, n, c]);
        let q = heads(&self.to_q);
        let k = heads(&self.to_k);
        let v = heads(&self.to_v);
        let o = kernels::attention(q, k, v, (c as f64).powf(-0.5), false).reshape([b, n, c]);
        let o = match self.to_out.first() {
            Some(lin) => lin.forward(o),
            None => o,
        };
        o.swap_dims(1, 2).reshape([b, c, h, w]).add(x)
    }
}

/// diffusers' `UNetMidBlock2D` as the VAE uses it: resnet, (attention, resnet).
#[derive(Module, Debug)]
pub struct UNetMidBlock2D<B: Backend> {
    /// `attentions` (empty when `mid_block_add_attention` is false).
    pub attentions: Vec<VaeAttention<B>>,
    /// `resnets` (two).
    pub resnets: Vec<ResnetBlock2D<B>>,
}

impl<B: Backend> UNetMidBlock2D<B> {
    /// Loads the block under `vb`.
    pub fn new(vb: &Vb<B>, channels: usize, groups: usize, attention: bool) -> Result<Self> {
        let r = vb.pp("resnets");
        let resnets = vec![
            ResnetBlock2D::new(&r.pp(0), channels, channels, groups)?,
            ResnetBlock2D::new(&r.pp(1), channels, channels, groups)?,
        ];
        let attentions = if attention {
            vec![VaeAttention::new(
                &vb.pp("attentions").pp(0),
                channels,
                groups,
            )?]
        } else {
            Vec::new()
        };
        Ok(Self {
            attentions,
            resnets,
        })
    }

    /// The block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = x;
        for (i, resnet) in self.resnets.iter().enumerate() {
            if i > 0 {
                if let Some(attn) = self.attentions.get(i - 1) {
                    h = attn.forward(h);
                }
            }
            h = resnet.forward(h);
        }
        h
    }
}

/// diffusers' `Downsample2D(use_conv=True, padding=0)`: zero-pad right and bottom by one, then a
/// 3×3 stride-2 convolution without padding.
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    /// `conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample2D<B> {
    /// Loads the layer under `vb`.
    pub fn new(vb: &Vb<B>, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&vb.pp("conv"), channels, channels, 3, 2, 0)?,
        })
    }

    /// The layer.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(x.pad((0, 1, 0, 1), 0.0f32))
    }
}

/// diffusers' `Upsample2D(use_conv=True)`: nearest ×2, then a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    /// `conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    /// Loads the layer under `vb`.
    pub fn new(vb: &Vb<B>, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&vb.pp("conv"), channels, channels, 3, 1, 1)?,
        })
    }

    /// The layer.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(kernels::upsample_nearest2x(x))
    }
}

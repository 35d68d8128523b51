//! diffusers' `ResnetBlock2D`, `Downsample2D` and `Upsample2D` (the variants SD uses).

use super::hooks::{redilated_conv, resize_nearest, UNetHooks};
use crate::error::Result;
use crate::load::Vb;
use crate::nn::{Conv2d, GroupNorm, Linear};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};

/// A 3×3 convolution that the dilation hook may re-dilate, looked up by its precomputed diffusers path.
pub(crate) fn hooked_conv<B: Backend>(
    conv: &Conv2d<B>,
    name: &str,
    x: Tensor<B, 4>,
    hooks: &UNetHooks<'_, B>,
) -> Result<Tensor<B, 4>> {
    match hooks.dilation.and_then(|f| f(name)) {
        None => Ok(conv.forward(x)),
        Some(f) => redilated_conv(conv, x, f, name),
    }
}

/// `ResnetBlock2D` with `time_embedding_norm = "default"`: GroupNorm, SiLU, conv 3×3, + time projection,
/// GroupNorm, SiLU, conv 3×3, plus the (1×1-projected when channels change) input, over `output_scale_factor`.
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    /// `norm1`.
    pub norm1: GroupNorm<B>,
    /// `conv1`.
    pub conv1: Conv2d<B>,
    /// `time_emb_proj`.
    pub time_emb_proj: Linear<B>,
    /// `norm2`.
    pub norm2: GroupNorm<B>,
    /// `conv2`.
    pub conv2: Conv2d<B>,
    /// `conv_shortcut` (1×1) when input and output channels differ.
    pub conv_shortcut: Option<Conv2d<B>>,
    /// The output is divided by this.
    pub output_scale_factor: f64,
    /// diffusers paths of `conv1` and `conv2` (for the dilation hook).
    #[module(skip)]
    conv_names: [String; 2],
}

impl<B: Backend> ResnetBlock2D<B> {
    /// Loads the block at `vb` (e.g. `down_blocks.0.resnets.1`).
    pub fn new(
        vb: &Vb<B>,
        in_channels: usize,
        out_channels: usize,
        temb_channels: usize,
        groups: usize,
        eps: f64,
        output_scale_factor: f64,
    ) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(&vb.pp("norm1"), groups, in_channels, eps)?,
            conv1: Conv2d::new(&vb.pp("conv1"), in_channels, out_channels, 3, 1, 1)?,
            time_emb_proj: Linear::new(&vb.pp("time_emb_proj"), temb_channels, out_channels, true)?,
            norm2: GroupNorm::new(&vb.pp("norm2"), groups, out_channels, eps)?,
            conv2: Conv2d::new(&vb.pp("conv2"), out_channels, out_channels, 3, 1, 1)?,
            conv_shortcut: if in_channels != out_channels {
                Some(Conv2d::new(
                    &vb.pp("conv_shortcut"),
                    in_channels,
                    out_channels,
                    1,
                    1,
                    0,
                )?)
            } else {
                None
            },
            output_scale_factor,
            conv_names: [vb.path("conv1"), vb.path("conv2")],
        })
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.norm1.weight.dims()[0]
    }

    /// The block on `x` `[B, C, H, W]`; `temb_act` is `silu(temb)` `[B, temb_channels]`.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb_act: &Tensor<B, 2>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        let h = self.norm1.forward_silu(x.clone());
        let h = hooked_conv(&self.conv1, &self.conv_names[0], h, hooks)?;
        let [b, c, _, _] = h.dims();
        let t = self
            .time_emb_proj
            .forward(temb_act.clone())
            .reshape([b, c, 1, 1]);
        let h = self.norm2.forward_silu(h.add(t));
        let h = hooked_conv(&self.conv2, &self.conv_names[1], h, hooks)?;
        let x = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        let out = x.add(h);
        Ok(if self.output_scale_factor == 1.0 {
            out
        } else {
            out.div_scalar(self.output_scale_factor)
        })
    }
}

/// `Downsample2D` with a convolution: 3×3, stride 2, padding 1.
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    /// `conv`.
    pub conv: Conv2d<B>,
    #[module(skip)]
    conv_name: String,
}

impl<B: Backend> Downsample2D<B> {
    /// Loads `conv` under `vb` (e.g. `down_blocks.0.downsamplers.0`).
    pub fn new(vb: &Vb<B>, channels: usize, padding: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&vb.pp("conv"), channels, channels, 3, 2, padding)?,
            conv_name: vb.path("conv"),
        })
    }

    /// `[B, C, H, W]` → `[B, C, ⌈H/2⌉, ⌈W/2⌉]`.
    pub fn forward(&self, x: Tensor<B, 4>, hooks: &UNetHooks<'_, B>) -> Result<Tensor<B, 4>> {
        hooked_conv(&self.conv, &self.conv_name, x, hooks)
    }
}

/// `Upsample2D` with a convolution: nearest-neighbour ×2 (or to an explicit size), then 3×3 conv.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    /// `conv`.
    pub conv: Conv2d<B>,
    #[module(skip)]
    conv_name: String,
}

impl<B: Backend> Upsample2D<B> {
    /// Loads `conv` under `vb` (e.g. `up_blocks.0.upsamplers.0`).
    pub fn new(vb: &Vb<B>, channels: usize) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(&vb.pp("conv"), channels, channels, 3, 1, 1)?,
            conv_name: vb.path("conv"),
        })
    }

    /// Upsamples to `size` (height, width), or ×2 when `None`, then convolves.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        size: Option<(usize, usize)>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        let [_, _, h, w] = x.dims();
        let x = resize_nearest(x, size.unwrap_or((2 * h, 2 * w)));
        hooked_conv(&self.conv, &self.conv_name, x, hooks)
    }
}

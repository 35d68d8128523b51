//! The Stable Diffusion VAE, diffusers' `AutoencoderKL`, with diffusers' parameter names
//! (`encoder.down_blocks.0.resnets.1.conv1`, `quant_conv`, `decoder.up_blocks.2.upsamplers.0.conv`, …),
//! plus diffusers' tiled encode/decode for images larger than the VAE's `sample_size`.

pub mod blocks;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod tiling;

pub use config::AutoencoderKLConfig;
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use tiling::Tiling;

use crate::error::{Error, Result};
use crate::load::{open_component, Vb};
use crate::nn::Conv2d;
use burn::module::Module;
use burn::tensor::{backend::Backend, DType, FloatDType, Tensor};
use std::path::Path;

/// diffusers' `AutoencoderKL`.
///
/// Images are `[B, C, H, W]` in [-1, 1]; latents are the VAE's own (unscaled) latents: multiply by
/// [`AutoencoderKL::scaling_factor`] before the UNet and divide by it before [`AutoencoderKL::decode`],
/// as the diffusers pipelines do.
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    /// `encoder`.
    pub encoder: Encoder<B>,
    /// `decoder`.
    pub decoder: Decoder<B>,
    /// `quant_conv` (1×1, `2·latent → 2·latent`), absent when `use_quant_conv` is false.
    pub quant_conv: Option<Conv2d<B>>,
    /// `post_quant_conv` (1×1), absent when `use_post_quant_conv` is false.
    pub post_quant_conv: Option<Conv2d<B>>,
    /// `scaling_factor` of the config.
    pub scaling_factor: f64,
    /// `sample_size` of the config (the default tile size).
    pub sample_size: usize,
    /// 2^(levels − 1).
    pub downsample_factor: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// Image channels expected by the encoder.
    pub in_channels: usize,
    /// `force_upcast` of the config: diffusers runs this VAE in float32 when the pipeline is half
    /// (SDXL's VAE overflows f16); see [`AutoencoderKL::upcast_for_half`].
    pub force_upcast: bool,
}

impl<B: Backend> AutoencoderKL<B> {
    /// Builds the VAE under `vb` (the checkpoint root) from a validated config.
    pub fn new(vb: &Vb<B>, cfg: &AutoencoderKLConfig) -> Result<Self> {
        cfg.checked()?;
        let l = cfg.latent_channels;
        Ok(Self {
            encoder: Encoder::new(&vb.pp("encoder"), cfg)?,
            decoder: Decoder::new(&vb.pp("decoder"), cfg)?,
            quant_conv: if cfg.use_quant_conv {
                Some(Conv2d::new(&vb.pp("quant_conv"), 2 * l, 2 * l, 1, 1, 0)?)
            } else {
                None
            },
            post_quant_conv: if cfg.use_post_quant_conv {
                Some(Conv2d::new(&vb.pp("post_quant_conv"), l, l, 1, 1, 0)?)
            } else {
                None
            },
            scaling_factor: cfg.scaling_factor,
            sample_size: cfg.sample_size,
            downsample_factor: cfg.downsample_factor(),
            latent_channels: l,
            in_channels: cfg.in_channels,
            force_upcast: cfg.force_upcast,
        })
    }

    /// Loads `dir/config.json` and the weights in `dir` (single file or sharded with an index;
    /// `variant` e.g. `Some("fp16")`), strictly: missing, mis-shaped and unexpected tensors are errors.
    pub fn load(dir: &Path, variant: Option<&str>, device: &B::Device) -> Result<Self> {
        let cfg = AutoencoderKLConfig::from_file(&dir.join("config.json"))?;
        let weights = open_component(dir, variant)?;
        let model = Self::new(&weights.root::<B>(device), &cfg)?;
        weights.finish()?;
        Ok(model.upcast_for_half())
    }

    /// With half weights (f16/bf16) and `force_upcast` set, the weights cast to float32, as diffusers
    /// upcasts such a VAE; otherwise unchanged. [`Self::load`] applies it. Encoding and decoding cast
    /// their input to the weights' dtype and their result back to the input's.
    pub fn upcast_for_half(self) -> Self {
        if self.force_upcast && crate::nn::kernels::is_half(self.dtype()) {
            crate::nn::cast_params(self, FloatDType::F32)
        } else {
            self
        }
    }

    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.decoder.conv_in.weight.val().dtype()
    }

    /// The latent scaling factor (`z_unet = z_vae · scaling_factor`).
    pub fn scaling_factor(&self) -> f64 {
        self.scaling_factor
    }

    /// The tiling diffusers' `enable_tiling()` uses for this VAE (tiles of `sample_size` pixels).
    pub fn default_tiling(&self) -> Tiling {
        Tiling::new(self.sample_size, self.downsample_factor)
    }

    /// Tiles of `sample_tile` image pixels (overlap 0.25).
    pub fn tiling_with_size(&self, sample_tile: usize) -> Tiling {
        Tiling::new(sample_tile, self.downsample_factor)
    }

    fn check_image(&self, image: &Tensor<B, 4>) -> Result<()> {
        let [b, c, h, w] = image.dims();
        if b == 0 {
            return Err(Error::Input("VAE encode: empty batch".into()));
        }
        if c != self.in_channels {
            return Err(Error::Input(format!(
                "VAE encode: image has {c} channels, the VAE expects {}",
                self.in_channels
            )));
        }
        self.check_encodable(h, w)
    }

    /// Every downsampler pads by one and needs at least 3 pixels to convolve.
    fn check_encodable(&self, h: usize, w: usize) -> Result<()> {
        for (what, mut s) in [("height", h), ("width", w)] {
            if s == 0 {
                return Err(Error::Input(format!("VAE encode: image {what} is 0")));
            }
            for _ in 0..self
                .encoder
                .down_blocks
                .iter()
                .filter(|b| !b.downsamplers.is_empty())
                .count()
            {
                if s < 2 {
                    return Err(Error::Input(format!(
                        "VAE encode: image (or tile) {what} {} is too small for {} downsampling steps",
                        if what == "height" { h } else { w },
                        self.downsample_factor.trailing_zeros()
                    )));
                }
                s = (s - 2) / 2 + 1;
            }
        }
        Ok(())
    }

    fn check_latent(&self, latent: &Tensor<B, 4>) -> Result<()> {
        let [b, c, h, w] = latent.dims();
        if b == 0 {
            return Err(Error::Input("VAE decode: empty batch".into()));
        }
        if c != self.latent_channels {
            return Err(Error::Input(format!(
                "VAE decode: latent has {c} channels, the VAE expects {}",
                self.latent_channels
            )));
        }
        if h == 0 || w == 0 {
            return Err(Error::Input("VAE decode: latent is empty".into()));
        }
        Ok(())
    }

    /// Image → moments (`encoder` then `quant_conv`), `[B, 2·latent, h, w]`.
    fn moments(&self, image: Tensor<B, 4>) -> Tensor<B, 4> {
        let dtype = image.dtype();
        let m = self.encoder.forward(image.cast(self.dtype()));
        match &self.quant_conv {
            Some(q) => q.forward(m),
            None => m,
        }
        .cast(dtype)
    }

    /// Splits moments into the mean and the log-variance clamped to [-30, 20]
    /// (diffusers' `DiagonalGaussianDistribution`).
    fn split(&self, moments: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let l = self.latent_channels;
        let mean = moments.clone().narrow(1, 0, l);
        let logvar = moments.narrow(1, l, l).clamp(-30.0, 20.0);
        (mean, logvar)
    }

    /// Encodes `image` `[B, C, H, W]` into the latent distribution's `(mean, logvar)`, each
    /// `[B, latent, H/f, W/f]` (odd sizes round as diffusers does). The mean is
    /// `latent_dist.mode()`; a sample is `mean + exp(logvar/2)·ε`.
    pub fn encode(&self, image: Tensor<B, 4>) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        self.check_image(&image)?;
        Ok(self.split(self.moments(image)))
    }

    /// Decodes an unscaled latent `[B, latent, h, w]` into an image `[B, out, h·f, w·f]`
    /// (diffusers' `vae.decode(z).sample`).
    pub fn decode(&self, latent: Tensor<B, 4>) -> Result<Tensor<B, 4>> {
        self.check_latent(&latent)?;
        Ok(self.decode_unchecked(latent))
    }

    fn decode_unchecked(&self, latent: Tensor<B, 4>) -> Tensor<B, 4> {
        let dtype = latent.dtype();
        let latent = latent.cast(self.dtype());
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(latent),
            None => latent,
        };
        self.decoder.forward(z).cast(dtype)
    }

    /// Tiled encoding, always tiled (diffusers' `_tiled_encode`), then split as [`Self::encode`].
    pub fn tiled_encode(
        &self,
        image: Tensor<B, 4>,
        tiling: &Tiling,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        tiling.validate(self.downsample_factor)?;
        self.check_image(&image)?;
        let moments = tiling::tiled(
            image,
            tiling.sample_tile,
            tiling.latent_tile,
            tiling.overlap,
            |tile| {
                let [_, _, h, w] = tile.dims();
                self.check_encodable(h, w)?;
                Ok(self.moments(tile))
            },
        )?;
        Ok(self.split(moments))
    }

    /// Tiled decoding, always tiled (diffusers' `tiled_decode`).
    pub fn tiled_decode(&self, latent: Tensor<B, 4>, tiling: &Tiling) -> Result<Tensor<B, 4>> {
        tiling.validate(self.downsample_factor)?;
        self.check_latent(&latent)?;
        tiling::tiled(
            latent,
            tiling.latent_tile,
            tiling.sample_tile,
            tiling.overlap,
            |tile| Ok(self.decode_unchecked(tile)),
        )
    }

    /// diffusers' `encode` with tiling enabled: tiled only when the image is larger than a tile.
    pub fn encode_auto(
        &self,
        image: Tensor<B, 4>,
        tiling: &Tiling,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        let [_, _, h, w] = image.dims();
        if h > tiling.sample_tile || w > tiling.sample_tile {
            self.tiled_encode(image, tiling)
        } else {
            self.encode(image)
        }
    }

    /// diffusers' `decode` with tiling enabled: tiled only when the latent is larger than a tile.
    pub fn decode_auto(&self, latent: Tensor<B, 4>, tiling: &Tiling) -> Result<Tensor<B, 4>> {
        let [_, _, h, w] = latent.dims();
        if h > tiling.latent_tile || w > tiling.latent_tile {
            self.tiled_decode(latent, tiling)
        } else {
            self.decode(latent)
        }
    }
}

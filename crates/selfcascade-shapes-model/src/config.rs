//! The architecture of the shapes model and the diffusers UNet config it maps to.

use crate::error::{Error, Result};
use selfcascade_sd::unet::UNet2DConditionConfig;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Architecture of the class-conditional pixel-space shapes model: a `selfcascade-sd` UNet with 3 input
/// and output channels (RGB in `[-1, 1]`, no VAE) and a learned label embedding as its cross-attention
/// context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShapesModelConfig {
    /// Side of the square base training size in pixels (32 for the reference model).
    pub image_size: usize,
    /// Output channels of every down block (one resolution level each).
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per down block (up blocks have one more, as in diffusers).
    pub layers_per_block: usize,
    /// Groups of every GroupNorm; must divide every entry of `block_out_channels`.
    pub norm_num_groups: usize,
    /// Attention heads of every transformer (diffusers' `attention_head_dim`, which counts heads).
    pub attention_heads: usize,
    /// How many of the deepest levels have transformers (self- and cross-attention); the mid block
    /// always has one. 1 = attention only at the lowest resolution.
    pub attention_levels: usize,
    /// Width of the label context tokens (`cross_attention_dim`).
    pub cross_attention_dim: usize,
}

impl ShapesModelConfig {
    /// The reference architecture of issue 6 (about 1.2M parameters): channels 32/64/64, one layer per
    /// block, 3 levels, attention only at the 8×8 level (and in the mid block), base 32×32.
    pub fn reference() -> Self {
        Self {
            image_size: 32,
            block_out_channels: vec![32, 64, 64],
            layers_per_block: 1,
            norm_num_groups: 8,
            attention_heads: 4,
            attention_levels: 1,
            cross_attention_dim: 64,
        }
    }

    /// A tiny architecture for tests: channels 16/32, attention at the lower level, base 16×16.
    pub fn tiny() -> Self {
        Self {
            image_size: 16,
            block_out_channels: vec![16, 32],
            layers_per_block: 1,
            norm_num_groups: 8,
            attention_heads: 2,
            attention_levels: 1,
            cross_attention_dim: 16,
        }
    }

    /// Total down-sampling factor of the UNet (sizes must be multiples of it).
    pub fn downsampling_factor(&self) -> usize {
        1usize << self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks the fields for consistency (the UNet config validates the rest).
    pub fn validate(&self) -> Result<()> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err(Error::Config("block_out_channels is empty".into()));
        }
        if self.attention_levels > n {
            return Err(Error::Config(format!(
                "attention_levels = {} exceeds the {n} levels",
                self.attention_levels
            )));
        }
        if self.layers_per_block == 0 || self.cross_attention_dim == 0 || self.attention_heads == 0
        {
            return Err(Error::Config(
                "layers_per_block, cross_attention_dim and attention_heads must be positive".into(),
            ));
        }
        let f = self.downsampling_factor();
        if self.image_size == 0 || !self.image_size.is_multiple_of(f) {
            return Err(Error::Config(format!(
                "image_size = {} must be a positive multiple of the down-sampling factor {f}",
                self.image_size
            )));
        }
        Ok(())
    }

    /// The diffusers `UNet2DConditionModel` config of this architecture (validated when the UNet is
    /// built).
    pub fn unet_config(&self) -> Result<UNet2DConditionConfig> {
        self.validate()?;
        let n = self.block_out_channels.len();
        let plain = n - self.attention_levels;
        let down: Vec<&str> = (0..n)
            .map(|i| {
                if i < plain {
                    "DownBlock2D"
                } else {
                    "CrossAttnDownBlock2D"
                }
            })
            .collect();
        let up: Vec<&str> = (0..n)
            .map(|i| {
                if i < self.attention_levels {
                    "CrossAttnUpBlock2D"
                } else {
                    "UpBlock2D"
                }
            })
            .collect();
        let value = json!({
            "_class_name": "UNet2DConditionModel",
            "sample_size": self.image_size,
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": down,
            "mid_block_type": "UNetMidBlock2DCrossAttn",
            "up_block_types": up,
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "norm_num_groups": self.norm_num_groups,
            "cross_attention_dim": self.cross_attention_dim,
            "attention_head_dim": self.attention_heads,
            "use_linear_projection": true,
            "flip_sin_to_cos": true,
            "freq_shift": 0,
        });
        serde_json::from_value(value)
            .map_err(|e| Error::Config(format!("cannot build the UNet config: {e}")))
    }
}

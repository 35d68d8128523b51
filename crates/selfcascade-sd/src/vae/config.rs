//! `AutoencoderKLConfig`: the `config.json` of a `vae/` folder, as diffusers writes it, with validation
//! of everything the implementation cannot honour.

use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn d_three() -> usize {
    3
}
fn d_down() -> Vec<String> {
    vec!["DownEncoderBlock2D".into()]
}
fn d_up() -> Vec<String> {
    vec!["UpDecoderBlock2D".into()]
}
fn d_channels() -> Vec<usize> {
    vec![64]
}
fn d_one() -> usize {
    1
}
fn d_act() -> String {
    "silu".into()
}
fn d_latent() -> usize {
    4
}
fn d_groups() -> usize {
    32
}
fn d_sample() -> usize {
    32
}
fn d_scaling() -> f64 {
    0.18215
}
fn d_true() -> bool {
    true
}

/// diffusers' `AutoencoderKL` config (defaults as in diffusers 0.42).
#[derive(Debug, Clone, Deserialize)]
pub struct AutoencoderKLConfig {
    /// Image channels in.
    #[serde(default = "d_three")]
    pub in_channels: usize,
    /// Image channels out.
    #[serde(default = "d_three")]
    pub out_channels: usize,
    /// Encoder blocks: every entry must be `DownEncoderBlock2D`.
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// Decoder blocks: every entry must be `UpDecoderBlock2D`.
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// Channels of each level.
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per encoder level (the decoder has one more).
    #[serde(default = "d_one")]
    pub layers_per_block: usize,
    /// `silu` (or its alias `swish`).
    #[serde(default = "d_act")]
    pub act_fn: String,
    /// Latent channels.
    #[serde(default = "d_latent")]
    pub latent_channels: usize,
    /// Groups of every GroupNorm.
    #[serde(default = "d_groups")]
    pub norm_num_groups: usize,
    /// Image size the VAE was trained at: the tile size of tiled encode/decode.
    #[serde(default = "d_sample")]
    pub sample_size: usize,
    /// Latent scaling factor (SD 1.x/2.x 0.18215, SDXL 0.13025).
    #[serde(default = "d_scaling")]
    pub scaling_factor: f64,
    /// Must be null (latent shifting is not implemented).
    #[serde(default)]
    pub shift_factor: Option<f64>,
    /// Must be null (per-channel latent statistics are not implemented).
    #[serde(default)]
    pub latents_mean: Option<Value>,
    /// Must be null (per-channel latent statistics are not implemented).
    #[serde(default)]
    pub latents_std: Option<Value>,
    /// Whether the VAE runs in float32 when the model is half (diffusers' rule; SDXL's VAE overflows f16).
    #[serde(default = "d_true")]
    pub force_upcast: bool,
    /// Whether `quant_conv` exists.
    #[serde(default = "d_true")]
    pub use_quant_conv: bool,
    /// Whether `post_quant_conv` exists.
    #[serde(default = "d_true")]
    pub use_post_quant_conv: bool,
    /// Whether the mid blocks have their attention layer.
    #[serde(default = "d_true")]
    pub mid_block_add_attention: bool,
    /// Every other field: checked by [`AutoencoderKLConfig::validate`].
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for AutoencoderKLConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: d_down(),
            up_block_types: d_up(),
            block_out_channels: d_channels(),
            layers_per_block: 1,
            act_fn: d_act(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: d_scaling(),
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            extra: BTreeMap::new(),
        }
    }
}

impl AutoencoderKLConfig {
    /// Reads and validates `path` (a `config.json`).
    pub fn from_file(path: &Path) -> Result<Self> {
        crate::load::read_checked_config(path, Self::validate)
    }

    /// Parses and validates JSON text (`origin` names it in errors).
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        crate::load::parse_checked_config(text, origin, Self::validate)
    }

    /// Checks everything the implementation relies on; the message says what is wrong.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if let Some(s) = self.shift_factor {
            return Err(format!(
                "`shift_factor` = {s} is not supported (only null: latents are scaled, never shifted)"
            ));
        }
        for (name, v) in [
            ("latents_mean", &self.latents_mean),
            ("latents_std", &self.latents_std),
        ] {
            if let Some(v) = v {
                if !v.is_null() {
                    return Err(format!(
                        "`{name}` = {v} is not supported (only null: per-channel latent statistics are not implemented)"
                    ));
                }
            }
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(format!(
                "`act_fn` = \"{}\" is not supported (expected \"silu\")",
                self.act_fn
            ));
        }
        let levels = self.block_out_channels.len();
        if levels == 0 || levels > 16 {
            return Err(format!(
                "`block_out_channels` must have 1 to 16 entries, got {levels}"
            ));
        }
        if self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            return Err(format!(
                "`down_block_types` ({}) and `up_block_types` ({}) must have one entry per `block_out_channels` entry ({levels})",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return Err(format!(
                "down block type \"{t}\" is not supported (only DownEncoderBlock2D)"
            ));
        }
        if let Some(t) = self
            .up_block_types
            .iter()
            .find(|t| *t != "UpDecoderBlock2D")
        {
            return Err(format!(
                "up block type \"{t}\" is not supported (only UpDecoderBlock2D)"
            ));
        }
        if self.norm_num_groups == 0 {
            return Err("`norm_num_groups` must be positive".into());
        }
        for (name, v) in [
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_channels", self.latent_channels),
            ("layers_per_block", self.layers_per_block),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| **c == 0 || !c.is_multiple_of(self.norm_num_groups))
        {
            return Err(format!(
                "block channel count {c} is not a positive multiple of `norm_num_groups` {}",
                self.norm_num_groups
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            return Err(format!(
                "`scaling_factor` must be a positive number, got {}",
                self.scaling_factor
            ));
        }
        for (key, value) in &self.extra {
            if key == "_class_name" {
                if value.as_str() != Some("AutoencoderKL") {
                    return Err(format!(
                        "`_class_name` is {value}, expected \"AutoencoderKL\""
                    ));
                }
                continue;
            }
            if key.starts_with('_') {
                continue;
            }
            return Err(format!(
                "unknown config field `{key}` = {value}; this implementation does not know whether it changes the model's output, so it refuses the config"
            ));
        }
        Ok(())
    }

    /// [`Self::validate`] as a crate error.
    pub(crate) fn checked(&self) -> Result<()> {
        self.validate().map_err(|message| Error::Config {
            path: "AutoencoderKLConfig".into(),
            message,
        })
    }

    /// The spatial down-sampling factor, 2^(levels − 1) (8 for SD).
    pub fn downsample_factor(&self) -> usize {
        let shift = self.block_out_channels.len().saturating_sub(1) as u32;
        1usize.checked_shl(shift).unwrap_or(usize::MAX)
    }
}

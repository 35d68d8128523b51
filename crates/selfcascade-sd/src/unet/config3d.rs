//! `UNet3DConditionModel`'s `config.json` (ModelScope text-to-video), as diffusers writes it, and its
//! validation.

use super::config::{
    d_1, d_4, d_channels, d_eps, d_groups, d_one_f, d_silu, BlockKind, PerBlock, UNetArch,
};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

fn d_2() -> usize {
    2
}
fn d_cross() -> usize {
    1024
}
fn d_head_dim() -> PerBlock {
    PerBlock::One(64)
}
/// ModelScope's blocks: three `CrossAttnDownBlock3D` then a `DownBlock3D` (up: the mirror).
fn d_down() -> Vec<String> {
    let mut v = vec!["CrossAttnDownBlock3D".to_string(); 3];
    v.push("DownBlock3D".into());
    v
}
fn d_up() -> Vec<String> {
    let mut v = vec!["UpBlock3D".to_string()];
    v.extend(vec!["CrossAttnUpBlock3D".to_string(); 3]);
    v
}

/// The fields of a `UNet3DConditionModel` config; defaults are diffusers' (ModelScope's values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNet3DConditionConfig {
    /// Latent channels in.
    #[serde(default = "d_4")]
    pub in_channels: usize,
    /// Latent channels out.
    #[serde(default = "d_4")]
    pub out_channels: usize,
    /// `CrossAttnDownBlock3D` or `DownBlock3D` per level.
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// `CrossAttnUpBlock3D` or `UpBlock3D` per level (deepest first).
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// Channels per level.
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    /// ResNets per down block (up blocks have one more).
    #[serde(default = "d_2")]
    pub layers_per_block: usize,
    /// Padding of the downsampling convolutions (only 1 is supported).
    #[serde(default = "d_1")]
    pub downsample_padding: usize,
    /// Output scale of the mid block's ResNets.
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    /// Activation (only `silu`).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// GroupNorm groups (`null`, no output norm, is not supported).
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    /// GroupNorm ε of the ResNets and the output norm.
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    /// Text embedding width.
    #[serde(default = "d_cross")]
    pub cross_attention_dim: usize,
    /// Width of every attention head (a historical misnomer in diffusers: the spatial and temporal
    /// transformers of a block with C channels have C / `attention_head_dim` heads of this width;
    /// `transformer_in` has 8 heads of this width).
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: PerBlock,
    /// Must be `null` (diffusers rejects any other value).
    #[serde(default)]
    pub num_attention_heads: Option<Value>,
    /// Must be `null` (LCM-style timestep conditioning is not supported).
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    /// The training latent size; inputs may have any size.
    #[serde(default)]
    pub sample_size: Option<Value>,
    /// Every other field of the file (metadata such as `_class_name`).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl UNet3DConditionConfig {
    /// Parses a config from JSON text and validates it.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| Error::Config {
            path: "UNet3D config".into(),
            message: format!("invalid config: {e}"),
        })?;
        config.arch()?;
        Ok(config)
    }

    /// Reads `path` (a `unet/config.json`) and validates it.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        crate::load::read_checked_config(path, |c: &Self| c.resolve().map(|_| ()))
    }

    /// The resolved architecture (heads per level are channels / `attention_head_dim`); errors naming
    /// the field unless every field is one this implementation computes.
    pub fn arch(&self) -> Result<UNetArch> {
        self.resolve().map_err(|message| Error::Config {
            path: "UNet3D config".into(),
            message,
        })
    }

    /// Width of each attention head, per level.
    pub fn head_dims(&self) -> Result<Vec<usize>> {
        self.attention_head_dim
            .resolve("attention_head_dim", self.block_out_channels.len())
            .map_err(|message| Error::Config {
                path: "UNet3D config".into(),
                message,
            })
    }

    /// Number of upsampling layers.
    pub fn num_upsamplers(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }

    fn resolve(&self) -> std::result::Result<UNetArch, String> {
        if let Some(name) = self.other.get("_class_name") {
            if name.as_str() != Some("UNet3DConditionModel") {
                return Err(format!(
                    "`_class_name` = {name}: this is not a UNet3DConditionModel config"
                ));
            }
        }
        if let Some((key, value)) = self
            .other
            .iter()
            .find(|(k, v)| !k.starts_with('_') && !v.is_null())
        {
            return Err(format!(
                "`{key}` = {value} is not a field of UNet3DConditionModel this implementation knows"
            ));
        }
        let n = self.block_out_channels.len();
        if n == 0 || self.block_out_channels.contains(&0) {
            return Err(format!(
                "`block_out_channels` = {:?} must list positive channel counts",
                self.block_out_channels
            ));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "{} down and {} up block types for {n} levels of `block_out_channels`",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        let kind = |t: &str, cross: &str, plain: &str| match t {
            t if t == cross => Ok(BlockKind::CrossAttn),
            t if t == plain => Ok(BlockKind::Plain),
            t => Err(format!(
                "block type `{t}` is not supported (supported: {cross}, {plain})"
            )),
        };
        let down = self
            .down_block_types
            .iter()
            .map(|t| kind(t, "CrossAttnDownBlock3D", "DownBlock3D"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let up = self
            .up_block_types
            .iter()
            .map(|t| kind(t, "CrossAttnUpBlock3D", "UpBlock3D"))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if self.layers_per_block == 0 {
            return Err("`layers_per_block` = 0: every block needs a ResNet".into());
        }
        if self.downsample_padding != 1 {
            return Err(format!(
                "`downsample_padding` = {} is not supported (supported: 1)",
                self.downsample_padding
            ));
        }
        if !self.mid_block_scale_factor.is_finite() || self.mid_block_scale_factor == 0.0 {
            return Err(format!(
                "`mid_block_scale_factor` = {} must be finite and non-zero",
                self.mid_block_scale_factor
            ));
        }
        if self.act_fn != "silu" {
            return Err(format!(
                "`act_fn` = \"{}\" is not supported (supported: \"silu\")",
                self.act_fn
            ));
        }
        let groups = match self.norm_num_groups {
            Some(g) if g > 0 => g,
            other => {
                return Err(format!(
                    "`norm_num_groups` = {other:?} is not supported (a positive group count)"
                ))
            }
        };
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return Err(format!("`norm_eps` = {} must be positive", self.norm_eps));
        }
        if self.cross_attention_dim == 0 {
            return Err("`cross_attention_dim` = 0".into());
        }
        if let Some(v) = self.num_attention_heads.as_ref().filter(|v| !v.is_null()) {
            return Err(format!(
                "`num_attention_heads` = {v}: diffusers' UNet3DConditionModel rejects it; head counts \
                 follow from `attention_head_dim`"
            ));
        }
        if let Some(d) = self.time_cond_proj_dim {
            return Err(format!(
                "`time_cond_proj_dim` = {d} is not supported (supported: null)"
            ));
        }
        let head_dims = self.attention_head_dim.resolve("attention_head_dim", n)?;
        let mut heads = Vec::with_capacity(n);
        for (c, d) in self.block_out_channels.iter().zip(&head_dims) {
            if *d == 0 || !c.is_multiple_of(*d) {
                return Err(format!(
                    "`attention_head_dim` = {d} does not divide a level's {c} channels"
                ));
            }
            heads.push(c / d);
        }
        Ok(UNetArch {
            channels: self.block_out_channels.clone(),
            down,
            up,
            layers: vec![self.layers_per_block; n],
            heads,
            transformer_layers: vec![1; n],
            cross_attention_dim: self.cross_attention_dim,
            groups,
            time_embed_dim: 4 * self.block_out_channels[0],
            text_time: None,
        })
    }
}

//! `UNet2DConditionModel`'s `config.json`, as diffusers writes it, and its validation.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// An integer given once for every block, or once per block (diffusers accepts both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerBlock {
    /// The same value for every block.
    One(usize),
    /// One value per down block (up blocks use the list reversed).
    Each(Vec<usize>),
}

impl PerBlock {
    pub(crate) fn resolve(&self, field: &str, n: usize) -> std::result::Result<Vec<usize>, String> {
        match self {
            PerBlock::One(v) => Ok(vec![*v; n]),
            PerBlock::Each(v) if v.len() == n => Ok(v.clone()),
            PerBlock::Each(v) => Err(format!(
                "`{field}` lists {} values but there are {n} down blocks",
                v.len()
            )),
        }
    }
}

/// A boolean given once, or once per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BoolPerBlock {
    /// The same value for every block.
    One(bool),
    /// One value per down block.
    Each(Vec<bool>),
}

/// Config fields that are read but do not change the computation of the supported architectures
/// (SD 1.x, SD 2.x, SDXL), with the reason. Unknown fields whose value is `null` or `false` are
/// accepted as well; any other unknown field is an error naming it.
pub const HARMLESS_FIELDS: &[(&str, &str)] = &[
    (
        "_class_name",
        "metadata (checked to be UNet2DConditionModel when present)",
    ),
    ("_diffusers_version", "metadata"),
    ("_name_or_path", "metadata"),
    ("_use_default_values", "metadata"),
    (
        "sample_size",
        "the training latent size; inputs may have any size",
    ),
    (
        "dropout",
        "dropout is an identity at inference; this implementation never drops",
    ),
    (
        "upcast_attention",
        "attention always runs in float32 here, which is what upcasting asks for",
    ),
    (
        "resnet_skip_time_act",
        "diffusers passes it only to Simple*/Resnet* blocks, none of which are supported",
    ),
    (
        "resnet_out_scale_factor",
        "diffusers passes it only to Simple*/Resnet* blocks, none of which are supported",
    ),
    (
        "cross_attention_norm",
        "diffusers passes it only to Simple* blocks, none of which are supported",
    ),
    (
        "addition_embed_type_num_heads",
        "used only by addition_embed_type = \"text\", which is rejected",
    ),
];

fn d_true() -> bool {
    true
}
pub(super) fn d_4() -> usize {
    4
}
pub(super) fn d_1() -> usize {
    1
}
fn d_3() -> usize {
    3
}
pub(super) fn d_one_f() -> f64 {
    1.0
}
pub(super) fn d_eps() -> f64 {
    1e-5
}
pub(super) fn d_groups() -> Option<usize> {
    Some(32)
}
pub(super) fn d_silu() -> String {
    "silu".into()
}
fn d_default() -> String {
    "default".into()
}
fn d_positional() -> String {
    "positional".into()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_down() -> Vec<String> {
    vec![
        "CrossAttnDownBlock2D".into(),
        "CrossAttnDownBlock2D".into(),
        "CrossAttnDownBlock2D".into(),
        "DownBlock2D".into(),
    ]
}
fn d_up() -> Vec<String> {
    vec![
        "UpBlock2D".into(),
        "CrossAttnUpBlock2D".into(),
        "CrossAttnUpBlock2D".into(),
        "CrossAttnUpBlock2D".into(),
    ]
}
pub(super) fn d_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn d_layers() -> PerBlock {
    PerBlock::One(2)
}
fn d_cross() -> PerBlock {
    PerBlock::One(1280)
}
fn d_head_dim() -> PerBlock {
    PerBlock::One(8)
}
fn d_tlayers() -> Value {
    Value::from(1)
}
fn d_false_pb() -> BoolPerBlock {
    BoolPerBlock::One(false)
}
fn d_64() -> usize {
    64
}

/// The `config.json` of a diffusers `UNet2DConditionModel`. Defaults are diffusers' defaults, so a
/// config that omits a field means what it means to diffusers. Call [`UNet2DConditionConfig::validate`]
/// (the model constructor does) to reject anything this implementation does not compute.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UNet2DConditionConfig {
    /// Training latent size (int or `[h, w]`); informational.
    #[serde(default)]
    pub sample_size: Option<Value>,
    /// Latent channels in.
    #[serde(default = "d_4")]
    pub in_channels: usize,
    /// Channels out.
    #[serde(default = "d_4")]
    pub out_channels: usize,
    /// Map the input `x ↦ 2x − 1` first.
    #[serde(default)]
    pub center_input_sample: bool,
    /// `cos, sin` order of the sinusoidal timestep embedding (else `sin, cos`).
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the sinusoidal timestep embedding.
    #[serde(default)]
    pub freq_shift: f64,
    /// Down block types (`CrossAttnDownBlock2D`, `DownBlock2D`).
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    /// Mid block type (`UNetMidBlock2DCrossAttn`).
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    /// Up block types (`CrossAttnUpBlock2D`, `UpBlock2D`).
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    /// Cross-attention only transformer blocks (must be false).
    #[serde(default = "d_false_pb")]
    pub only_cross_attention: BoolPerBlock,
    /// Output channels of every down block.
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<usize>,
    /// ResNet layers per down block (up blocks have one more).
    #[serde(default = "d_layers")]
    pub layers_per_block: PerBlock,
    /// Padding of the downsampling convolutions (must be 1).
    #[serde(default = "d_1")]
    pub downsample_padding: usize,
    /// Output scale of the mid block's ResNets: `(x + h) / factor`.
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    /// Dropout probability (not applied: inference only).
    #[serde(default)]
    pub dropout: f64,
    /// Activation (`silu`/`swish`).
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// GroupNorm groups of ResNets, transformers and the output norm.
    #[serde(default = "d_groups")]
    pub norm_num_groups: Option<usize>,
    /// ε of the ResNet and output GroupNorms.
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    /// Width of the text embeddings attended to.
    #[serde(default = "d_cross")]
    pub cross_attention_dim: PerBlock,
    /// Transformer blocks per attention layer: an int, or one per down block.
    #[serde(default = "d_tlayers")]
    pub transformer_layers_per_block: Value,
    /// Asymmetric transformer depths of the up blocks (must be null).
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Value>,
    /// Text projection input width (must be null).
    #[serde(default)]
    pub encoder_hid_dim: Option<Value>,
    /// Text projection type (must be null).
    #[serde(default)]
    pub encoder_hid_dim_type: Option<Value>,
    /// Diffusers' naming quirk: for these models this is the NUMBER OF HEADS per block (the head
    /// width is `channels / heads`), because `num_attention_heads` defaults to it.
    #[serde(default = "d_head_dim")]
    pub attention_head_dim: PerBlock,
    /// Must be null: diffusers itself refuses a non-null value.
    #[serde(default)]
    pub num_attention_heads: Option<Value>,
    /// Must be false.
    #[serde(default)]
    pub dual_cross_attention: bool,
    /// Transformer `proj_in`/`proj_out` are linear layers (SD 2.x, SDXL) instead of 1×1 convolutions.
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Must be null.
    #[serde(default)]
    pub class_embed_type: Option<Value>,
    /// `null` or `"text_time"` (SDXL's micro-conditioning).
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Sinusoidal width per SDXL `time_ids` entry.
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// Must be null.
    #[serde(default)]
    pub num_class_embeds: Option<Value>,
    /// Upcast attention to float32 (always the case here).
    #[serde(default)]
    pub upcast_attention: bool,
    /// Must be `"default"`.
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    /// Not used by the supported block types.
    #[serde(default)]
    pub resnet_skip_time_act: bool,
    /// Not used by the supported block types.
    #[serde(default = "d_one_f")]
    pub resnet_out_scale_factor: f64,
    /// Must be `"positional"`.
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    /// Width of the time embedding (default `4 × block_out_channels[0]`).
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    /// Must be null.
    #[serde(default)]
    pub time_embedding_act_fn: Option<Value>,
    /// Must be null.
    #[serde(default)]
    pub timestep_post_act: Option<Value>,
    /// Must be null.
    #[serde(default)]
    pub time_cond_proj_dim: Option<Value>,
    /// Kernel of `conv_in` (odd).
    #[serde(default = "d_3")]
    pub conv_in_kernel: usize,
    /// Kernel of `conv_out` (odd).
    #[serde(default = "d_3")]
    pub conv_out_kernel: usize,
    /// Input width of SDXL's `add_embedding` (pooled text + time ids).
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// Must be `"default"`.
    #[serde(default = "d_default")]
    pub attention_type: String,
    /// Must be false.
    #[serde(default)]
    pub class_embeddings_concat: bool,
    /// Must be null or false.
    #[serde(default)]
    pub mid_block_only_cross_attention: Option<bool>,
    /// Not used by the supported block types.
    #[serde(default)]
    pub cross_attention_norm: Option<Value>,
    /// Used only by `addition_embed_type = "text"` (rejected).
    #[serde(default = "d_64")]
    pub addition_embed_type_num_heads: usize,
    /// Every other field of the file (metadata such as `_class_name`, or fields of newer diffusers).
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// The kind of a down or up block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// ResNets only (`DownBlock2D` / `UpBlock2D`).
    Plain,
    /// ResNets each followed by a transformer (`CrossAttnDownBlock2D` / `CrossAttnUpBlock2D`).
    CrossAttn,
}

/// The architecture a validated config describes, resolved per block.
#[derive(Debug, Clone, PartialEq)]
pub struct UNetArch {
    /// Down block output channels.
    pub channels: Vec<usize>,
    /// Down block kinds.
    pub down: Vec<BlockKind>,
    /// Up block kinds.
    pub up: Vec<BlockKind>,
    /// ResNets per down block.
    pub layers: Vec<usize>,
    /// Attention heads per down block (the mid block uses the last, up blocks the reverse).
    pub heads: Vec<usize>,
    /// Transformer blocks per attention layer, per down block.
    pub transformer_layers: Vec<usize>,
    /// Text embedding width.
    pub cross_attention_dim: usize,
    /// GroupNorm groups.
    pub groups: usize,
    /// Width of the time embedding.
    pub time_embed_dim: usize,
    /// SDXL: (addition_time_embed_dim, projection_class_embeddings_input_dim).
    pub text_time: Option<(usize, usize)>,
}

impl UNet2DConditionConfig {
    /// Parses a config from JSON text and validates it.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| Error::Config {
            path: "UNet config".into(),
            message: format!("invalid config: {e}"),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `path` (a `unet/config.json`) and validates it.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let config: Self = crate::load::read_config(path)?;
        config.resolve().map_err(|message| Error::Config {
            path: path.display().to_string(),
            message,
        })?;
        Ok(config)
    }

    /// Errors (naming the field and its value) unless every field is one this implementation computes.
    pub fn validate(&self) -> Result<()> {
        self.arch().map(|_| ())
    }

    /// The resolved architecture; errors as [`UNet2DConditionConfig::validate`].
    pub fn arch(&self) -> Result<UNetArch> {
        self.resolve().map_err(|message| Error::Config {
            path: "UNet config".into(),
            message,
        })
    }

    /// Number of upsampling layers (`2^n` is the size multiple that needs no size forwarding).
    pub fn num_upsamplers(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }

    fn resolve(&self) -> std::result::Result<UNetArch, String> {
        let unsupported = |field: &str, value: &dyn std::fmt::Display, supported: &str| {
            Err(format!(
                "`{field}` = {value} is not supported (supported: {supported})"
            ))
        };
        if let Some(name) = self.other.get("_class_name") {
            if name.as_str() != Some("UNet2DConditionModel") {
                return Err(format!(
                    "`_class_name` = {name}: this is not a UNet2DConditionModel config"
                ));
            }
        }
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("`block_out_channels` is empty".into());
        }
        if let Some(c) = self.block_out_channels.iter().find(|c| **c == 0) {
            return Err(format!("`block_out_channels` contains {c}"));
        }
        if self.down_block_types.len() != n {
            return Err(format!(
                "`down_block_types` has {} entries but `block_out_channels` has {n}",
                self.down_block_types.len()
            ));
        }
        if self.up_block_types.len() != n {
            return Err(format!(
                "`up_block_types` has {} entries but `down_block_types` has {n}",
                self.up_block_types.len()
            ));
        }
        let mut down = Vec::with_capacity(n);
        for t in &self.down_block_types {
            down.push(match t.as_str() {
                "CrossAttnDownBlock2D" => BlockKind::CrossAttn,
                "DownBlock2D" => BlockKind::Plain,
                other => {
                    return unsupported(
                        "down_block_types",
                        &format!("[.., \"{other}\", ..]"),
                        "CrossAttnDownBlock2D, DownBlock2D",
                    )
                }
            });
        }
        let mut up = Vec::with_capacity(n);
        for t in &self.up_block_types {
            up.push(match t.as_str() {
                "CrossAttnUpBlock2D" => BlockKind::CrossAttn,
                "UpBlock2D" => BlockKind::Plain,
                other => {
                    return unsupported(
                        "up_block_types",
                        &format!("[.., \"{other}\", ..]"),
                        "CrossAttnUpBlock2D, UpBlock2D",
                    )
                }
            });
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {}
            other => {
                return unsupported(
                    "mid_block_type",
                    &format!("{other:?}"),
                    "\"UNetMidBlock2DCrossAttn\"",
                )
            }
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err(format!(
                "`in_channels` = {} / `out_channels` = {} must be positive",
                self.in_channels, self.out_channels
            ));
        }
        match &self.only_cross_attention {
            BoolPerBlock::One(false) => {}
            BoolPerBlock::Each(v) if v.iter().all(|b| !b) => {}
            other => return unsupported("only_cross_attention", &format!("{other:?}"), "false"),
        }
        if self.mid_block_only_cross_attention == Some(true) {
            return unsupported("mid_block_only_cross_attention", &"true", "null, false");
        }
        let layers = self.layers_per_block.resolve("layers_per_block", n)?;
        if layers.contains(&0) {
            return Err(format!(
                "`layers_per_block` = {layers:?} must be at least 1"
            ));
        }
        if self.downsample_padding != 1 {
            return unsupported("downsample_padding", &self.downsample_padding, "1");
        }
        if !self.mid_block_scale_factor.is_finite() || self.mid_block_scale_factor == 0.0 {
            return Err(format!(
                "`mid_block_scale_factor` = {} must be finite and non-zero",
                self.mid_block_scale_factor
            ));
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return unsupported(
                "act_fn",
                &format!("\"{}\"", self.act_fn),
                "\"silu\", \"swish\"",
            );
        }
        let groups = match self.norm_num_groups {
            Some(g) if g > 0 => g,
            other => {
                return unsupported(
                    "norm_num_groups",
                    &format!("{other:?}"),
                    "a positive integer",
                )
            }
        };
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return Err(format!("`norm_eps` = {} must be positive", self.norm_eps));
        }
        let cross = self.cross_attention_dim.resolve("cross_attention_dim", n)?;
        let cross_attention_dim = cross[0];
        if cross.iter().any(|c| *c != cross_attention_dim) || cross_attention_dim == 0 {
            return unsupported(
                "cross_attention_dim",
                &format!("{cross:?}"),
                "one positive width for every block",
            );
        }
        let transformer_layers = match &self.transformer_layers_per_block {
            Value::Number(v) => match v.as_u64() {
                Some(v) if v > 0 => vec![v as usize; n],
                _ => {
                    return Err(format!(
                        "`transformer_layers_per_block` = {v} must be a positive integer"
                    ))
                }
            },
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_u64() {
                        Some(v) if v > 0 => out.push(v as usize),
                        _ => {
                            return unsupported(
                                "transformer_layers_per_block",
                                &self.transformer_layers_per_block,
                                "a positive integer or one positive integer per down block",
                            )
                        }
                    }
                }
                if out.len() != n {
                    return Err(format!(
                        "`transformer_layers_per_block` lists {} values but there are {n} down blocks",
                        out.len()
                    ));
                }
                out
            }
            other => {
                return unsupported(
                    "transformer_layers_per_block",
                    other,
                    "a positive integer or one positive integer per down block",
                )
            }
        };
        for (field, value) in [
            (
                "reverse_transformer_layers_per_block",
                &self.reverse_transformer_layers_per_block,
            ),
            ("encoder_hid_dim", &self.encoder_hid_dim),
            ("encoder_hid_dim_type", &self.encoder_hid_dim_type),
            ("class_embed_type", &self.class_embed_type),
            ("num_class_embeds", &self.num_class_embeds),
            ("time_embedding_act_fn", &self.time_embedding_act_fn),
            ("timestep_post_act", &self.timestep_post_act),
            ("time_cond_proj_dim", &self.time_cond_proj_dim),
        ] {
            if let Some(v) = value {
                if !v.is_null() {
                    return unsupported(field, v, "null");
                }
            }
        }
        if let Some(v) = &self.num_attention_heads {
            if !v.is_null() {
                return Err(format!(
                    "`num_attention_heads` = {v}: diffusers refuses this field for UNet2DConditionModel \
                     (the head count is given by `attention_head_dim`)"
                ));
            }
        }
        let heads = self.attention_head_dim.resolve("attention_head_dim", n)?;
        for (i, (h, c)) in heads.iter().zip(&self.block_out_channels).enumerate() {
            if *h == 0 || c % h != 0 {
                return Err(format!(
                    "`attention_head_dim` = {heads:?} (the number of heads, diffusers' naming) must divide \
                     block_out_channels[{i}] = {c}"
                ));
            }
        }
        if self.dual_cross_attention {
            return unsupported("dual_cross_attention", &"true", "false");
        }
        if self.class_embeddings_concat {
            return unsupported("class_embeddings_concat", &"true", "false");
        }
        if self.resnet_time_scale_shift != "default" {
            return unsupported(
                "resnet_time_scale_shift",
                &format!("\"{}\"", self.resnet_time_scale_shift),
                "\"default\"",
            );
        }
        if self.time_embedding_type != "positional" {
            return unsupported(
                "time_embedding_type",
                &format!("\"{}\"", self.time_embedding_type),
                "\"positional\"",
            );
        }
        if self.attention_type != "default" {
            return unsupported(
                "attention_type",
                &format!("\"{}\"", self.attention_type),
                "\"default\"",
            );
        }
        for (field, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if k % 2 == 0 {
                return unsupported(field, &k, "an odd kernel size");
            }
        }
        let text_time = match self.addition_embed_type.as_deref() {
            None => None,
            Some("text_time") => {
                let (Some(t), Some(p)) = (
                    self.addition_time_embed_dim,
                    self.projection_class_embeddings_input_dim,
                ) else {
                    return Err(
                        "`addition_embed_type` = \"text_time\" needs `addition_time_embed_dim` and \
                         `projection_class_embeddings_input_dim`"
                            .into(),
                    );
                };
                if t == 0 || p == 0 {
                    return Err(format!(
                        "`addition_time_embed_dim` = {t} and `projection_class_embeddings_input_dim` = {p} \
                         must be positive"
                    ));
                }
                Some((t, p))
            }
            Some(other) => {
                return unsupported(
                    "addition_embed_type",
                    &format!("\"{other}\""),
                    "null, \"text_time\"",
                )
            }
        };
        for (key, value) in &self.other {
            let harmless = key.starts_with('_') || HARMLESS_FIELDS.iter().any(|(k, _)| k == key);
            if !(harmless || value.is_null() || value == &Value::Bool(false)) {
                return Err(format!(
                    "`{key}` = {value} is not a field this implementation knows; it may change the model"
                ));
            }
        }
        let time_embed_dim = self
            .time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4);
        Ok(UNetArch {
            channels: self.block_out_channels.clone(),
            down,
            up,
            layers,
            heads,
            transformer_layers,
            cross_attention_dim,
            groups,
            time_embed_dim,
            text_time,
        })
    }
}

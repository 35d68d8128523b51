//! `CLIPTextConfig`: the `config.json` of a `text_encoder/` (or `text_encoder_2/`) folder, as
//! transformers writes it, with validation of everything the implementation cannot honour.

use crate::error::Result;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The activation of the CLIP MLP (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// OpenAI CLIP's `quick_gelu`, x·σ(1.702x) (SD 1.x, SDXL's first text encoder).
    QuickGelu,
    /// Exact (erf) GELU (OpenCLIP models: SD 2.x, SDXL's second text encoder).
    Gelu,
}

/// How the pooled output is picked from the final hidden states (transformers 5.24's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipPooling {
    /// `eos_token_id == 2` (every SD checkpoint's config, written before transformers PR #24773):
    /// the position of the largest input id in each row (the first one if it repeats).
    LegacyArgmax,
    /// Any other `eos_token_id`: the first position whose id equals it (position 0 when none does).
    FirstEos(i64),
}

/// Fields of transformers' generic `PretrainedConfig` (and CLIP's own inert ones) that do not change
/// the text encoder's output at inference: accepted and ignored.
const INERT_FIELDS: &[&str] = &[
    "architectures",
    "attention_dropout",
    "dropout",
    "bos_token_id",
    "pad_token_id",
    "sep_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "dtype",
    "torch_dtype",
    "initializer_factor",
    "initializer_range",
    "model_type",
    "transformers_version",
    "add_cross_attention",
    "bad_words_ids",
    "begin_suppress_tokens",
    "chunk_size_feed_forward",
    "cross_attention_hidden_size",
    "diversity_penalty",
    "do_sample",
    "early_stopping",
    "encoder_no_repeat_ngram_size",
    "exponential_decay_length_penalty",
    "finetuning_task",
    "gradient_checkpointing",
    "id2label",
    "is_decoder",
    "is_encoder_decoder",
    "label2id",
    "length_penalty",
    "max_length",
    "min_length",
    "no_repeat_ngram_size",
    "num_beam_groups",
    "num_beams",
    "num_return_sequences",
    "output_attentions",
    "output_hidden_states",
    "output_scores",
    "prefix",
    "problem_type",
    "remove_invalid_values",
    "repetition_penalty",
    "return_dict",
    "return_dict_in_generate",
    "suppress_tokens",
    "task_specific_params",
    "temperature",
    "tf_legacy_loss",
    "tie_encoder_decoder",
    "tie_word_embeddings",
    "tokenizer_class",
    "top_k",
    "top_p",
    "torchscript",
    "typical_p",
    "use_bfloat16",
    "use_cache",
];

fn d_vocab() -> usize {
    49408
}
fn d_hidden() -> usize {
    512
}
fn d_intermediate() -> usize {
    2048
}
fn d_projection() -> Option<usize> {
    Some(512)
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    8
}
fn d_positions() -> usize {
    77
}
fn d_act() -> String {
    "quick_gelu".into()
}
fn d_eps() -> f64 {
    1e-5
}
fn d_eos() -> Value {
    Value::from(49407)
}

/// transformers' `CLIPTextConfig` (defaults as in transformers 5.24).
#[derive(Debug, Clone, Deserialize)]
pub struct CLIPTextConfig {
    /// Number of token ids.
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    /// Width of the transformer.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Width of the MLP.
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    /// Output width of `text_projection` (only [`super::text_model::CLIPTextModelWithProjection`]).
    #[serde(default = "d_projection")]
    pub projection_dim: Option<usize>,
    /// Number of encoder layers.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Longest input (rows of `position_embedding`).
    #[serde(default = "d_positions")]
    pub max_position_embeddings: usize,
    /// `quick_gelu` or `gelu`.
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// ε of every LayerNorm.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// The end-of-text id, which selects the pooling rule (see [`ClipPooling`]).
    #[serde(default = "d_eos")]
    pub eos_token_id: Value,
    /// Every other field: checked by [`CLIPTextConfig::validate`].
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Default for CLIPTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: d_vocab(),
            hidden_size: d_hidden(),
            intermediate_size: d_intermediate(),
            projection_dim: d_projection(),
            num_hidden_layers: d_layers(),
            num_attention_heads: d_heads(),
            max_position_embeddings: d_positions(),
            hidden_act: d_act(),
            layer_norm_eps: d_eps(),
            eos_token_id: d_eos(),
            extra: BTreeMap::new(),
        }
    }
}

impl CLIPTextConfig {
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
        self.activation()?;
        self.pooling()?;
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return Err(format!("`{name}` must be positive"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "`hidden_size` {} is not divisible by `num_attention_heads` {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!(
                "`layer_norm_eps` must be a positive number, got {}",
                self.layer_norm_eps
            ));
        }
        if self.projection_dim == Some(0) {
            return Err("`projection_dim` must be positive".into());
        }
        for (key, value) in &self.extra {
            if key.starts_with('_') || INERT_FIELDS.contains(&key.as_str()) {
                continue;
            }
            match key.as_str() {
                "pruned_heads" => {
                    let empty = value.is_null() || value.as_object().is_some_and(|m| m.is_empty());
                    if !empty {
                        return Err("`pruned_heads` is not supported (the layers would have fewer heads than `num_attention_heads`)".into());
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown config field `{key}` = {value}; this implementation does not know whether it changes the model's output, so it refuses the config"
                    ))
                }
            }
        }
        Ok(())
    }

    /// The MLP activation named by `hidden_act`.
    pub fn activation(&self) -> std::result::Result<ClipActivation, String> {
        match self.hidden_act.as_str() {
            "quick_gelu" => Ok(ClipActivation::QuickGelu),
            "gelu" => Ok(ClipActivation::Gelu),
            other => Err(format!(
                "`hidden_act` = \"{other}\" is not supported (expected \"quick_gelu\" or \"gelu\")"
            )),
        }
    }

    /// The pooling rule selected by `eos_token_id` (exactly transformers 5.24's).
    pub fn pooling(&self) -> std::result::Result<ClipPooling, String> {
        match self.eos_token_id.as_i64() {
            Some(2) => Ok(ClipPooling::LegacyArgmax),
            Some(id) => Ok(ClipPooling::FirstEos(id)),
            None => Err(format!(
                "`eos_token_id` = {} is not supported: the pooled output needs a single integer id",
                self.eos_token_id
            )),
        }
    }

    /// Width of each attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }
}

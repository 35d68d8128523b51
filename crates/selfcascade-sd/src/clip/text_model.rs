//! The CLIP text encoder (transformers' `CLIPTextModel` and `CLIPTextModelWithProjection`), with
//! transformers' parameter names.
//!
//! Input ids are given on the host as rows of integers (`&[Vec<u32>]`, `&[[i64; 77]]`, …): every row
//! is one prompt, all rows have the same length. The pooling position is computed on the host from
//! them, exactly as transformers 5.24 does it (see [`ClipPooling`]).

use super::config::{CLIPTextConfig, ClipActivation, ClipPooling};
use crate::error::{Error, Result};
use crate::load::{open_component, Vb};
use crate::nn::{kernels, Embedding, LayerNorm, Linear};
use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use std::path::Path;

/// What the text encoder returns.
#[derive(Debug, Clone)]
pub struct ClipTextOutput<B: Backend> {
    /// `[B, N, hidden]`: the last layer's output after `final_layer_norm`.
    pub last_hidden_state: Tensor<B, 3>,
    /// `[B, N, hidden]`: transformers' `hidden_states[-2]`, the output of the second-to-last layer
    /// (no final layer norm), which SDXL and "clip skip" use.
    pub penultimate_hidden_state: Tensor<B, 3>,
    /// `[B, hidden]` (`pooler_output`) for [`CLIPTextModel`], `[B, projection_dim]` (`text_embeds`)
    /// for [`CLIPTextModelWithProjection`].
    pub pooled: Tensor<B, 2>,
}

/// Token and position embeddings (`text_model.embeddings`).
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings<B: Backend> {
    /// `token_embedding` `[vocab, hidden]`.
    pub token_embedding: Embedding<B>,
    /// `position_embedding` `[max_positions, hidden]`.
    pub position_embedding: Embedding<B>,
}

impl<B: Backend> ClipTextEmbeddings<B> {
    fn new(vb: &Vb<B>, cfg: &CLIPTextConfig) -> Result<Self> {
        // A non-persistent buffer in transformers, but present in many checkpoints.
        vb.ignore("position_ids");
        Ok(Self {
            token_embedding: Embedding::new(
                &vb.pp("token_embedding"),
                cfg.vocab_size,
                cfg.hidden_size,
            )?,
            position_embedding: Embedding::new(
                &vb.pp("position_embedding"),
                cfg.max_position_embeddings,
                cfg.hidden_size,
            )?,
        })
    }

    fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, n] = ids.dims();
        let device = ids.device();
        let tokens = self.token_embedding.forward(ids);
        let positions = Tensor::<B, 1, Int>::arange(0..n as i64, &device)
            .reshape([1, n])
            .expand([b, n]);
        tokens.add(self.position_embedding.forward(positions))
    }
}

/// Multi-head causal self-attention (`self_attn`).
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    /// `q_proj`.
    pub q_proj: Linear<B>,
    /// `k_proj`.
    pub k_proj: Linear<B>,
    /// `v_proj`.
    pub v_proj: Linear<B>,
    /// `out_proj`.
    pub out_proj: Linear<B>,
    /// Number of heads.
    pub num_heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    fn new(vb: &Vb<B>, cfg: &CLIPTextConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        Ok(Self {
            q_proj: Linear::new(&vb.pp("q_proj"), d, d, true)?,
            k_proj: Linear::new(&vb.pp("k_proj"), d, d, true)?,
            v_proj: Linear::new(&vb.pp("v_proj"), d, d, true)?,
            out_proj: Linear::new(&vb.pp("out_proj"), d, d, true)?,
            num_heads: cfg.num_attention_heads,
        })
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let h = self.num_heads;
        let hd = d / h;
        let split = |t: Tensor<B, 3>| t.reshape([b, n, h, hd]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let scale = (hd as f64).powf(-0.5);
        let o = kernels::attention(q, k, v, scale, true);
        self.out_proj.forward(o.swap_dims(1, 2).reshape([b, n, d]))
    }
}

/// The feed-forward block (`mlp`).
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    /// `fc1`.
    pub fc1: Linear<B>,
    /// `fc2`.
    pub fc2: Linear<B>,
    /// `quick_gelu` when true, exact GELU otherwise.
    pub quick_gelu: bool,
}

impl<B: Backend> ClipMlp<B> {
    fn new(vb: &Vb<B>, cfg: &CLIPTextConfig, act: ClipActivation) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(&vb.pp("fc1"), cfg.hidden_size, cfg.intermediate_size, true)?,
            fc2: Linear::new(&vb.pp("fc2"), cfg.intermediate_size, cfg.hidden_size, true)?,
            quick_gelu: act == ClipActivation::QuickGelu,
        })
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.fc1.forward(x);
        let h = if self.quick_gelu {
            kernels::quick_gelu(h)
        } else {
            kernels::gelu(h)
        };
        self.fc2.forward(h)
    }
}

/// One pre-norm transformer layer (`encoder.layers[i]`).
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    /// `self_attn`.
    pub self_attn: ClipAttention<B>,
    /// `layer_norm1`.
    pub layer_norm1: LayerNorm<B>,
    /// `mlp`.
    pub mlp: ClipMlp<B>,
    /// `layer_norm2`.
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    fn new(vb: &Vb<B>, cfg: &CLIPTextConfig, act: ClipActivation) -> Result<Self> {
        Ok(Self {
            self_attn: ClipAttention::new(&vb.pp("self_attn"), cfg)?,
            layer_norm1: LayerNorm::new(
                &vb.pp("layer_norm1"),
                cfg.hidden_size,
                cfg.layer_norm_eps,
            )?,
            mlp: ClipMlp::new(&vb.pp("mlp"), cfg, act)?,
            layer_norm2: LayerNorm::new(
                &vb.pp("layer_norm2"),
                cfg.hidden_size,
                cfg.layer_norm_eps,
            )?,
        })
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = x
            .clone()
            .add(self.self_attn.forward(self.layer_norm1.forward(x)));
        h.clone().add(self.mlp.forward(self.layer_norm2.forward(h)))
    }
}

/// The stack of layers (`encoder`).
#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    /// `layers`.
    pub layers: Vec<ClipEncoderLayer<B>>,
}

/// The text transformer shared by both models: transformers' `CLIPTextModel` body, stored under
/// `text_model.` in checkpoints.
#[derive(Module, Debug)]
pub struct ClipTextTransformer<B: Backend> {
    /// `embeddings`.
    pub embeddings: ClipTextEmbeddings<B>,
    /// `encoder`.
    pub encoder: ClipEncoder<B>,
    /// `final_layer_norm`.
    pub final_layer_norm: LayerNorm<B>,
    /// Pooling rule: true for the legacy argmax rule (`eos_token_id == 2`).
    pub legacy_pooling: bool,
    /// `eos_token_id` (used when `legacy_pooling` is false).
    pub eos_token_id: i64,
}

impl<B: Backend> ClipTextTransformer<B> {
    /// Builds the transformer under `vb` (the folder that holds `embeddings`, `encoder`, …).
    pub fn new(vb: &Vb<B>, cfg: &CLIPTextConfig) -> Result<Self> {
        let bad = |message: String| Error::Config {
            path: "CLIPTextConfig".into(),
            message,
        };
        cfg.validate().map_err(bad)?;
        if cfg.num_hidden_layers == 0 {
            // transformers' hidden_states would be (embeddings,): [-2] does not exist.
            return Err(bad("`num_hidden_layers` must be at least 1".into()));
        }
        let act = cfg.activation().map_err(bad)?;
        let pooling = cfg.pooling().map_err(bad)?;
        let enc = vb.pp("encoder").pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::new(&enc.pp(i), cfg, act))
            .collect::<Result<Vec<_>>>()?;
        let (legacy_pooling, eos_token_id) = match pooling {
            ClipPooling::LegacyArgmax => (true, 2),
            ClipPooling::FirstEos(id) => (false, id),
        };
        Ok(Self {
            embeddings: ClipTextEmbeddings::new(&vb.pp("embeddings"), cfg)?,
            encoder: ClipEncoder { layers },
            final_layer_norm: LayerNorm::new(
                &vb.pp("final_layer_norm"),
                cfg.hidden_size,
                cfg.layer_norm_eps,
            )?,
            legacy_pooling,
            eos_token_id,
        })
    }

    /// The pooling rule in use.
    pub fn pooling(&self) -> ClipPooling {
        if self.legacy_pooling {
            ClipPooling::LegacyArgmax
        } else {
            ClipPooling::FirstEos(self.eos_token_id)
        }
    }

    fn vocab_size(&self) -> usize {
        self.embeddings.token_embedding.weight.dims()[0]
    }

    fn max_positions(&self) -> usize {
        self.embeddings.position_embedding.weight.dims()[0]
    }

    /// Runs the transformer; `pooled` is the `pooler_output` (before any projection).
    pub fn forward<R, T>(&self, input_ids: &[R]) -> Result<ClipTextOutput<B>>
    where
        R: AsRef<[T]>,
        T: Copy + Into<i64>,
    {
        let (ids, b, n) = check_ids(input_ids, self.vocab_size(), self.max_positions())?;
        let positions: Vec<usize> = ids
            .chunks(n)
            .map(|row| pool_position(row, self.pooling()))
            .collect();
        let device = self.embeddings.token_embedding.weight.device();
        let ids_t = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [b, n]), &device);
        let mut h = self.embeddings.forward(ids_t);
        let layers = &self.encoder.layers;
        let mut penultimate = h.clone();
        for (i, layer) in layers.iter().enumerate() {
            if i + 1 == layers.len() {
                penultimate = h.clone();
            }
            h = layer.forward(h);
        }
        let last = self.final_layer_norm.forward(h);
        let d = last.dims()[2];
        let rows: Vec<i64> = positions
            .iter()
            .enumerate()
            .map(|(r, &p)| (r * n + p) as i64)
            .collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [b]), &device);
        let pooled = last.clone().reshape([b * n, d]).select(0, index);
        Ok(ClipTextOutput {
            last_hidden_state: last,
            penultimate_hidden_state: penultimate,
            pooled,
        })
    }
}

/// Flattens and checks input ids: rectangular, non-empty, within the vocabulary and the position table.
fn check_ids<R, T>(
    rows: &[R],
    vocab: usize,
    max_positions: usize,
) -> Result<(Vec<i64>, usize, usize)>
where
    R: AsRef<[T]>,
    T: Copy + Into<i64>,
{
    let b = rows.len();
    let Some(first) = rows.first() else {
        return Err(Error::Input("no input ids (empty batch)".into()));
    };
    let n = first.as_ref().len();
    if n == 0 {
        return Err(Error::Input("input ids: empty sequence".into()));
    }
    if n > max_positions {
        return Err(Error::Input(format!(
            "input ids: sequence length {n} exceeds max_position_embeddings {max_positions}"
        )));
    }
    let mut ids = Vec::with_capacity(b * n);
    for (r, row) in rows.iter().enumerate() {
        let row = row.as_ref();
        if row.len() != n {
            return Err(Error::Input(format!(
                "input ids: row {r} has {} ids, row 0 has {n} (pad every row to the same length)",
                row.len()
            )));
        }
        for (c, &id) in row.iter().enumerate() {
            let id: i64 = id.into();
            if id < 0 || id as u64 >= vocab as u64 {
                return Err(Error::Input(format!(
                    "input ids: id {id} at row {r}, position {c} is outside the vocabulary (0..{vocab})"
                )));
            }
            ids.push(id);
        }
    }
    Ok((ids, b, n))
}

/// The pooled position of one row (transformers 5.24: `argmax` returns the first maximal index).
fn pool_position(row: &[i64], pooling: ClipPooling) -> usize {
    match pooling {
        ClipPooling::LegacyArgmax => {
            let mut best = 0;
            for (i, &id) in row.iter().enumerate() {
                if id > row[best] {
                    best = i;
                }
            }
            best
        }
        ClipPooling::FirstEos(eos) => row.iter().position(|&id| id == eos).unwrap_or(0),
    }
}

/// Chooses the root of a text model's names: real checkpoints (and transformers 4) store the body
/// under `text_model.`; transformers 5 saves a bare `CLIPTextModel` without the prefix.
fn text_model_vb<'a, B: Backend>(vb: &Vb<'a, B>) -> Vb<'a, B> {
    if vb.contains("text_model.embeddings.token_embedding.weight")
        || !vb.contains("embeddings.token_embedding.weight")
    {
        vb.pp("text_model")
    } else {
        vb.clone()
    }
}

/// transformers' `CLIPTextModel`: the text transformer with `pooler_output`.
#[derive(Module, Debug)]
pub struct CLIPTextModel<B: Backend> {
    /// `text_model`.
    pub text_model: ClipTextTransformer<B>,
}

impl<B: Backend> CLIPTextModel<B> {
    /// Builds the model under `vb` (checkpoint root). Accepts names with or without the
    /// `text_model.` prefix (transformers 5 writes them without).
    pub fn new(vb: &Vb<B>, cfg: &CLIPTextConfig) -> Result<Self> {
        Ok(Self {
            text_model: ClipTextTransformer::new(&text_model_vb(vb), cfg)?,
        })
    }

    /// Loads `dir/config.json` and the weights in `dir` (`variant` e.g. `Some("fp16")`), strictly:
    /// missing, mis-shaped and unexpected tensors are errors.
    pub fn load(dir: &Path, variant: Option<&str>, device: &B::Device) -> Result<Self> {
        let cfg = CLIPTextConfig::from_file(&dir.join("config.json"))?;
        let weights = open_component(dir, variant)?;
        let model = Self::new(&weights.root::<B>(device), &cfg)?;
        weights.finish()?;
        Ok(model)
    }

    /// Encodes `input_ids`: host integers (`u32`, `i64`, …), one row per prompt, all rows of equal
    /// length ≤ `max_position_embeddings`, every id < `vocab_size` (else [`Error::Input`]).
    /// `pooled` is `pooler_output` `[B, hidden]`.
    pub fn forward<R, T>(&self, input_ids: &[R]) -> Result<ClipTextOutput<B>>
    where
        R: AsRef<[T]>,
        T: Copy + Into<i64>,
    {
        self.text_model.forward(input_ids)
    }
}

/// transformers' `CLIPTextModelWithProjection` (SDXL's `text_encoder_2`): `pooled` is `text_embeds`,
/// the pooled output through `text_projection` (no bias).
#[derive(Module, Debug)]
pub struct CLIPTextModelWithProjection<B: Backend> {
    /// `text_model`.
    pub text_model: ClipTextTransformer<B>,
    /// `text_projection` `[hidden → projection_dim]`, no bias.
    pub text_projection: Linear<B>,
}

impl<B: Backend> CLIPTextModelWithProjection<B> {
    /// Builds the model under `vb` (checkpoint root).
    pub fn new(vb: &Vb<B>, cfg: &CLIPTextConfig) -> Result<Self> {
        let Some(projection_dim) = cfg.projection_dim else {
            return Err(Error::Config {
                path: "CLIPTextConfig".into(),
                message: "`projection_dim` is null; CLIPTextModelWithProjection needs it".into(),
            });
        };
        Ok(Self {
            text_model: ClipTextTransformer::new(&text_model_vb(vb), cfg)?,
            text_projection: Linear::new(
                &vb.pp("text_projection"),
                cfg.hidden_size,
                projection_dim,
                false,
            )?,
        })
    }

    /// Loads `dir/config.json` and the weights in `dir`, strictly.
    pub fn load(dir: &Path, variant: Option<&str>, device: &B::Device) -> Result<Self> {
        let cfg = CLIPTextConfig::from_file(&dir.join("config.json"))?;
        let weights = open_component(dir, variant)?;
        let model = Self::new(&weights.root::<B>(device), &cfg)?;
        weights.finish()?;
        Ok(model)
    }

    /// Encodes `input_ids`; `pooled` is `text_embeds` `[B, projection_dim]`.
    pub fn forward<R, T>(&self, input_ids: &[R]) -> Result<ClipTextOutput<B>>
    where
        R: AsRef<[T]>,
        T: Copy + Into<i64>,
    {
        let out = self.text_model.forward(input_ids)?;
        Ok(ClipTextOutput {
            pooled: self.text_projection.forward(out.pooled),
            ..out
        })
    }
}

//! The shapes model: a `selfcascade-sd` UNet conditioned on a learned embedding of the scene label.

use crate::config::ShapesModelConfig;
use crate::error::{Error, Result};
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use selfcascade_sd::load::{Init, Vb, Weights};
use selfcascade_sd::unet::{UNet2DConditionModel, UNetHooks};
use selfcascade_shapes::{BackgroundColor, ObjectColor, SceneLabel, Shape};

/// The caption condition as a short sequence of learned tokens, one per caption attribute.
///
/// Design choice: a caption of the shapes world is exactly a [`SceneLabel`] (shape × object colour ×
/// background colour, 45 classes; the filler words carry no information). Rather than one opaque vector
/// per class, the context is **factorised** into [`LabelEmbedding::TOKENS`] = 3 tokens — shape, object
/// colour, background colour — each looked up in its own slot of one table, so the model can share what
/// it learns about "red" across shapes and backgrounds. Each slot also has a *null* token; the
/// unconditional input (`None`, classifier-free guidance and the 10% label dropout of training) is all
/// three null tokens, i.e. the 46th class. The table is `[VOCAB, cross_attention_dim]`, stored as
/// `label_embedding.weight`, initialised N(0, 1) like PyTorch's `nn.Embedding`.
#[derive(Module, Debug)]
pub struct LabelEmbedding<B: Backend> {
    /// `[VOCAB, dim]`: shapes, then object colours, then backgrounds, then the three null tokens.
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> LabelEmbedding<B> {
    /// Context length M (tokens per label).
    pub const TOKENS: usize = 3;
    /// Rows of the table: every attribute value plus one null token per slot.
    pub const VOCAB: usize = Shape::COUNT + ObjectColor::COUNT + BackgroundColor::COUNT + 3;

    /// Builds (or loads) the table `weight` of width `dim` under `vb`.
    pub fn new(vb: &Vb<B>, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.param("weight", [Self::VOCAB, dim], Init::Normal(1.0))?,
        })
    }

    /// Width of the context tokens.
    pub fn dim(&self) -> usize {
        self.weight.val().dims()[1]
    }

    /// Table rows of the three tokens of `label` (`None`: the null tokens).
    pub fn token_ids(label: Option<SceneLabel>) -> [usize; 3] {
        let s = Shape::COUNT;
        let c = s + ObjectColor::COUNT;
        let b = c + BackgroundColor::COUNT;
        match label {
            Some(l) => [
                l.shape.index(),
                s + l.color.index(),
                c + l.background.index(),
            ],
            None => [b, b + 1, b + 2],
        }
    }

    /// The context `[labels.len(), TOKENS, dim]` for a batch of labels (`None` = unconditional).
    pub fn forward(&self, labels: &[Option<SceneLabel>]) -> Tensor<B, 3> {
        let weight = self.weight.val();
        let device = weight.device();
        let dim = weight.dims()[1];
        let ids: Vec<i64> = labels
            .iter()
            .flat_map(|l| Self::token_ids(*l))
            .map(|i| i as i64)
            .collect();
        let n = ids.len();
        let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [n]), &device);
        weight
            .select(0, ids)
            .reshape([labels.len(), Self::TOKENS, dim])
    }
}

/// The class-conditional pixel-space diffusion model of the shapes world: ε-prediction on RGB images in
/// `[-1, 1]`. Parameter names are diffusers' UNet names under `unet.` and `label_embedding.weight`.
#[derive(Module, Debug)]
pub struct ShapesModel<B: Backend> {
    /// The denoising UNet (3 channels in and out).
    pub unet: UNet2DConditionModel<B>,
    /// The label context.
    pub label_embedding: LabelEmbedding<B>,
    #[module(skip)]
    config: ShapesModelConfig,
}

impl<B: Backend> ShapesModel<B> {
    /// Builds the model of `config` with parameters from `vb` (loaded, or seeded random).
    pub fn new(vb: &Vb<B>, config: &ShapesModelConfig) -> Result<Self> {
        let unet = UNet2DConditionModel::new(&vb.pp("unet"), &config.unet_config()?)?;
        let label_embedding =
            LabelEmbedding::new(&vb.pp("label_embedding"), config.cross_attention_dim)?;
        Ok(Self {
            unet,
            label_embedding,
            config: config.clone(),
        })
    }

    /// A freshly initialised model (PyTorch-style initialisation, seeded by `seed`).
    pub fn random(config: &ShapesModelConfig, seed: u64, device: &B::Device) -> Result<Self> {
        let weights = Weights::random(seed);
        Self::new(&weights.root(device), config)
    }

    /// The architecture.
    pub fn config(&self) -> &ShapesModelConfig {
        &self.config
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        self.num_params()
    }

    /// Predicts the noise ε for noisy images `x` `[B, 3, H, W]` at `timesteps` (one, or one per row)
    /// with one label per row (`None` = unconditional). H and W must be multiples of the UNet's
    /// down-sampling factor for the skip connections to line up exactly.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        timesteps: &[f64],
        labels: &[Option<SceneLabel>],
    ) -> Result<Tensor<B, 4>> {
        let b = x.dims()[0];
        if labels.len() != b {
            return Err(Error::Config(format!(
                "{} labels for a batch of {b}",
                labels.len()
            )));
        }
        let context = self.label_embedding.forward(labels);
        Ok(self
            .unet
            .forward(x, timesteps, context, None, &UNetHooks::default())?)
    }
}

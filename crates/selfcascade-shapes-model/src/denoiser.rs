//! The shapes model behind `selfcascade_core`'s [`Denoiser`] interface, with classifier-free guidance.

use crate::model::ShapesModel;
use burn::tensor::{backend::Backend, Tensor};
use selfcascade_core::scheduler::PredictionType;
use selfcascade_core::{ClassifierFreeGuidance, Denoiser, Error as CoreError, StepContext};
use selfcascade_shapes::SceneLabel;

/// A [`ShapesModel`] conditioned on one label per batch row (`None` = unconditional). The images are
/// the "latents" (pixel space: latent scale 1, 3 channels).
#[derive(Debug, Clone)]
pub struct ShapesDenoiser<'a, B: Backend> {
    /// The model.
    pub model: &'a ShapesModel<B>,
    /// One label per batch row.
    pub labels: Vec<Option<SceneLabel>>,
}

impl<'a, B: Backend> ShapesDenoiser<'a, B> {
    /// A denoiser for a batch with `labels`.
    pub fn new(model: &'a ShapesModel<B>, labels: Vec<Option<SceneLabel>>) -> Self {
        Self { model, labels }
    }

    /// Classifier-free guidance at scale `scale` for `labels`: the inner denoiser sees the
    /// unconditional rows first, then the conditional ones (the order [`ClassifierFreeGuidance`] expects).
    pub fn guided(
        model: &'a ShapesModel<B>,
        labels: &[SceneLabel],
        scale: f64,
    ) -> ClassifierFreeGuidance<Self> {
        let mut rows: Vec<Option<SceneLabel>> = vec![None; labels.len()];
        rows.extend(labels.iter().map(|l| Some(*l)));
        ClassifierFreeGuidance::new(Self::new(model, rows), scale)
    }
}

impl<B: Backend> Denoiser<B, 4> for ShapesDenoiser<'_, B> {
    fn prediction_type(&self) -> PredictionType {
        PredictionType::Epsilon
    }

    fn predict(
        &self,
        latents: Tensor<B, 4>,
        ctx: &StepContext<B, 4>,
    ) -> selfcascade_core::Result<Tensor<B, 4>> {
        self.model
            .forward(latents, &[ctx.timestep], &self.labels)
            .map_err(|e| CoreError::Model(e.to_string()))
    }
}

//! The `Denoiser` trait: a model that predicts noise (or x₀, or v) from noisy latents.

use crate::error::Result;
use crate::scheduler::PredictionType;
use burn::tensor::{backend::Backend, Tensor};

/// Where a denoiser call sits in a self-cascade run. Conditioning that does not change between calls
/// (text embeddings) lives inside the denoiser; what changes per call is here.
#[derive(Debug, Clone)]
pub struct StepContext<B: Backend, const D: usize = 4> {
    /// Stage index (0 = base size).
    pub stage: usize,
    /// Step index inside the stage (0 = first step run in this stage).
    pub step: usize,
    /// Number of steps this stage runs.
    pub steps_in_stage: usize,
    /// The diffusion timestep (float: some schedules use fractional timesteps).
    pub timestep: f64,
    /// The stage's image size in pixels, (width, height).
    pub image_size: (usize, usize),
    /// The previous stage's clean latent (z₀^{r−1}), at its own size, for stages r ≥ 1. Its batch equals
    /// the latents' batch (guidance adaptors repeat it explicitly).
    pub pivot: Option<Tensor<B, D>>,
}

/// A model that maps (noisy latents, step context) to its prediction.
pub trait Denoiser<B: Backend, const D: usize = 4> {
    /// What [`Denoiser::predict`] returns.
    fn prediction_type(&self) -> PredictionType;
    /// Predicts for `latents` (already scaled by the scheduler's `scale_model_input`).
    fn predict(&self, latents: Tensor<B, D>, ctx: &StepContext<B, D>) -> Result<Tensor<B, D>>;
}

impl<B: Backend, const D: usize, T: Denoiser<B, D> + ?Sized> Denoiser<B, D> for &T {
    fn prediction_type(&self) -> PredictionType {
        (**self).prediction_type()
    }
    fn predict(&self, latents: Tensor<B, D>, ctx: &StepContext<B, D>) -> Result<Tensor<B, D>> {
        (**self).predict(latents, ctx)
    }
}

/// The exact ε-prediction for data distributed as N(μ, σ²·I): a denoiser whose ideal sampler output is
/// known, used to test samplers (deterministic DDIM must land on mean μ and standard deviation σ).
#[derive(Debug, Clone)]
pub struct GaussianDenoiser {
    /// Mean μ of the data.
    pub mean: f64,
    /// Standard deviation σ of the data.
    pub std: f64,
    /// ᾱ of every training timestep (to evaluate at integer or fractional timesteps).
    alphas_cumprod: Vec<f32>,
}

impl GaussianDenoiser {
    /// A denoiser for N(mean, std²) under the schedule `alphas_cumprod` (which must not be empty).
    pub fn new(mean: f64, std: f64, alphas_cumprod: &[f32]) -> Self {
        Self {
            mean,
            std,
            alphas_cumprod: alphas_cumprod.to_vec(),
        }
    }

    /// ᾱ at a (possibly fractional) timestep, interpolating σ linearly as Euler schedules do.
    pub fn alpha_at(&self, t: f64) -> f64 {
        let ac = &self.alphas_cumprod;
        let last = ac.len() - 1;
        let x = t.clamp(0.0, last as f64);
        let i = (x.floor() as usize).min(last);
        let j = (i + 1).min(last);
        let s = |a: f32| ((1.0 - a as f64) / a as f64).sqrt();
        let sigma = s(ac[i]) + (s(ac[j]) - s(ac[i])) * (x - i as f64);
        1.0 / (1.0 + sigma * sigma)
    }
}

impl<B: Backend, const D: usize> Denoiser<B, D> for GaussianDenoiser {
    fn prediction_type(&self) -> PredictionType {
        PredictionType::Epsilon
    }
    fn predict(&self, latents: Tensor<B, D>, ctx: &StepContext<B, D>) -> Result<Tensor<B, D>> {
        // z = sqrt(a)·x0 + sqrt(1−a)·ε with x0 ~ N(μ, σ²): E[ε | z] = sqrt(1−a)(z − sqrt(a)μ) / (aσ² + 1 − a).
        let a = self.alpha_at(ctx.timestep);
        let var = a * self.std * self.std + 1.0 - a;
        let k = (1.0 - a).sqrt() / var;
        Ok(latents.sub_scalar(a.sqrt() * self.mean).mul_scalar(k))
    }
}

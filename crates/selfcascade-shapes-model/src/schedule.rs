//! The forward (noising) process q(x_t | x_0) used for training.

use crate::error::Result;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use selfcascade_core::scheduler::betas::{alphas_cumprod, betas, BetaSchedule};
use selfcascade_core::scheduler::{PredictionType, SchedulerConfig};

/// Training timesteps T.
pub const TRAIN_TIMESTEPS: usize = 1000;
/// First beta of the scaled-linear schedule (Stable Diffusion's).
pub const BETA_START: f64 = 0.00085;
/// Last beta of the scaled-linear schedule (Stable Diffusion's).
pub const BETA_END: f64 = 0.012;

/// ᾱ_t of the scaled-linear schedule with T = 1000 (Stable Diffusion's), and q(x_t | x_0).
#[derive(Debug, Clone)]
pub struct NoiseSchedule {
    alphas_cumprod: Vec<f32>,
}

impl NoiseSchedule {
    /// Stable Diffusion's schedule: scaled_linear betas from 0.00085 to 0.012, T = 1000.
    pub fn scaled_linear() -> Result<Self> {
        let b = betas(
            BetaSchedule::ScaledLinear,
            BETA_START,
            BETA_END,
            TRAIN_TIMESTEPS,
        )?;
        Ok(Self {
            alphas_cumprod: alphas_cumprod(&b),
        })
    }

    /// ᾱ of every timestep.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// Number of timesteps T.
    pub fn len(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// Always false (the schedule has T ≥ 2 steps).
    pub fn is_empty(&self) -> bool {
        self.alphas_cumprod.is_empty()
    }

    /// `x_t = sqrt(ᾱ_t)·x_0 + sqrt(1 − ᾱ_t)·ε` with one timestep per row of `x0` `[B, C, H, W]`.
    /// Timesteps ≥ T are clamped to T − 1.
    pub fn add_noise<B: Backend>(
        &self,
        x0: Tensor<B, 4>,
        noise: Tensor<B, 4>,
        timesteps: &[usize],
    ) -> Tensor<B, 4> {
        let b = timesteps.len();
        let last = self.alphas_cumprod.len() - 1;
        let a: Vec<f32> = timesteps
            .iter()
            .map(|t| self.alphas_cumprod[(*t).min(last)])
            .collect();
        let device = x0.device();
        let coef = |f: &dyn Fn(f32) -> f32| {
            let v: Vec<f32> = a.iter().map(|x| f(*x)).collect();
            Tensor::<B, 4>::from_data(TensorData::new(v, [b, 1, 1, 1]), &device)
        };
        let sa = coef(&|x| x.sqrt());
        let sb = coef(&|x| (1.0 - x).sqrt());
        x0.mul(sa).add(noise.mul(sb))
    }

    /// The diffusers scheduler config of this schedule for sampling (ε-prediction, DDIM-style fields:
    /// `set_alpha_to_one = false`, `steps_offset = 1`, no clipping; the caller may change them).
    pub fn scheduler_config(&self) -> SchedulerConfig {
        SchedulerConfig {
            num_train_timesteps: Some(TRAIN_TIMESTEPS),
            beta_start: Some(BETA_START),
            beta_end: Some(BETA_END),
            beta_schedule: Some(BetaSchedule::ScaledLinear),
            prediction_type: Some(PredictionType::Epsilon),
            clip_sample: Some(false),
            set_alpha_to_one: Some(false),
            steps_offset: Some(1),
            ..Default::default()
        }
    }
}

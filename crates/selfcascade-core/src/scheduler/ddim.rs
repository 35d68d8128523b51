//! `DDIMScheduler` (Song et al. 2021), as diffusers implements it.

use super::{
    alpha_at, diffuse, integer_timesteps, predict_x0_eps, require_noise, NoiseSchedule,
    PredictionType, Scheduler, SchedulerConfig,
};
use crate::error::{Error, Result};
use burn::tensor::{backend::Backend, Tensor};

/// DDIM with diffusers' defaults for absent fields (clip_sample true, set_alpha_to_one true,
/// leading spacing, steps_offset 0) and a fixed `eta` (0 = deterministic).
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    config: SchedulerConfig,
    eta: f32,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    int_timesteps: Vec<i64>,
}

impl DdimScheduler {
    /// Builds the scheduler from a config; `eta` ≥ 0 scales the stochastic part of each step.
    pub fn new(config: SchedulerConfig, eta: f64) -> Result<Self> {
        config.validate()?;
        if !(eta >= 0.0 && eta.is_finite()) {
            return Err(Error::SchedulerConfig(format!(
                "eta must be finite and ≥ 0, got {eta}"
            )));
        }
        let alphas_cumprod = super::betas::alphas_cumprod(&config.betas()?);
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            config,
            eta: eta as f32,
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps: Vec::new(),
            int_timesteps: Vec::new(),
        })
    }

    /// The η of the steps.
    pub fn eta(&self) -> f64 {
        self.eta as f64
    }

    fn step_ratio(&self) -> i64 {
        (self.config.train_timesteps() / self.int_timesteps.len().max(1)) as i64
    }

    /// (ᾱ_t, ᾱ_prev) of the step at `index`. Like diffusers, the previous timestep is t − T // N
    /// whatever the spacing.
    fn alphas(&self, index: usize) -> Result<(i64, f32, f32)> {
        let t = *self.int_timesteps.get(index).ok_or_else(|| {
            Error::Scheduler(format!(
                "step index {index} out of range 0..{}",
                self.int_timesteps.len()
            ))
        })?;
        let prev = t - self.step_ratio();
        let a_t = alpha_at(&self.alphas_cumprod, t)?;
        let a_prev = if prev >= 0 {
            alpha_at(&self.alphas_cumprod, prev)?
        } else {
            self.final_alpha_cumprod
        };
        Ok((t, a_t, a_prev))
    }
}

impl NoiseSchedule for DdimScheduler {
    fn class_name(&self) -> &'static str {
        "DDIMScheduler"
    }
    fn config(&self) -> &SchedulerConfig {
        &self.config
    }
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.int_timesteps = integer_timesteps(&self.config, n)?;
        self.timesteps = self.int_timesteps.iter().map(|t| *t as f64).collect();
        Ok(())
    }
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }
    fn alpha_cumprod_at(&self, index: usize) -> Result<f64> {
        Ok(self.alphas(index)?.1 as f64)
    }
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    fn needs_step_noise(&self, _index: usize) -> bool {
        self.eta > 0.0
    }
}

impl<B: Backend, const D: usize> Scheduler<B, D> for DdimScheduler {
    fn scale_model_input(&self, sample: Tensor<B, D>, index: usize) -> Result<Tensor<B, D>> {
        self.alphas(index)?;
        Ok(sample)
    }

    fn step(
        &self,
        model_output: Tensor<B, D>,
        index: usize,
        sample: Tensor<B, D>,
        noise: Option<Tensor<B, D>>,
    ) -> Result<Tensor<B, D>> {
        let (_, a_t, a_prev) = self.alphas(index)?;
        let (beta_t, beta_prev) = (1.0 - a_t, 1.0 - a_prev);
        let prediction: PredictionType = self.config.prediction();
        let (mut x0, eps) = predict_x0_eps(prediction, model_output, sample.clone(), a_t);
        if self.config.clip_sample.unwrap_or(true) {
            let r = self.config.clip_sample_range.unwrap_or(1.0) as f32;
            x0 = x0.clamp(-r, r);
        }
        let variance = (beta_prev / beta_t) * (1.0 - a_t / a_prev);
        let std_dev_t = self.eta * variance.sqrt();
        let direction = eps.mul_scalar((1.0 - a_prev - std_dev_t * std_dev_t).sqrt());
        let prev = x0.mul_scalar(a_prev.sqrt()).add(direction);
        if self.eta > 0.0 {
            let noise = require_noise(noise, &sample, "DDIM with eta > 0")?;
            Ok(prev.add(noise.mul_scalar(std_dev_t)))
        } else {
            Ok(prev)
        }
    }

    fn add_noise(
        &self,
        original: Tensor<B, D>,
        noise: Tensor<B, D>,
        index: usize,
    ) -> Result<Tensor<B, D>> {
        diffuse(original, noise, self.alphas(index)?.1)
    }
}

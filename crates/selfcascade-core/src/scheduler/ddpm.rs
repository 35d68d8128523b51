//! `DDPMScheduler` (Ho et al. 2020), as diffusers implements it.

use super::{
    alpha_at, diffuse, integer_timesteps, predict_x0_eps, require_noise, NoiseSchedule, Scheduler,
    SchedulerConfig, VarianceType,
};
use crate::error::{Error, Result};
use burn::tensor::{backend::Backend, Tensor};

/// Ancestral DDPM sampling; also the forward process used to noise training samples.
/// Defaults for absent fields follow diffusers (clip_sample true, fixed_small variance, leading spacing).
#[derive(Debug, Clone)]
pub struct DdpmScheduler {
    config: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    timesteps: Vec<f64>,
    int_timesteps: Vec<i64>,
}

impl DdpmScheduler {
    /// Builds the scheduler from a config. Before `set_timesteps` is called the schedule runs over
    /// every training timestep, from T−1 to 0.
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        config.validate()?;
        let alphas_cumprod = super::betas::alphas_cumprod(&config.betas()?);
        let int_timesteps: Vec<i64> = (0..alphas_cumprod.len() as i64).rev().collect();
        let timesteps = int_timesteps.iter().map(|t| *t as f64).collect();
        Ok(Self {
            config,
            alphas_cumprod,
            timesteps,
            int_timesteps,
        })
    }

    /// (t, ᾱ_t, ᾱ_prev) of the step at `index`; the previous timestep is the next one in the list
    /// (−1, i.e. ᾱ = 1, after the last).
    fn alphas(&self, index: usize) -> Result<(i64, f32, f32)> {
        let t = *self.int_timesteps.get(index).ok_or_else(|| {
            Error::Scheduler(format!(
                "step index {index} out of range 0..{}",
                self.int_timesteps.len()
            ))
        })?;
        let prev = self.int_timesteps.get(index + 1).copied().unwrap_or(-1);
        let a_t = alpha_at(&self.alphas_cumprod, t)?;
        let a_prev = if prev >= 0 {
            alpha_at(&self.alphas_cumprod, prev)?
        } else {
            1.0
        };
        Ok((t, a_t, a_prev))
    }

    /// ᾱ at an arbitrary training timestep (for training: q(z_t | z_0) with per-sample t).
    pub fn alpha_cumprod_at_timestep(&self, t: usize) -> Result<f32> {
        alpha_at(&self.alphas_cumprod, t as i64)
    }
}

impl NoiseSchedule for DdpmScheduler {
    fn class_name(&self) -> &'static str {
        "DDPMScheduler"
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
    fn needs_step_noise(&self, index: usize) -> bool {
        self.int_timesteps.get(index).is_some_and(|t| *t > 0)
    }
}

impl<B: Backend, const D: usize> Scheduler<B, D> for DdpmScheduler {
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
        let (t, a_t, a_prev) = self.alphas(index)?;
        let (beta_t, beta_prev) = (1.0 - a_t, 1.0 - a_prev);
        let current_alpha = a_t / a_prev;
        let current_beta = 1.0 - current_alpha;
        let (mut x0, _) =
            predict_x0_eps(self.config.prediction(), model_output, sample.clone(), a_t);
        if self.config.clip_sample.unwrap_or(true) {
            let r = self.config.clip_sample_range.unwrap_or(1.0) as f32;
            x0 = x0.clamp(-r, r);
        }
        let x0_coeff = a_prev.sqrt() * current_beta / beta_t;
        let sample_coeff = current_alpha.sqrt() * beta_prev / beta_t;
        let prev = x0
            .mul_scalar(x0_coeff)
            .add(sample.clone().mul_scalar(sample_coeff));
        if t == 0 {
            return Ok(prev);
        }
        let posterior = (beta_prev / beta_t * current_beta).max(1e-20);
        let std = match self
            .config
            .variance_type
            .unwrap_or(VarianceType::FixedSmall)
        {
            VarianceType::FixedSmall => posterior.sqrt(),
            VarianceType::FixedSmallLog => (0.5 * posterior.ln()).exp(),
            VarianceType::FixedLarge => current_beta.sqrt(),
        };
        let noise = require_noise(noise, &sample, "DDPM")?;
        Ok(prev.add(noise.mul_scalar(std)))
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

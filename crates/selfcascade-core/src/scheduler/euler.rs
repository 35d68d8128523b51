//! `EulerDiscreteScheduler` (Karras et al. 2022, Algorithm 2 without churn), as diffusers implements it.

use super::{
    check_noise_shape, linspace_f64, spaced_timesteps, NoiseSchedule, PredictionType, Scheduler,
    SchedulerConfig, TimestepSpacing,
};
use crate::error::{Error, Result};
use burn::tensor::{backend::Backend, Tensor};

/// Euler sampling in σ-space: latents live at scale sqrt(σ²+1), the model sees them divided by it.
#[derive(Debug, Clone)]
pub struct EulerDiscreteScheduler {
    config: SchedulerConfig,
    alphas_cumprod: Vec<f32>,
    /// σ of every training timestep, ascending with t (float32, as diffusers).
    train_sigmas: Vec<f32>,
    timesteps: Vec<f64>,
    /// σ of each inference step plus the final σ.
    sigmas: Vec<f32>,
}

impl EulerDiscreteScheduler {
    /// Builds the scheduler from a config (defaults: linspace spacing, linear interpolation, final σ zero).
    pub fn new(config: SchedulerConfig) -> Result<Self> {
        config.validate()?;
        if config.rescale_betas_zero_snr == Some(true) {
            return Err(Error::SchedulerConfig(
                "rescale_betas_zero_snr is not implemented for the Euler scheduler; use ddim or ddpm".into(),
            ));
        }
        let alphas_cumprod = super::betas::alphas_cumprod(&config.betas()?);
        let train_sigmas = alphas_cumprod
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect();
        Ok(Self {
            config,
            alphas_cumprod,
            train_sigmas,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }

    /// σ of the step at `index` and of the step after it.
    fn sigma_pair(&self, index: usize) -> Result<(f32, f32)> {
        match (self.sigmas.get(index), self.sigmas.get(index + 1)) {
            (Some(s), Some(n)) if index < self.timesteps.len() => Ok((*s, *n)),
            _ => Err(Error::Scheduler(format!(
                "step index {index} out of range 0..{}",
                self.timesteps.len()
            ))),
        }
    }

    /// The σ of each inference step followed by the final σ.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    fn spacing(&self) -> TimestepSpacing {
        self.config
            .timestep_spacing
            .unwrap_or(TimestepSpacing::Linspace)
    }
}

/// `np.interp(x, arange(len(fp)), fp)` for x inside [0, len − 1].
fn interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= last as f64 {
        return fp[last] as f64;
    }
    let i = x.floor() as usize;
    let frac = x - i as f64;
    let (a, b) = (fp[i] as f64, fp[i + 1] as f64);
    a + (b - a) * frac
}

impl NoiseSchedule for EulerDiscreteScheduler {
    fn class_name(&self) -> &'static str {
        "EulerDiscreteScheduler"
    }
    fn config(&self) -> &SchedulerConfig {
        &self.config
    }
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        let t = self.config.train_timesteps();
        let timesteps: Vec<f64> = match self.spacing() {
            // np.linspace(0, T-1, n, dtype=np.float32): computed in float64, stored as float32.
            TimestepSpacing::Linspace => {
                spaced_timesteps(TimestepSpacing::Linspace, t, n, 0)?;
                linspace_f64(0.0, (t - 1) as f64, n)
                    .into_iter()
                    .rev()
                    .map(|v| v as f32 as f64)
                    .collect()
            }
            spacing => spaced_timesteps(spacing, t, n, self.config.steps_offset.unwrap_or(0))?
                .into_iter()
                .map(|v| v as f32 as f64)
                .collect(),
        };
        if let Some(bad) = timesteps.iter().find(|v| **v < 0.0 || **v > (t - 1) as f64) {
            return Err(Error::Scheduler(format!(
                "timestep {bad} is outside 0..{t}: lower steps_offset"
            )));
        }
        let mut sigmas: Vec<f32> = timesteps
            .iter()
            .map(|x| interp(*x, &self.train_sigmas) as f32)
            .collect();
        sigmas.push(match self.config.final_sigmas_type.as_deref() {
            Some("sigma_min") => self.train_sigmas[0],
            _ => 0.0,
        });
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        Ok(())
    }
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }
    fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }
    fn alpha_cumprod_at(&self, index: usize) -> Result<f64> {
        let (s, _) = self.sigma_pair(index)?;
        Ok(1.0 / (1.0 + (s as f64) * (s as f64)))
    }
    fn init_noise_sigma(&self) -> f64 {
        let max = self.sigmas.iter().copied().fold(0.0f32, f32::max) as f64;
        match self.spacing() {
            TimestepSpacing::Linspace | TimestepSpacing::Trailing => max,
            TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        }
    }
    fn needs_step_noise(&self, _index: usize) -> bool {
        false
    }
}

impl<B: Backend, const D: usize> Scheduler<B, D> for EulerDiscreteScheduler {
    fn scale_model_input(&self, sample: Tensor<B, D>, index: usize) -> Result<Tensor<B, D>> {
        let (sigma, _) = self.sigma_pair(index)?;
        Ok(sample.div_scalar((sigma * sigma + 1.0).sqrt()))
    }

    fn step(
        &self,
        model_output: Tensor<B, D>,
        index: usize,
        sample: Tensor<B, D>,
        _noise: Option<Tensor<B, D>>,
    ) -> Result<Tensor<B, D>> {
        let (sigma, sigma_next) = self.sigma_pair(index)?;
        let x0 = match self.config.prediction() {
            PredictionType::Epsilon => sample.clone().sub(model_output.mul_scalar(sigma)),
            PredictionType::VPrediction => model_output
                .mul_scalar(-sigma / (sigma * sigma + 1.0).sqrt())
                .add(sample.clone().div_scalar(sigma * sigma + 1.0)),
            PredictionType::Sample => model_output,
        };
        let derivative = sample.clone().sub(x0).div_scalar(sigma);
        Ok(sample.add(derivative.mul_scalar(sigma_next - sigma)))
    }

    fn add_noise(
        &self,
        original: Tensor<B, D>,
        noise: Tensor<B, D>,
        index: usize,
    ) -> Result<Tensor<B, D>> {
        let (sigma, _) = self.sigma_pair(index)?;
        check_noise_shape(&original, &noise)?;
        Ok(original.add(noise.mul_scalar(sigma)))
    }
}

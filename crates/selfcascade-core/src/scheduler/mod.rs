//! Noise schedulers, numerically equal to diffusers' classes of the same name.
//!
//! A scheduler is split in two: [`NoiseSchedule`] holds the host-side schedule (timesteps, ᾱ, σ) and is
//! object-safe without a backend; [`Scheduler`] adds the tensor operations for a backend `B` and a latent
//! rank `D` (4 for images, 5 for video). Steps are addressed by their index in [`NoiseSchedule::timesteps`].

pub mod betas;
pub mod config;
mod ddim;
mod ddpm;
mod euler;

pub use config::{PredictionType, SchedulerConfig, SchedulerKind, TimestepSpacing, VarianceType};
pub use ddim::DdimScheduler;
pub use ddpm::DdpmScheduler;
pub use euler::EulerDiscreteScheduler;

use crate::error::{Error, Result};
use burn::tensor::{backend::Backend, Tensor};

/// The backend-free part of a scheduler: the schedule itself.
pub trait NoiseSchedule: Send + Sync {
    /// The diffusers class this scheduler reproduces.
    fn class_name(&self) -> &'static str;
    /// The configuration it was built from.
    fn config(&self) -> &SchedulerConfig;
    /// Chooses `num_inference_steps` timesteps (diffusers' `set_timesteps`).
    fn set_timesteps(&mut self, num_inference_steps: usize) -> Result<()>;
    /// The inference timesteps, from the noisiest; empty before [`NoiseSchedule::set_timesteps`].
    fn timesteps(&self) -> &[f64];
    /// ᾱ of every training timestep.
    fn alphas_cumprod(&self) -> &[f32];
    /// The signal level ᾱ of the step at `index` (for σ-parameterised schedulers, 1 / (1 + σ²)).
    fn alpha_cumprod_at(&self, index: usize) -> Result<f64>;
    /// Standard deviation of the initial noise.
    fn init_noise_sigma(&self) -> f64;
    /// What the model predicts.
    fn prediction_type(&self) -> PredictionType {
        self.config().prediction()
    }
    /// Whether [`Scheduler::step`] at `index` needs fresh Gaussian noise.
    fn needs_step_noise(&self, index: usize) -> bool;

    /// img2img truncation with diffusers' semantics: with `strength` s and N steps, the index of the
    /// first kept step, so that the last `int(N·s)` timesteps run (N = 50, s = 0.7: index 15, t = 681
    /// for SD's DDIM config).
    fn strength_start(&self, strength: f64) -> Result<usize> {
        let n = self.timesteps().len();
        if n == 0 {
            return Err(Error::Scheduler(
                "call set_timesteps before strength_start".into(),
            ));
        }
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(Error::Sampler(format!(
                "strength must be in (0, 1], got {strength}"
            )));
        }
        let init = ((n as f64 * strength) as usize).min(n);
        if init == 0 {
            return Err(Error::Sampler(format!(
                "strength {strength} with {n} steps keeps no step; raise the strength to at least {} or use more steps",
                1.0 / n as f64
            )));
        }
        Ok(n - init)
    }

    /// The timestep at `index`, or an error naming the valid range.
    fn timestep(&self, index: usize) -> Result<f64> {
        let ts = self.timesteps();
        ts.get(index).copied().ok_or_else(|| {
            Error::Scheduler(if ts.is_empty() {
                "no timesteps: call set_timesteps first".to_string()
            } else {
                format!("step index {index} out of range 0..{}", ts.len())
            })
        })
    }
}

/// Tensor operations of a scheduler for backend `B` and latents of rank `D`. All operations are
/// element-wise, so any latent layout works.
pub trait Scheduler<B: Backend, const D: usize>: NoiseSchedule {
    /// Scales the denoiser input at step `index` (identity for DDIM/DDPM, 1/sqrt(σ²+1) for Euler).
    fn scale_model_input(&self, sample: Tensor<B, D>, index: usize) -> Result<Tensor<B, D>>;
    /// One reverse step from the step at `index` to the next one. `noise` is required where
    /// [`NoiseSchedule::needs_step_noise`] says so and ignored elsewhere.
    fn step(
        &self,
        model_output: Tensor<B, D>,
        index: usize,
        sample: Tensor<B, D>,
        noise: Option<Tensor<B, D>>,
    ) -> Result<Tensor<B, D>>;
    /// Diffuses a clean sample forward to the step at `index` (diffusers' `add_noise`).
    fn add_noise(
        &self,
        original: Tensor<B, D>,
        noise: Tensor<B, D>,
        index: usize,
    ) -> Result<Tensor<B, D>>;
}

/// A scheduler chosen at run time.
pub type DynScheduler<B, const D: usize> = Box<dyn Scheduler<B, D>>;

/// Builds the scheduler named by `kind` (or by the config's `_class_name` when `kind` is `None`).
pub fn build<B: Backend, const D: usize>(
    config: &SchedulerConfig,
    kind: Option<SchedulerKind>,
    eta: f64,
) -> Result<DynScheduler<B, D>> {
    let kind = match kind {
        Some(k) => k,
        None => config.kind()?,
    };
    if eta != 0.0 && kind != SchedulerKind::Ddim {
        return Err(Error::SchedulerConfig(format!(
            "eta = {eta} applies to DDIM only; {} takes no eta",
            kind.class_name()
        )));
    }
    Ok(match kind {
        SchedulerKind::Ddim => Box::new(DdimScheduler::new(config.clone(), eta)?),
        SchedulerKind::Ddpm => Box::new(DdpmScheduler::new(config.clone())?),
        SchedulerKind::EulerDiscrete => Box::new(EulerDiscreteScheduler::new(config.clone())?),
    })
}

/// The float timesteps diffusers computes before casting, for a spacing (shared by all schedulers).
pub(crate) fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train_timesteps: usize,
    num_inference_steps: usize,
    steps_offset: usize,
) -> Result<Vec<f64>> {
    let t = num_train_timesteps;
    let n = num_inference_steps;
    if n == 0 || n > t {
        return Err(Error::Scheduler(format!(
            "number of inference steps must be in 1..={t} (the training timesteps), got {n}"
        )));
    }
    Ok(match spacing {
        TimestepSpacing::Leading => {
            let ratio = t / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => {
            // np.round(np.arange(T, 0, -T/N)) - 1, with numpy's length rule ceil((stop - start) / step).
            let ratio = t as f64 / n as f64;
            let len = ((0.0 - t as f64) / -ratio).ceil() as usize;
            (0..len)
                .map(|i| (t as f64 - i as f64 * ratio).round_ties_even() - 1.0)
                .collect()
        }
        TimestepSpacing::Linspace => linspace_f64(0.0, (t - 1) as f64, n)
            .into_iter()
            .rev()
            .collect(),
    })
}

/// The integer timesteps of DDIM and DDPM (leading spacing by default): the spaced values rounded half
/// to even as numpy does, each checked to lie inside the training schedule.
pub(crate) fn integer_timesteps(config: &SchedulerConfig, n: usize) -> Result<Vec<i64>> {
    let t = config.train_timesteps();
    let spacing = config.timestep_spacing.unwrap_or(TimestepSpacing::Leading);
    let raw = spaced_timesteps(spacing, t, n, config.steps_offset.unwrap_or(0))?;
    let ints: Vec<i64> = raw.iter().map(|v| v.round_ties_even() as i64).collect();
    if let Some(bad) = ints.iter().find(|v| **v < 0 || **v as usize >= t) {
        return Err(Error::Scheduler(format!(
            "timestep {bad} is outside 0..{t}: lower steps_offset or the number of steps"
        )));
    }
    Ok(ints)
}

/// `np.linspace(start, stop, num)` (float64; the last value is exactly `stop`).
pub(crate) fn linspace_f64(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| start + i as f64 * step).collect();
    v[num - 1] = stop;
    v
}

/// The pair (ᾱ_t, sqrt-coefficients) lookup shared by DDIM and DDPM: ᾱ at an integer timestep.
pub(crate) fn alpha_at(alphas_cumprod: &[f32], t: i64) -> Result<f32> {
    usize::try_from(t)
        .ok()
        .and_then(|i| alphas_cumprod.get(i).copied())
        .ok_or_else(|| {
            Error::Scheduler(format!("timestep {t} outside 0..{}", alphas_cumprod.len()))
        })
}

/// Predicted clean sample and predicted noise from a model output (DDIM/DDPM formulas).
pub(crate) fn predict_x0_eps<B: Backend, const D: usize>(
    prediction: PredictionType,
    model_output: Tensor<B, D>,
    sample: Tensor<B, D>,
    alpha_prod_t: f32,
) -> (Tensor<B, D>, Tensor<B, D>) {
    let beta_prod_t = 1.0 - alpha_prod_t;
    let (sa, sb) = (alpha_prod_t.sqrt(), beta_prod_t.sqrt());
    match prediction {
        PredictionType::Epsilon => {
            let x0 = sample
                .sub(model_output.clone().mul_scalar(sb))
                .div_scalar(sa);
            (x0, model_output)
        }
        PredictionType::Sample => {
            let eps = sample
                .sub(model_output.clone().mul_scalar(sa))
                .div_scalar(sb);
            (model_output, eps)
        }
        PredictionType::VPrediction => {
            let x0 = sample
                .clone()
                .mul_scalar(sa)
                .sub(model_output.clone().mul_scalar(sb));
            let eps = model_output.mul_scalar(sa).add(sample.mul_scalar(sb));
            (x0, eps)
        }
    }
}

/// `sqrt(ᾱ)·x₀ + sqrt(1−ᾱ)·ε` with float32 coefficients.
pub(crate) fn diffuse<B: Backend, const D: usize>(
    original: Tensor<B, D>,
    noise: Tensor<B, D>,
    alpha_prod: f32,
) -> Result<Tensor<B, D>> {
    check_noise_shape(&original, &noise)?;
    Ok(original
        .mul_scalar(alpha_prod.sqrt())
        .add(noise.mul_scalar((1.0 - alpha_prod).sqrt())))
}

/// Checks that noise has the sample's shape.
pub(crate) fn check_noise_shape<B: Backend, const D: usize>(
    original: &Tensor<B, D>,
    noise: &Tensor<B, D>,
) -> Result<()> {
    if original.dims() != noise.dims() {
        return Err(Error::Noise(format!(
            "noise shape {:?} differs from the sample's {:?}",
            noise.dims(),
            original.dims()
        )));
    }
    Ok(())
}

/// Checks that step noise is present and shaped like the sample.
pub(crate) fn require_noise<B: Backend, const D: usize>(
    noise: Option<Tensor<B, D>>,
    sample: &Tensor<B, D>,
    who: &str,
) -> Result<Tensor<B, D>> {
    let noise = noise.ok_or_else(|| {
        Error::Noise(format!(
            "{who} needs step noise at this step but none was given"
        ))
    })?;
    if noise.dims() != sample.dims() {
        return Err(Error::Noise(format!(
            "step noise shape {:?} differs from the sample's {:?}",
            noise.dims(),
            sample.dims()
        )));
    }
    Ok(noise)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_spacing_matches_sd_defaults() {
        let ts = spaced_timesteps(TimestepSpacing::Leading, 1000, 50, 1).unwrap();
        assert_eq!(ts.len(), 50);
        assert_eq!(ts[0], 981.0);
        assert_eq!(ts[15], 681.0);
        assert_eq!(ts[49], 1.0);
    }

    #[test]
    fn trailing_and_linspace_spacing() {
        let ts = spaced_timesteps(TimestepSpacing::Trailing, 1000, 50, 0).unwrap();
        assert_eq!((ts[0], ts[49]), (999.0, 19.0));
        let ts = spaced_timesteps(TimestepSpacing::Linspace, 1000, 4, 0).unwrap();
        assert_eq!(ts, vec![999.0, 666.0, 333.0, 0.0]);
    }

    #[test]
    fn step_counts_are_checked() {
        assert!(spaced_timesteps(TimestepSpacing::Leading, 1000, 0, 1).is_err());
        assert!(spaced_timesteps(TimestepSpacing::Leading, 1000, 1001, 1).is_err());
    }
}

//! Algorithm 2 of the paper: pivot-guided noise re-schedule across scale stages.
//!
//! ```text
//! plan → stage 0: z_T ~ N(0, I), denoise T → 0 at the base size, giving the pivot z_0^0
//!      → stage r ≥ 1: z_K^r = sqrt(ᾱ_K)·φ_r(z_0^{r−1}) + sqrt(1−ᾱ_K)·ε, denoise K → 0 at size d_r
//! ```
//!
//! Latents are images `[B, C, h, w]` (`D = 4`) or videos `[B, C, T, h, w]` (`D = 5`, T =
//! [`SelfCascadeConfig::frames`]); for video φ_r resizes every frame and T stays fixed across stages.

use crate::denoiser::{Denoiser, StepContext};
use crate::error::{Error, Result};
use crate::noise::NoiseSource;
use crate::pivot::{upsample_spatial, PivotUpsampler};
use crate::plan::{ScalePlan, Size};
use crate::scheduler::Scheduler;
use burn::tensor::{backend::Backend, ElementConversion, Tensor};
use std::ops::ControlFlow;

/// Where a run stands, reported after every denoising step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Stage index (0 = base size).
    pub stage: usize,
    /// Number of stages.
    pub num_stages: usize,
    /// Steps done in this stage (1-based after the step).
    pub step: usize,
    /// Steps this stage runs.
    pub steps_in_stage: usize,
    /// Steps done over all stages.
    pub done: usize,
    /// Steps over all stages.
    pub total: usize,
    /// Timestep of the step just done.
    pub timestep: f64,
}

/// Settings of a self-cascade run.
#[derive(Debug, Clone)]
pub struct SelfCascadeConfig {
    /// Inference steps of the full schedule (stage 0 runs all of them).
    pub steps: usize,
    /// Re-noising strength K/T of stages r ≥ 1 (diffusers img2img semantics; the paper: 0.7).
    pub strength: f64,
    /// Pixels per latent cell (8 for the SD VAE).
    pub latent_scale: usize,
    /// Latent channels (4 for SD).
    pub latent_channels: usize,
    /// Images (or videos) per run.
    pub batch: usize,
    /// Frames per video for 5-D latents `[B, C, T, h, w]` (ignored for images).
    pub frames: usize,
    /// Keep every stage's clean latent in the output.
    pub keep_stages: bool,
    /// Stop with an error when latents become NaN or infinite (one host read per step).
    pub check_finite: bool,
}

impl Default for SelfCascadeConfig {
    fn default() -> Self {
        Self {
            steps: 50,
            strength: 0.7,
            latent_scale: 8,
            latent_channels: 4,
            batch: 1,
            frames: 1,
            keep_stages: false,
            check_finite: true,
        }
    }
}

/// What a run returns: the clean latent of the last stage, and optionally every stage's.
#[derive(Debug, Clone)]
pub struct CascadeOutput<B: Backend, const D: usize = 4> {
    /// z_0^R, the final clean latent `[batch, C, H/f, W/f]` (`[batch, C, T, H/f, W/f]` for video).
    pub latent: Tensor<B, D>,
    /// z_0^r for every stage r (empty unless `keep_stages`).
    pub stages: Vec<Tensor<B, D>>,
}

/// The tuning-free self-cascade sampler (Algorithm 2), generic over backend, latent rank (4: images,
/// 5: videos), scheduler, pivot upsampler, denoiser and noise source. A one-stage plan is plain
/// text-to-image (or text-to-video) sampling.
pub struct SelfCascadeSampler<'a, B: Backend, const D: usize = 4> {
    /// The scheduler (its timesteps are set by the sampler).
    pub scheduler: &'a mut dyn Scheduler<B, D>,
    /// φ_r.
    pub pivot_upsampler: &'a dyn PivotUpsampler<B>,
    /// Settings.
    pub config: SelfCascadeConfig,
}

impl<B: Backend, const D: usize> SelfCascadeSampler<'_, B, D> {
    /// Runs every stage of `plan`, reporting progress after each step; the callback returns
    /// `ControlFlow::Break(())` to cancel (the run then ends with [`Error::Cancelled`]).
    pub fn sample<Dn: Denoiser<B, D> + ?Sized>(
        &mut self,
        plan: &ScalePlan,
        denoiser: &Dn,
        noise: &mut dyn NoiseSource<B, D>,
        device: &B::Device,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<CascadeOutput<B, D>> {
        let cfg = self.config.clone();
        if cfg.batch == 0 || cfg.latent_channels == 0 || cfg.latent_scale == 0 || cfg.frames == 0 {
            return Err(Error::Sampler(
                "batch, frames, latent_channels and latent_scale must be positive".into(),
            ));
        }
        if denoiser.prediction_type() != self.scheduler.prediction_type() {
            return Err(Error::Sampler(format!(
                "the model predicts {:?} but the scheduler config says prediction_type {:?}; fix the scheduler config",
                denoiser.prediction_type(),
                self.scheduler.prediction_type()
            )));
        }
        self.scheduler.set_timesteps(cfg.steps)?;
        let timesteps = self.scheduler.timesteps().to_vec();
        let n = timesteps.len();
        let start = if plan.len() > 1 {
            self.scheduler.strength_start(cfg.strength)?
        } else {
            0
        };
        let total = n + (plan.len() - 1) * (n - start);
        let mut done = 0;
        let mut pivot: Option<Tensor<B, D>> = None;
        let mut stages = Vec::new();

        for (r, &size) in plan.stages().iter().enumerate() {
            let shape = self.latent_shape(size)?;
            let first = if r == 0 { 0 } else { start };
            let eps = noise.stage_noise(r, shape, device)?;
            let mut latents = match &pivot {
                None => eps.mul_scalar(self.scheduler.init_noise_sigma()),
                // z_K^r = sqrt(ᾱ_K)·φ_r(z_0^{r−1}) + sqrt(1−ᾱ_K)·ε
                Some(prev) => {
                    let up = upsample_spatial(
                        self.pivot_upsampler,
                        prev.clone(),
                        shape[D - 2],
                        shape[D - 1],
                    );
                    self.scheduler.add_noise(up, eps, first)?
                }
            };
            for (i, &t) in timesteps.iter().enumerate().skip(first) {
                let ctx = StepContext {
                    stage: r,
                    step: i - first,
                    steps_in_stage: n - first,
                    timestep: t,
                    image_size: (size.width, size.height),
                    pivot: pivot.clone(),
                };
                let model_input = self.scheduler.scale_model_input(latents.clone(), i)?;
                let out = denoiser.predict(model_input, &ctx)?;
                if out.dims() != shape {
                    return Err(Error::Model(format!(
                        "denoiser returned shape {:?} for latents of shape {shape:?}",
                        out.dims()
                    )));
                }
                let step_noise = if self.scheduler.needs_step_noise(i) {
                    Some(noise.step_noise(r, i - first, shape, device)?)
                } else {
                    None
                };
                latents = self.scheduler.step(out, i, latents, step_noise)?;
                if cfg.check_finite && !all_finite(&latents) {
                    return Err(Error::NonFinite {
                        stage: r,
                        step: i - first,
                        timestep: t,
                    });
                }
                done += 1;
                let report = Progress {
                    stage: r,
                    num_stages: plan.len(),
                    step: i - first + 1,
                    steps_in_stage: n - first,
                    done,
                    total,
                    timestep: t,
                };
                if progress(&report).is_break() {
                    return Err(Error::Cancelled {
                        stage: r,
                        step: i - first,
                    });
                }
            }
            if cfg.keep_stages {
                stages.push(latents.clone());
            }
            pivot = Some(latents);
        }
        let latent = pivot.ok_or_else(|| Error::Sampler("the plan has no stage".into()))?;
        Ok(CascadeOutput { latent, stages })
    }

    /// `[batch, C, H/f, W/f]` (`[batch, C, frames, H/f, W/f]` for `D = 5`) for a stage of `size`
    /// pixels.
    pub fn latent_shape(&self, size: Size) -> Result<[usize; D]> {
        let c = &self.config;
        let f = c.latent_scale;
        if !size.width.is_multiple_of(f) || !size.height.is_multiple_of(f) {
            return Err(Error::Sampler(format!(
                "stage size {size} is not a multiple of the latent scale {f}"
            )));
        }
        let (h, w) = (size.height / f, size.width / f);
        let shape = match D {
            4 => vec![c.batch, c.latent_channels, h, w],
            5 => vec![c.batch, c.latent_channels, c.frames, h, w],
            _ => vec![],
        };
        shape.try_into().map_err(|_| {
            Error::Sampler(format!(
                "latents of rank {D} are not supported: 4 (images) or 5 (videos)"
            ))
        })
    }
}

/// True when no element is NaN or infinite. Element-wise, not through a sum: a sum of |x| over a
/// 1024² latent (131,072 values near 1) overflows f16 (65,504) on latents that are all finite.
pub fn all_finite<B: Backend, const D: usize>(x: &Tensor<B, D>) -> bool {
    x.clone().is_finite().all().into_scalar().elem::<bool>()
}

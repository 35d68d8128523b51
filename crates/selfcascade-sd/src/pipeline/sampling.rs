//! Sampling a diffusers UNet with any of the methods — direct, Attn-SF, ScaleCrafter, self-cascade
//! (tuning-free and tuned) — given its conditioning. [`StableDiffusion`](super::StableDiffusion) binds it to text embeddings;
//! other models built on the same UNet (the shapes model's label embedding) bind their own context, so
//! every model runs the methods through the same code.

use super::attn_sf::AttnSf;
use super::scalecrafter::{noise_damped_cfg, Branch, ScaleCrafter};
use super::stable_diffusion::{GenerateRequest, Method, PromptEmbeds};
use crate::error::{Error, Result};
use crate::unet::{PivotInjection, UNet2DConditionModel, UNetHooks};
use burn::tensor::{backend::Backend, Tensor};
use selfcascade_core::guidance::repeat_batch;
use selfcascade_core::scheduler::{self, PredictionType, SchedulerConfig, SchedulerKind};
use selfcascade_core::{
    CascadeOutput, ClassifierFreeGuidance, Denoiser, FeatureUpsampler, Interpolation, NoiseSource,
    Progress, ScalePlan, SelfCascadeConfig, SelfCascadeSampler, Size, StepContext,
};
use std::ops::ControlFlow;

/// A UNet and what the methods need to know about it.
#[derive(Debug, Clone, Copy)]
pub struct UNetSampling<'a, B: Backend> {
    /// The denoising UNet.
    pub unet: &'a UNet2DConditionModel<B>,
    /// Its noise schedule (the scheduler class may be overridden per request).
    pub scheduler_config: &'a SchedulerConfig,
    /// The model's training size in pixels (Attn-SF's N_train, the first self-cascade stage).
    pub base: Size,
    /// Pixels per latent cell (the VAE factor; 1 in pixel space).
    pub latent_scale: usize,
    /// ScaleCrafter's settings for this target (required by [`Method::ScaleCrafter`]).
    pub scalecrafter: Option<&'a ScaleCrafter>,
    /// The trained feature upsamplers and their t_min (required by [`Method::SelfCascadeTuned`],
    /// ignored by every other method).
    pub feature_injection: Option<FeatureInjection<'a, B>>,
}

/// The tuned self-cascade's injection (Algorithm 1 at inference): in every stage r ≥ 1, while the
/// step's timestep t > `t_min`, the UNet runs with
/// `UNetHooks { pivot: Some(PivotInjection { latent: pivot, upsampler }) }`, where `pivot` is the
/// previous stage's clean latent z₀^{r−1} exactly as the sampler hands it over in
/// [`StepContext::pivot`]: in the UNet's (scaled) latent space, scaled once when it was made and never
/// again — the same tensor at every step of the stage (the released code multiplies it by the VAE
/// scaling factor again at every step; not here), not passed through the scheduler's
/// `scale_model_input` (it is a clean latent), and under classifier-free guidance repeated explicitly
/// to the guided batch by [`ClassifierFreeGuidance`] (no broadcasting: the UNet rejects a pivot whose
/// batch differs from the sample's).
///
/// The boundary is deliberate: injection at t > t_min, the plain UNet at t ≤ t_min, so a step at
/// exactly t = t_min runs plain (the release tests `t > 100` and `t < 100` and runs neither branch at
/// t = 100). Stage 0 has no pivot and always runs plain.
pub struct FeatureInjection<'a, B: Backend> {
    /// φ_n, one per injection point of the UNet.
    pub upsampler: &'a dyn FeatureUpsampler<B>,
    /// Injection runs while t > t_min.
    pub t_min: f64,
}

impl<'a, B: Backend> FeatureInjection<'a, B> {
    /// The release's t_min: upsamplers act while t > 100.
    pub const DEFAULT_T_MIN: f64 = 100.0;

    /// `upsampler` with the default t_min of 100.
    pub fn new(upsampler: &'a dyn FeatureUpsampler<B>) -> Self {
        Self {
            upsampler,
            t_min: Self::DEFAULT_T_MIN,
        }
    }

    /// Whether the UNet gets the pivot at timestep `t` (t > t_min).
    pub fn active_at(&self, t: f64) -> bool {
        t > self.t_min
    }

    /// Checks `upsampler` against `unet`'s injection points and `t_min` for finiteness.
    pub(crate) fn checked(
        upsampler: &'a dyn FeatureUpsampler<B>,
        t_min: f64,
        unet: &UNet2DConditionModel<B>,
    ) -> Result<Self> {
        if !t_min.is_finite() {
            return Err(Error::Input(format!(
                "feature injection t_min {t_min} is not finite"
            )));
        }
        unet.check_feature_upsampler(upsampler)?;
        Ok(Self { upsampler, t_min })
    }
}

impl<B: Backend> Clone for FeatureInjection<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend> Copy for FeatureInjection<'_, B> {}

impl<B: Backend> std::fmt::Debug for FeatureInjection<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let channels: Vec<usize> = (0..self.upsampler.num_points())
            .map(|n| self.upsampler.channels(n))
            .collect();
        f.debug_struct("FeatureInjection")
            .field("channels", &channels)
            .field("t_min", &self.t_min)
            .finish()
    }
}

impl<B: Backend> UNetSampling<'_, B> {
    /// The stage plan of `method` for `target` with sides aligned to `align`: the self-cascade stages
    /// from the base size, or one stage at the target for every other method (same size checks).
    pub fn plan(&self, method: Method, target: Size, align: usize) -> Result<ScalePlan> {
        match method {
            Method::SelfCascade | Method::SelfCascadeTuned => {
                Ok(ScalePlan::new(self.base, target, align)?)
            }
            _ => {
                ScalePlan::new(Size::new(align, align), target, align)?;
                Ok(ScalePlan::single(target))
            }
        }
    }

    /// Runs `request.method` over the stages of `plan` (its last stage is the target; the request's
    /// width and height are not used). The batch is the number of rows of `embeds.positive`, each row
    /// one sample with its own conditioning (and `embeds.negative` the matching unconditional rows).
    pub fn sample(
        &self,
        embeds: &PromptEmbeds<B>,
        request: &GenerateRequest,
        plan: &ScalePlan,
        noise: &mut dyn NoiseSource<B, 4>,
        device: &B::Device,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<CascadeOutput<B>> {
        let batch = embeds.positive.dims()[0];
        if batch == 0 || embeds.negative.dims()[0] != batch {
            return Err(Error::Input(format!(
                "conditioning of {} rows with {} unconditional rows; expected the same positive number",
                batch,
                embeds.negative.dims()[0]
            )));
        }
        if request.method == Method::ScaleCrafter && self.scalecrafter.is_none() {
            return Err(Error::Input(
                "the scalecrafter method needs dilation settings for this model and size".into(),
            ));
        }
        let injection = match request.method {
            Method::SelfCascadeTuned => {
                let fi = self.feature_injection.ok_or_else(|| {
                    Error::Input(
                        "the self-cascade-tuned method needs trained feature upsamplers (φ_n): attach them \
                         (StableDiffusion::set_feature_upsampler, or UNetSampling::feature_injection), \
                         or use the tuning-free `self-cascade`"
                            .into(),
                    )
                })?;
                Some(FeatureInjection::checked(
                    fi.upsampler,
                    fi.t_min,
                    self.unet,
                )?)
            }
            _ => None,
        };
        let kind = match request.scheduler {
            Some(k) => k,
            None => self.scheduler_config.kind()?,
        };
        let eta = request.eta.unwrap_or(
            if request.method == Method::ScaleCrafter && kind == SchedulerKind::Ddim {
                1.0
            } else {
                0.0
            },
        );
        let mut scheduler = scheduler::build::<B, 4>(self.scheduler_config, Some(kind), eta)?;
        let prediction = scheduler.prediction_type();
        let target = plan.target();
        let scalecrafter = match request.method {
            Method::ScaleCrafter => self.scalecrafter,
            _ => None,
        };
        let attn_sf = (request.method == Method::AttnSf)
            .then(|| AttnSf::new(self.base.pixels(), target.pixels()));
        let cfg = request.guidance > 1.0;
        let inner = UNetDenoiser {
            unet: self.unet,
            context: if cfg {
                Tensor::cat(vec![embeds.negative.clone(), embeds.positive.clone()], 0)
            } else {
                embeds.positive.clone()
            },
            pooled: match (&embeds.negative_pooled, &embeds.positive_pooled) {
                (Some(n), Some(p)) if cfg => Some(Tensor::cat(vec![n.clone(), p.clone()], 0)),
                (_, Some(p)) => Some(p.clone()),
                _ => None,
            },
            prediction,
            attn_sf,
            scalecrafter: scalecrafter.map(|s| (s, Branch::Strong)),
            injection,
        };
        let mut sampler = SelfCascadeSampler {
            scheduler: scheduler.as_mut(),
            pivot_upsampler: &Interpolation::Bicubic,
            config: SelfCascadeConfig {
                steps: request.steps,
                strength: request.strength,
                latent_scale: self.latent_scale,
                latent_channels: self.unet.config().in_channels,
                batch,
                frames: 1,
                keep_stages: request.keep_stages,
                check_finite: true,
            },
        };
        let out = match (scalecrafter, cfg) {
            (Some(sc), true) if sc.ndcfg.is_some() => {
                let weak = UNetDenoiser {
                    context: embeds.negative.clone(),
                    pooled: embeds.negative_pooled.clone(),
                    scalecrafter: Some((sc, Branch::Weak)),
                    ..inner.clone()
                };
                let den = NoiseDampedGuidance {
                    strong: ClassifierFreeGuidance::new(inner, request.guidance),
                    weak,
                    scale: sc,
                };
                sampler.sample(plan, &den, noise, device, progress)
            }
            (_, true) => sampler.sample(
                plan,
                &ClassifierFreeGuidance::new(inner, request.guidance),
                noise,
                device,
                progress,
            ),
            (_, false) => sampler.sample(plan, &inner, noise, device, progress),
        };
        Ok(out?)
    }
}

/// The UNet as a [`Denoiser`], with the text conditioning bound and the per-method hooks.
#[derive(Clone)]
struct UNetDenoiser<'a, B: Backend> {
    unet: &'a UNet2DConditionModel<B>,
    /// `[n, 77, D]`: n = 2 (uncond, cond) under guidance, 1 otherwise.
    context: Tensor<B, 3>,
    /// SDXL pooled text embeddings, same rows as `context`.
    pooled: Option<Tensor<B, 2>>,
    prediction: PredictionType,
    attn_sf: Option<AttnSf>,
    scalecrafter: Option<(&'a ScaleCrafter, Branch)>,
    /// The tuned method's feature injection (stages r ≥ 1, t > t_min).
    injection: Option<FeatureInjection<'a, B>>,
}

impl<B: Backend> Denoiser<B, 4> for UNetDenoiser<'_, B> {
    fn prediction_type(&self) -> PredictionType {
        self.prediction
    }

    fn predict(
        &self,
        latents: Tensor<B, 4>,
        ctx: &StepContext<B, 4>,
    ) -> selfcascade_core::Result<Tensor<B, 4>> {
        let batch = latents.dims()[0];
        let rows = self.context.dims()[0];
        if rows == 0 || !batch.is_multiple_of(rows) {
            return Err(selfcascade_core::Error::Model(format!(
                "latent batch {batch} is not a multiple of the text batch {rows}"
            )));
        }
        let per = batch / rows;
        let repeat_rows = |x: Tensor<B, 3>| -> Tensor<B, 3> {
            let [n, m, d] = x.dims();
            x.unsqueeze_dim::<4>(1)
                .repeat_dim(1, per)
                .reshape([n * per, m, d])
        };
        let context = repeat_rows(self.context.clone());
        let added = self.pooled.as_ref().map(|p| {
            let [n, d] = p.dims();
            let pooled = p
                .clone()
                .unsqueeze_dim::<3>(1)
                .repeat_dim(1, per)
                .reshape([n * per, d]);
            // SDXL micro-conditioning: original size = target size = this stage's size, crop (0, 0).
            let (w, h) = ctx.image_size;
            let ids = [h as f32, w as f32, 0.0, 0.0, h as f32, w as f32];
            let time_ids = Tensor::<B, 1>::from_floats(ids, &latents.device())
                .unsqueeze::<2>()
                .repeat_dim(0, batch);
            (pooled, time_ids)
        });
        let attn = self
            .attn_sf
            .map(|rule| move |tokens: usize| rule.scale(tokens));
        let dilation = self.scalecrafter.map(|(sc, branch)| {
            let step = ctx.step;
            move |path: &str| sc.dilation(branch, path, step)
        });
        // The pivot as the sampler (and the guidance adaptor, which repeats it to the guided batch)
        // hands it over: no rescaling here, and a batch mismatch is the UNet's error.
        let pivot = match (&self.injection, &ctx.pivot) {
            (Some(fi), Some(latent)) if fi.active_at(ctx.timestep) => Some(PivotInjection {
                latent: latent.clone(),
                upsampler: fi.upsampler,
            }),
            _ => None,
        };
        let hooks = UNetHooks {
            self_attention_scale: attn.as_ref().map(|f| f as &dyn Fn(usize) -> f64),
            dilation: dilation.as_ref().map(|f| f as &dyn Fn(&str) -> Option<f64>),
            pivot,
        };
        Ok(self
            .unet
            .forward(latents, &[ctx.timestep], context, added, &hooks)?)
    }
}

/// ScaleCrafter's noise-damped guidance: ε = ε_weak(x, ∅) + w·(ε_strong(x, c) − ε_strong(x, ∅)) while
/// active, plain guidance afterwards.
struct NoiseDampedGuidance<'a, B: Backend> {
    strong: ClassifierFreeGuidance<UNetDenoiser<'a, B>>,
    weak: UNetDenoiser<'a, B>,
    scale: &'a ScaleCrafter,
}

impl<B: Backend> Denoiser<B, 4> for NoiseDampedGuidance<'_, B> {
    fn prediction_type(&self) -> PredictionType {
        self.weak.prediction
    }

    fn predict(
        &self,
        latents: Tensor<B, 4>,
        ctx: &StepContext<B, 4>,
    ) -> selfcascade_core::Result<Tensor<B, 4>> {
        if !self.scale.ndcfg_active(ctx.step) {
            return self.strong.predict(latents, ctx);
        }
        let batch = latents.dims()[0];
        let both = self
            .strong
            .inner
            .predict(repeat_batch(latents.clone()), ctx)?;
        let uncond = both.clone().narrow(0, 0, batch);
        let cond = both.narrow(0, batch, batch);
        let weak = self.weak.predict(latents, ctx)?;
        Ok(noise_damped_cfg(weak, uncond, cond, self.strong.scale))
    }
}

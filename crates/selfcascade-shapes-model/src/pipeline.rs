//! Generating shapes-world images with the shapes model by every method of the paper — `direct`,
//! `attn-sf`, `scalecrafter`, `self-cascade` — through `selfcascade-sd`'s [`UNetSampling`], the code
//! path the Stable Diffusion pipeline uses: only the conditioning differs (label tokens instead of
//! text embeddings).

use crate::error::{Error, Result};
use crate::model::ShapesModel;
use crate::schedule::NoiseSchedule;
use burn::tensor::{backend::Backend, Tensor};
use selfcascade_core::scheduler::{SchedulerConfig, SchedulerKind};
use selfcascade_core::{CascadeOutput, NoiseSource, PerRowNoise, Progress, ScalePlan, Size};
use selfcascade_sd::pipeline::scalecrafter::ScaleCrafter;
use selfcascade_sd::pipeline::{
    FeatureInjection, GenerateRequest, Method, PromptEmbeds, UNetSampling,
};
use selfcascade_shapes::{chw_to_image, RgbImage, SceneLabel};
use std::ops::ControlFlow;

/// DDIM steps of the shapes experiments (the feasibility run's setting).
pub const DEFAULT_STEPS: usize = 20;
/// Classifier-free guidance scale of the shapes experiments.
pub const DEFAULT_GUIDANCE: f64 = 4.0;

/// The request the shapes experiments use at `width`×`height` with `method`: DDIM, 20 steps, guidance
/// [`DEFAULT_GUIDANCE`], strength 0.7.
pub fn default_request(width: usize, height: usize, method: Method) -> GenerateRequest {
    GenerateRequest {
        width,
        height,
        method,
        steps: DEFAULT_STEPS,
        guidance: DEFAULT_GUIDANCE,
        strength: 0.7,
        scheduler: Some(SchedulerKind::Ddim),
        eta: None,
        keep_stages: false,
    }
}

impl<B: Backend> ShapesModel<B> {
    /// The training size (square, `image_size` pixels a side).
    pub fn base_size(&self) -> Size {
        let s = self.config().image_size;
        Size::new(s, s)
    }

    /// Every side must be a multiple of this (the UNet's down-sampling factor).
    pub fn alignment(&self) -> usize {
        self.config().downsampling_factor()
    }

    /// The DDIM sampling config of the training schedule.
    pub fn scheduler_config(&self) -> Result<SchedulerConfig> {
        let mut cfg = NoiseSchedule::scaled_linear()?.scheduler_config();
        cfg.class_name = Some("DDIMScheduler".into());
        Ok(cfg)
    }

    /// ScaleCrafter's settings for this model at `target` and `steps` ([`ScaleCrafter::generic`]
    /// with the side ratio √(target pixels / base pixels)).
    pub fn scalecrafter(&self, target: Size, steps: usize) -> Result<ScaleCrafter> {
        let ratio = (target.pixels() as f64 / self.base_size().pixels() as f64).sqrt();
        Ok(ScaleCrafter::generic(
            self.config().block_out_channels.len(),
            ratio.max(1.0),
            steps,
        )?)
    }

    /// The stage plan of `request`.
    pub fn plan(&self, request: &GenerateRequest) -> Result<ScalePlan> {
        let cfg = self.scheduler_config()?;
        Ok(self.sampling(&cfg, None, None).plan(
            request.method,
            Size::new(request.width, request.height),
            self.alignment(),
        )?)
    }

    fn sampling<'a>(
        &'a self,
        scheduler_config: &'a SchedulerConfig,
        scalecrafter: Option<&'a ScaleCrafter>,
        feature_injection: Option<FeatureInjection<'a, B>>,
    ) -> UNetSampling<'a, B> {
        UNetSampling {
            unet: &self.unet,
            scheduler_config,
            base: self.base_size(),
            latent_scale: 1,
            scalecrafter,
            feature_injection,
        }
    }

    /// The conditioning of a batch: one label per row, the null label as the unconditional rows.
    pub fn embeds(&self, labels: &[SceneLabel]) -> PromptEmbeds<B> {
        let rows: Vec<Option<SceneLabel>> = labels.iter().map(|l| Some(*l)).collect();
        PromptEmbeds {
            positive: self.label_embedding.forward(&rows),
            negative: self.label_embedding.forward(&vec![None; labels.len()]),
            positive_pooled: None,
            negative_pooled: None,
            truncated: false,
        }
    }

    /// Samples a batch, one image per label, by `request.method`; returns the images in `[-1, 1]`
    /// `[N, 3, H, W]` (and the stages when `request.keep_stages`).
    pub fn sample(
        &self,
        labels: &[SceneLabel],
        request: &GenerateRequest,
        noise: &mut dyn NoiseSource<B, 4>,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<CascadeOutput<B>> {
        self.sample_with(labels, request, None, noise, progress)
    }

    /// [`Self::sample`] with the tuned method's feature upsamplers (needed by
    /// `Method::SelfCascadeTuned`, ignored by the other methods).
    pub fn sample_with(
        &self,
        labels: &[SceneLabel],
        request: &GenerateRequest,
        injection: Option<FeatureInjection<'_, B>>,
        noise: &mut dyn NoiseSource<B, 4>,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<CascadeOutput<B>> {
        if labels.is_empty() {
            return Err(Error::Config("no labels to generate".into()));
        }
        let plan = self.plan(request)?;
        let cfg = self.scheduler_config()?;
        let scalecrafter = match request.method {
            Method::ScaleCrafter => Some(self.scalecrafter(plan.target(), request.steps)?),
            _ => None,
        };
        let device = self.label_embedding.weight.val().device();
        Ok(self
            .sampling(&cfg, scalecrafter.as_ref(), injection)
            .sample(
                &self.embeds(labels),
                request,
                &plan,
                noise,
                &device,
                progress,
            )?)
    }

    /// Generates one image per (label, seed) pair: row i is the same image whatever else is in the
    /// batch ([`PerRowNoise`]).
    pub fn generate(
        &self,
        labels: &[SceneLabel],
        seeds: &[u64],
        request: &GenerateRequest,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Vec<RgbImage>> {
        self.generate_with(labels, seeds, request, None, progress)
    }

    /// [`Self::generate`] with the tuned method's feature upsamplers.
    pub fn generate_with(
        &self,
        labels: &[SceneLabel],
        seeds: &[u64],
        request: &GenerateRequest,
        injection: Option<FeatureInjection<'_, B>>,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<Vec<RgbImage>> {
        if labels.len() != seeds.len() {
            return Err(Error::Config(format!(
                "{} labels for {} seeds",
                labels.len(),
                seeds.len()
            )));
        }
        let out = self.sample_with(
            labels,
            request,
            injection,
            &mut PerRowNoise::new(seeds),
            progress,
        )?;
        to_images(out.latent)
    }
}

/// Converts model outputs `[N, 3, H, W]` in `[-1, 1]` to 8-bit images.
pub fn to_images<B: Backend>(x: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
    let [n, c, h, w] = x.dims();
    if c != 3 {
        return Err(Error::Config(format!("{c} channels; images need 3")));
    }
    let data = x
        .into_data()
        .to_vec::<f32>()
        .map_err(|e| Error::Config(format!("cannot read the images: {e:?}")))?;
    let plane = 3 * h * w;
    (0..n)
        .map(|i| {
            Ok(chw_to_image(
                &data[i * plane..(i + 1) * plane],
                w as u32,
                h as u32,
            )?)
        })
        .collect()
}

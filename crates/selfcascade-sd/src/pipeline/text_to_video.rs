//! Text-to-video at higher resolution with ModelScope text-to-video (diffusers' `TextToVideoSDPipeline`
//! folder layout): direct sampling, Attn-SF, the tuning-free self-cascade, whose stages resize every
//! frame of the previous stage's clean video latent (the frame count stays fixed) and re-noise it
//! (diffusers' `VideoToVideoSDPipeline` on latents), and the tuned self-cascade (feature upsamplers
//! applied per frame, with the time embedding repeated per frame).

use super::attn_sf::AttnSf;
use super::image::{to_rgb8, RgbImage};
use super::sampling::FeatureInjection;
use super::stable_diffusion::{
    encode_prompt_with, training_size, GenerateRequest, Method, PromptEmbeds,
};
use crate::clip::config::CLIPTextConfig;
use crate::clip::text_model::CLIPTextModel;
use crate::clip::tokenizer::ClipTokenizer;
use crate::error::{Error, Result};
use crate::lvdm::checkpoint::{
    clip_vit_l14_config, cond_stage_from, first_stage_from, kl_f8_config, open_ckpt,
};
use crate::lvdm::{LvdmConfig, LvdmUNet};
use crate::unet::{fold_frames, PivotInjection, UNet3DConditionModel, UNetHooks};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig, Tiling};
use burn::tensor::{backend::Backend, Tensor};
use selfcascade_core::scheduler::{self, PredictionType, SchedulerConfig};
use selfcascade_core::{
    CascadeOutput, ClassifierFreeGuidance, Denoiser, FeatureUpsampler, Interpolation, NoiseSource,
    Progress, ScalePlan, SelfCascadeConfig, SelfCascadeSampler, Size, StepContext,
};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// The denoiser of a text-to-video model.
#[derive(Debug, Clone)]
pub enum VideoUNet<B: Backend> {
    /// ModelScope text-to-video (diffusers' `UNet3DConditionModel`).
    ModelScope(Box<UNet3DConditionModel<B>>),
    /// LVDM (the paper's model), from a latent-diffusion checkpoint.
    Lvdm(Box<LvdmUNet<B>>),
}

impl<B: Backend> VideoUNet<B> {
    /// Latent channels in.
    pub fn in_channels(&self) -> usize {
        match self {
            Self::ModelScope(u) => u.config().in_channels,
            Self::Lvdm(u) => u.config().in_channels,
        }
    }

    /// Down-sampling steps (a latent side must be a multiple of 2^this).
    pub fn num_downsamplers(&self) -> usize {
        match self {
            Self::ModelScope(u) => u.config().num_upsamplers(),
            Self::Lvdm(u) => u.config().channel_mult.len().saturating_sub(1),
        }
    }

    /// The training latent size (ModelScope: `sample_size`; LVDM: 32, its `image_size`).
    fn sample_size(&self) -> Option<serde_json::Value> {
        match self {
            Self::ModelScope(u) => u.config().sample_size.clone(),
            Self::Lvdm(_) => Some(serde_json::Value::from(32)),
        }
    }

    /// The tuned variant's injection channels.
    pub fn injection_channels(&self) -> Vec<usize> {
        match self {
            Self::ModelScope(u) => u.injection_channels(),
            Self::Lvdm(u) => u.injection_channels(),
        }
    }

    /// Width of the time embedding the feature upsamplers get (one row per frame).
    pub fn time_embed_dim(&self) -> usize {
        match self {
            Self::ModelScope(u) => u.time_embed_dim(),
            Self::Lvdm(u) => u.time_embed_dim(),
        }
    }

    /// GroupNorm groups (for ResBlock upsamplers sized for this UNet).
    pub fn groups(&self) -> usize {
        match self {
            Self::ModelScope(u) => u.arch().groups,
            Self::Lvdm(u) => u.config().norm_num_groups,
        }
    }

    /// Errors unless `upsampler` fits this UNet's injection points.
    pub fn check_feature_upsampler(&self, upsampler: &dyn FeatureUpsampler<B>) -> Result<()> {
        match self {
            Self::ModelScope(u) => u.check_feature_upsampler(upsampler),
            Self::Lvdm(u) => u.check_feature_upsampler(upsampler),
        }
    }

    /// The prediction for `latents` `[B, C, T, h, w]` (LVDM takes no Attn-SF hook).
    pub fn forward(
        &self,
        latents: Tensor<B, 5>,
        timesteps: &[f64],
        context: Tensor<B, 3>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 5>> {
        match self {
            Self::ModelScope(u) => u.forward(latents, timesteps, context, hooks),
            Self::Lvdm(u) => u.forward(latents, timesteps, context, hooks),
        }
    }
}

/// The parts of an LVDM checkpoint and their settings (defaults: `lvdm_short`, SD v1's kl-f8 VAE, CLIP
/// ViT-L/14; a small test checkpoint gives its own).
#[derive(Debug, Clone)]
pub struct LvdmParts {
    /// The UNet.
    pub unet: LvdmConfig,
    /// The first-stage VAE.
    pub vae: AutoencoderKLConfig,
    /// The text encoder.
    pub text_encoder: CLIPTextConfig,
}

impl Default for LvdmParts {
    fn default() -> Self {
        Self {
            unet: LvdmConfig::lvdm_short(),
            vae: kl_f8_config(),
            text_encoder: clip_vit_l14_config(),
        }
    }
}

/// LVDM's noise schedule and sampler as diffusers' DDIM: betas linear in sqrt from 0.00085 to 0.012,
/// timesteps 1, 21, …, 981 for 50 steps, and the final step's "previous ᾱ" = ᾱ_0 (`set_alpha_to_one`
/// false), as LVDM's own DDIM sampler.
pub const LVDM_SCHEDULER: &str = r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 1000,
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": false,
    "set_alpha_to_one": false, "steps_offset": 1, "timestep_spacing": "leading",
    "prediction_type": "epsilon"}"#;

/// A loaded text-to-video model: a ModelScope folder (`unet/` holding a `UNet3DConditionModel`,
/// `scheduler/`, and optionally `vae/`, `text_encoder/`, `tokenizer/`), or an LVDM checkpoint with a
/// CLIP tokenizer folder.
pub struct TextToVideo<B: Backend> {
    /// The video UNet.
    pub unet: VideoUNet<B>,
    /// The VAE, applied frame by frame (absent when only latents are wanted).
    pub vae: Option<AutoencoderKL<B>>,
    /// The text encoder.
    pub text_encoder: Option<CLIPTextModel<B>>,
    /// The tokenizer.
    pub tokenizer: Option<ClipTokenizer>,
    /// `scheduler/scheduler_config.json`.
    pub scheduler_config: SchedulerConfig,
    /// The tuned method's feature upsamplers and their t_min.
    feature_upsampler: Option<(Box<dyn FeatureUpsampler<B>>, f64)>,
    folder: PathBuf,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for TextToVideo<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextToVideo")
            .field("folder", &self.folder)
            .finish()
    }
}

impl<B: Backend> TextToVideo<B> {
    /// Loads a diffusers text-to-video folder (e.g. `ali-vilab/text-to-video-ms-1.7b`): `unet/` and
    /// `scheduler/` are required, `vae/`, `text_encoder/` and `tokenizer/` are loaded when present.
    /// `variant` selects e.g. `fp16` weight files.
    pub fn load(dir: &Path, variant: Option<&str>, device: &B::Device) -> Result<Self> {
        for need in ["unet", "scheduler"] {
            if !dir.join(need).is_dir() {
                return Err(Error::Model(format!(
                    "{} has no `{need}/` folder; a text-to-video folder needs unet/ (a \
                     UNet3DConditionModel) and scheduler/, and vae/, text_encoder/, tokenizer/ to make \
                     videos from prompts",
                    dir.display()
                )));
            }
        }
        let opt = |name: &str| Some(dir.join(name)).filter(|p| p.is_dir());
        Ok(Self {
            unet: VideoUNet::ModelScope(Box::new(UNet3DConditionModel::load(
                &dir.join("unet"),
                variant,
                device,
            )?)),
            vae: opt("vae")
                .map(|p| AutoencoderKL::load(&p, variant, device))
                .transpose()?,
            text_encoder: opt("text_encoder")
                .map(|p| CLIPTextModel::load(&p, variant, device))
                .transpose()?,
            tokenizer: opt("tokenizer")
                .map(|p| ClipTokenizer::from_dir(&p))
                .transpose()?,
            scheduler_config: SchedulerConfig::from_file(
                dir.join("scheduler").join("scheduler_config.json"),
            )?,
            feature_upsampler: None,
            folder: dir.to_path_buf(),
            device: device.clone(),
        })
    }

    /// Loads an LVDM latent-diffusion checkpoint (`.ckpt`: UNet, first-stage VAE and text encoder,
    /// with `parts`' settings) and the CLIP tokenizer in `tokenizer` (CLIP ViT-L/14's, e.g. SD 1.5's
    /// `tokenizer/` folder); the scheduler is [`LVDM_SCHEDULER`].
    pub fn load_lvdm(
        ckpt: &Path,
        tokenizer: &Path,
        parts: &LvdmParts,
        device: &B::Device,
    ) -> Result<Self> {
        // Read once; each model takes its tensors from a clone sharing the bytes.
        let store = open_ckpt(ckpt)?;
        Ok(Self {
            unet: VideoUNet::Lvdm(Box::new(LvdmUNet::from_ckpt(
                store.clone(),
                &parts.unet,
                device,
            )?)),
            vae: Some(first_stage_from(store.clone(), ckpt, &parts.vae, device)?),
            text_encoder: Some(cond_stage_from(store, ckpt, &parts.text_encoder, device)?),
            tokenizer: Some(ClipTokenizer::from_dir(tokenizer)?),
            scheduler_config: SchedulerConfig::from_json(LVDM_SCHEDULER)?,
            feature_upsampler: None,
            folder: ckpt.to_path_buf(),
            device: device.clone(),
        })
    }

    /// Attaches the feature upsamplers φ_n that [`Method::SelfCascadeTuned`] injects (per frame) while
    /// the timestep t > `t_min`. Errors, leaving the pipeline unchanged, when their injection points or
    /// channels do not match this UNet's or `t_min` is not finite.
    pub fn set_feature_upsampler(
        &mut self,
        upsampler: Box<dyn FeatureUpsampler<B>>,
        t_min: f64,
    ) -> Result<()> {
        if !t_min.is_finite() {
            return Err(Error::Input(format!(
                "feature injection t_min {t_min} is not finite"
            )));
        }
        self.unet.check_feature_upsampler(upsampler.as_ref())?;
        self.feature_upsampler = Some((upsampler, t_min));
        Ok(())
    }

    /// The folder the pipeline was loaded from.
    pub fn folder(&self) -> &Path {
        &self.folder
    }

    /// Pixels per latent cell (8 for SD's VAE; from the VAE when present, else 8).
    pub fn vae_scale_factor(&self) -> usize {
        self.vae.as_ref().map(|v| v.downsample_factor).unwrap_or(8)
    }

    /// Every side must be a multiple of this: VAE factor × the UNet's total down-sampling.
    pub fn alignment(&self) -> usize {
        self.vae_scale_factor() << self.unet.num_downsamplers()
    }

    /// The training frame size: UNet `sample_size` × VAE factor (256² for ModelScope).
    pub fn base_size(&self) -> Size {
        training_size(self.unet.sample_size().as_ref(), self.vae_scale_factor())
    }

    /// Tokenizes and encodes a prompt and a negative prompt (the last hidden state, as diffusers).
    pub fn encode_prompt(&self, prompt: &str, negative_prompt: &str) -> Result<PromptEmbeds<B>> {
        match (&self.tokenizer, &self.text_encoder) {
            (Some(t), Some(e)) => encode_prompt_with(t, e, prompt, negative_prompt),
            _ => Err(Error::Model(format!(
                "{} needs tokenizer/ and text_encoder/ to encode prompts",
                self.folder.display()
            ))),
        }
    }

    /// Frees the text encoder once the prompt is encoded.
    pub fn release_text_encoder(&mut self) {
        self.text_encoder = None;
    }

    /// The stage plan of `request`: self-cascade stages from the base frame size, or one stage.
    /// Methods other than direct, Attn-SF and the tuning-free self-cascade are errors.
    pub fn plan(&self, request: &GenerateRequest) -> Result<ScalePlan> {
        let target = Size::new(request.width, request.height);
        let align = self.alignment();
        if request.method == Method::AttnSf && matches!(self.unet, VideoUNet::Lvdm(_)) {
            return Err(Error::Input(
                "attn-sf is not available for LVDM (available: direct, self-cascade, self-cascade-tuned)"
                    .into(),
            ));
        }
        match request.method {
            Method::SelfCascade | Method::SelfCascadeTuned => {
                Ok(ScalePlan::new(self.base_size(), target, align)?)
            }
            Method::Direct | Method::AttnSf => {
                ScalePlan::new(Size::new(align, align), target, align)?;
                Ok(ScalePlan::single(target))
            }
            other => Err(Error::Input(format!(
                "method `{}` is not available for video (available: direct, attn-sf, self-cascade, \
                 self-cascade-tuned)",
                other.name()
            ))),
        }
    }

    /// Generates video latents `[1, C, frames, h, w]` for `request` from encoded text, reporting
    /// progress per step. `noise` gives 5-D noise (e.g. [`selfcascade_core::SeededNoise`]).
    pub fn generate_latents(
        &self,
        embeds: &PromptEmbeds<B>,
        request: &GenerateRequest,
        frames: usize,
        noise: &mut dyn NoiseSource<B, 5>,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<CascadeOutput<B, 5>> {
        let plan = self.plan(request)?;
        self.sample_plan(embeds, request, &plan, frames, noise, progress)
    }

    /// Runs `request` over explicit stage sizes `plan` (its last stage is the target).
    pub fn sample_plan(
        &self,
        embeds: &PromptEmbeds<B>,
        request: &GenerateRequest,
        plan: &ScalePlan,
        frames: usize,
        noise: &mut dyn NoiseSource<B, 5>,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<CascadeOutput<B, 5>> {
        self.plan(request)?;
        if frames == 0 {
            return Err(Error::Input("a video needs at least one frame".into()));
        }
        let batch = embeds.positive.dims()[0];
        if batch == 0 || embeds.negative.dims()[0] != batch {
            return Err(Error::Input(format!(
                "conditioning of {batch} rows with {} unconditional rows; expected the same positive number",
                embeds.negative.dims()[0]
            )));
        }
        let mut sched = scheduler::build::<B, 5>(
            &self.scheduler_config,
            request.scheduler,
            request.eta.unwrap_or(0.0),
        )?;
        let injection = match (request.method, &self.feature_upsampler) {
            (Method::SelfCascadeTuned, Some((up, t_min))) => Some(FeatureInjection {
                upsampler: up.as_ref(),
                t_min: *t_min,
            }),
            (Method::SelfCascadeTuned, None) => {
                return Err(Error::Input(
                    "the self-cascade-tuned method needs feature upsamplers trained for this video \
                     UNet (TextToVideo::set_feature_upsampler), or use the tuning-free `self-cascade`"
                        .into(),
                ))
            }
            _ => None,
        };
        let cfg = request.guidance > 1.0;
        let denoiser = VideoDenoiser {
            unet: &self.unet,
            context: if cfg {
                Tensor::cat(vec![embeds.negative.clone(), embeds.positive.clone()], 0)
            } else {
                embeds.positive.clone()
            },
            prediction: sched.prediction_type(),
            attn_sf: (request.method == Method::AttnSf)
                .then(|| AttnSf::new(self.base_size().pixels(), plan.target().pixels())),
            injection,
        };
        let mut sampler = SelfCascadeSampler::<B, 5> {
            scheduler: sched.as_mut(),
            pivot_upsampler: &Interpolation::Bicubic,
            config: SelfCascadeConfig {
                steps: request.steps,
                strength: request.strength,
                latent_scale: self.vae_scale_factor(),
                latent_channels: self.unet.in_channels(),
                batch,
                frames,
                keep_stages: request.keep_stages,
                check_finite: true,
            },
        };
        let out = if cfg {
            let guided = ClassifierFreeGuidance::new(denoiser, request.guidance);
            sampler.sample(plan, &guided, noise, &self.device, progress)
        } else {
            sampler.sample(plan, &denoiser, noise, &self.device, progress)
        };
        Ok(out?)
    }

    /// Decodes scaled video latents `[B, C, T, h, w]` frame by frame, `frame_batch` frames per VAE call
    /// (diffusers' `decode_chunk_size`; each frame is independent, so the result does not depend on it).
    /// Returns the frames of each video.
    pub fn decode(&self, latent: Tensor<B, 5>, frame_batch: usize) -> Result<Vec<Vec<RgbImage>>> {
        let vae = self.vae.as_ref().ok_or_else(|| {
            Error::Model(format!(
                "{} has no vae/ folder: cannot decode latents to frames",
                self.folder.display()
            ))
        })?;
        decode_video(vae, latent, frame_batch, &vae.default_tiling())
    }

    /// The device the models live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }
}

/// Decodes scaled video latents `[B, C, T, h, w]` with `vae`, `frame_batch` frames per call, each
/// frame tiled with `tiling` when it is larger than a tile (diffusers' pipeline never tiles; frames
/// up to the VAE's `sample_size` decode whole either way).
pub fn decode_video<B: Backend>(
    vae: &AutoencoderKL<B>,
    latent: Tensor<B, 5>,
    frame_batch: usize,
    tiling: &Tiling,
) -> Result<Vec<Vec<RgbImage>>> {
    let [b, c, t, h, w] = latent.dims();
    let frame_batch = frame_batch.max(1);
    let mut videos = Vec::with_capacity(b);
    for v in 0..b {
        // [C, T, h, w] → [T, C, h, w]
        let frames = latent
            .clone()
            .narrow(0, v, 1)
            .reshape([c, t, h, w])
            .swap_dims(0, 1);
        let mut out = Vec::with_capacity(t);
        for start in (0..t).step_by(frame_batch) {
            let n = frame_batch.min(t - start);
            let chunk = frames.clone().narrow(0, start, n);
            let images = vae.decode_auto(chunk.div_scalar(vae.scaling_factor()), tiling)?;
            out.extend(to_rgb8(images)?);
        }
        videos.push(out);
    }
    Ok(videos)
}

/// The video UNet as a [`Denoiser`] over `[B, C, T, h, w]`, with the text conditioning bound.
struct VideoDenoiser<'a, B: Backend> {
    unet: &'a VideoUNet<B>,
    /// `[n, 77, D]`: n = 2 (uncond, cond) under guidance, 1 otherwise.
    context: Tensor<B, 3>,
    prediction: PredictionType,
    attn_sf: Option<AttnSf>,
    /// The tuned method's injection (stages r ≥ 1, t > t_min), as for images.
    injection: Option<FeatureInjection<'a, B>>,
}

impl<B: Backend> Denoiser<B, 5> for VideoDenoiser<'_, B> {
    fn prediction_type(&self) -> PredictionType {
        self.prediction
    }

    fn predict(
        &self,
        latents: Tensor<B, 5>,
        ctx: &StepContext<B, 5>,
    ) -> selfcascade_core::Result<Tensor<B, 5>> {
        let batch = latents.dims()[0];
        let [rows, m, d] = self.context.dims();
        if rows == 0 || !batch.is_multiple_of(rows) {
            return Err(selfcascade_core::Error::Model(format!(
                "latent batch {batch} is not a multiple of the text batch {rows}"
            )));
        }
        let per = batch / rows;
        let context = self
            .context
            .clone()
            .unsqueeze_dim::<4>(1)
            .repeat_dim(1, per)
            .reshape([batch, m, d]);
        let attn = self
            .attn_sf
            .map(|rule| move |tokens: usize| rule.scale(tokens));
        // The pivot video as the sampler hands it over, frames folded into the batch for the UNet.
        let pivot = match (&self.injection, &ctx.pivot) {
            (Some(fi), Some(latent)) if fi.active_at(ctx.timestep) => Some(PivotInjection {
                latent: fold_frames(latent.clone()),
                upsampler: fi.upsampler,
            }),
            _ => None,
        };
        let hooks = UNetHooks {
            self_attention_scale: attn.as_ref().map(|f| f as &dyn Fn(usize) -> f64),
            pivot,
            ..Default::default()
        };
        Ok(self
            .unet
            .forward(latents, &[ctx.timestep], context, &hooks)?)
    }
}

//! Text-to-image at higher resolution with Stable Diffusion 1.x / 2.x / SDXL: the self-cascade method
//! (tuning-free, and tuned with feature upsamplers) and the paper's baselines, on one
//! `StableDiffusion` pipeline.

use super::image::{to_rgb8, RgbImage};
use super::sampling::{FeatureInjection, UNetSampling};
use super::scalecrafter::ScaleCrafter;
use crate::clip::text_model::{CLIPTextModel, CLIPTextModelWithProjection};
use crate::clip::tokenizer::ClipTokenizer;
use crate::error::{Error, Result};
use crate::unet::UNet2DConditionModel;
use crate::vae::AutoencoderKL;
use burn::tensor::{backend::Backend, Tensor};
use selfcascade_core::scheduler::{SchedulerConfig, SchedulerKind};
use selfcascade_core::{CascadeOutput, FeatureUpsampler, NoiseSource, Progress, ScalePlan, Size};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// How the high-resolution image is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Sample directly at the target size ("Original" in the paper).
    Direct,
    /// Direct sampling with Attn-SF self-attention scaling.
    AttnSf,
    /// Direct sampling with ScaleCrafter re-dilation (and noise-damped CFG at 2048²).
    ScaleCrafter,
    /// The tuning-free self-cascade: pivot-guided noise re-schedule across stages (Algorithm 2).
    SelfCascade,
    /// The tuned self-cascade: the stages of [`Method::SelfCascade`], with trained feature upsamplers
    /// φ_n injecting the previous stage's features in stages r ≥ 1 (Algorithm 1; see
    /// [`super::FeatureInjection`]). Needs upsamplers attached
    /// ([`StableDiffusion::set_feature_upsampler`], or [`super::UNetSampling::feature_injection`]).
    SelfCascadeTuned,
}

impl Method {
    /// Every method, in the paper's table order.
    pub const ALL: [Method; 5] = [
        Method::Direct,
        Method::AttnSf,
        Method::ScaleCrafter,
        Method::SelfCascade,
        Method::SelfCascadeTuned,
    ];

    /// The methods that need no trained parameters (every method but [`Method::SelfCascadeTuned`]).
    pub const TUNING_FREE: [Method; 4] = [
        Method::Direct,
        Method::AttnSf,
        Method::ScaleCrafter,
        Method::SelfCascade,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Direct => "direct",
            Method::AttnSf => "attn-sf",
            Method::ScaleCrafter => "scalecrafter",
            Method::SelfCascade => "self-cascade",
            Method::SelfCascadeTuned => "self-cascade-tuned",
        }
    }

    /// Whether the method runs in self-cascade stages (base size first, then ×2 per side per stage).
    pub fn is_cascade(self) -> bool {
        matches!(self, Method::SelfCascade | Method::SelfCascadeTuned)
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                Error::Input(format!(
                    "unknown method `{s}`; expected one of: {}",
                    Method::ALL.map(|m| m.name()).join(", ")
                ))
            })
    }
}

/// Text conditioning, already encoded. With guidance, `negative` holds the unconditional rows.
#[derive(Debug, Clone)]
pub struct PromptEmbeds<B: Backend> {
    /// `[1, 77, D]` for the prompt.
    pub positive: Tensor<B, 3>,
    /// `[1, 77, D]` for the negative prompt (used when guidance > 1).
    pub negative: Tensor<B, 3>,
    /// SDXL: pooled `[1, P]` of the prompt.
    pub positive_pooled: Option<Tensor<B, 2>>,
    /// SDXL: pooled `[1, P]` of the negative prompt.
    pub negative_pooled: Option<Tensor<B, 2>>,
    /// Whether the prompt had to be truncated to the tokenizer's length.
    pub truncated: bool,
}

/// One generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    /// Target width in pixels.
    pub width: usize,
    /// Target height in pixels.
    pub height: usize,
    /// Method.
    pub method: Method,
    /// Inference steps of the full schedule (50 in the paper).
    pub steps: usize,
    /// Classifier-free guidance scale w (≤ 1 skips the unconditional pass).
    pub guidance: f64,
    /// Re-noising strength of self-cascade stages r ≥ 1 (0.7 in the paper).
    pub strength: f64,
    /// Scheduler to build from the folder's config (default: the config's class; PNDM configs need one).
    pub scheduler: Option<SchedulerKind>,
    /// DDIM η; `None` = the method's published default (1.0 for ScaleCrafter with DDIM, else 0).
    pub eta: Option<f64>,
    /// Keep every stage's clean latent.
    pub keep_stages: bool,
}

impl Default for GenerateRequest {
    fn default() -> Self {
        Self {
            width: 1024,
            height: 1024,
            method: Method::SelfCascade,
            steps: 50,
            guidance: 7.5,
            strength: 0.7,
            scheduler: None,
            eta: None,
            keep_stages: false,
        }
    }
}

/// A loaded diffusers pipeline folder.
pub struct StableDiffusion<B: Backend> {
    /// The denoising UNet.
    pub unet: UNet2DConditionModel<B>,
    /// The VAE (absent when only latents are wanted).
    pub vae: Option<AutoencoderKL<B>>,
    /// First text encoder.
    pub text_encoder: Option<CLIPTextModel<B>>,
    /// SDXL's second text encoder.
    pub text_encoder_2: Option<CLIPTextModelWithProjection<B>>,
    /// First tokenizer.
    pub tokenizer: Option<ClipTokenizer>,
    /// SDXL's second tokenizer.
    pub tokenizer_2: Option<ClipTokenizer>,
    /// `scheduler/scheduler_config.json`.
    pub scheduler_config: SchedulerConfig,
    /// SDXL: zero negative embeddings for an empty negative prompt (`force_zeros_for_empty_prompt`).
    pub force_zeros_for_empty_prompt: bool,
    /// The tuned method's feature upsamplers and their t_min (see [`Self::set_feature_upsampler`]).
    feature_upsampler: Option<(Box<dyn FeatureUpsampler<B>>, f64)>,
    folder: PathBuf,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for StableDiffusion<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StableDiffusion")
            .field("folder", &self.folder)
            .finish()
    }
}

/// The components a diffusers Stable Diffusion folder may hold.
pub const COMPONENTS: [&str; 7] = [
    "unet",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "tokenizer",
    "tokenizer_2",
    "scheduler",
];

impl<B: Backend> StableDiffusion<B> {
    /// Loads a diffusers pipeline folder (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
    /// `tokenizer/`, `scheduler/`, and for SDXL `text_encoder_2/`, `tokenizer_2/`). Only `unet/` and
    /// `scheduler/` are required; the others are loaded when present. `variant` selects e.g. `fp16`
    /// weight files.
    pub fn load(dir: &Path, variant: Option<&str>, device: &B::Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Model(format!(
                "model folder {} does not exist; expected a diffusers pipeline folder with {}",
                dir.display(),
                COMPONENTS.join("/, ") + "/"
            )));
        }
        let need = |name: &str| -> Result<PathBuf> {
            let p = dir.join(name);
            if p.is_dir() {
                Ok(p)
            } else {
                let present: Vec<String> = COMPONENTS
                    .iter()
                    .filter(|c| dir.join(c).is_dir())
                    .map(|c| format!("{c}/"))
                    .collect();
                Err(Error::Model(format!(
                    "{} has no `{name}/` folder (found: {}); a diffusers Stable Diffusion folder needs unet/ and scheduler/, \
                     and vae/, text_encoder/, tokenizer/ to make images from prompts",
                    dir.display(),
                    if present.is_empty() { "nothing".to_string() } else { present.join(", ") }
                )))
            }
        };
        let unet = UNet2DConditionModel::load(&need("unet")?, variant, device)?;
        let scheduler_config =
            SchedulerConfig::from_file(need("scheduler")?.join("scheduler_config.json"))?;
        let opt = |name: &str| Some(dir.join(name)).filter(|p| p.is_dir());
        let vae = opt("vae")
            .map(|p| AutoencoderKL::load(&p, variant, device))
            .transpose()?;
        let text_encoder = opt("text_encoder")
            .map(|p| CLIPTextModel::load(&p, variant, device))
            .transpose()?;
        let text_encoder_2 = opt("text_encoder_2")
            .map(|p| CLIPTextModelWithProjection::load(&p, variant, device))
            .transpose()?;
        let tokenizer = opt("tokenizer")
            .map(|p| ClipTokenizer::from_dir(&p))
            .transpose()?;
        let tokenizer_2 = opt("tokenizer_2")
            .map(|p| ClipTokenizer::from_dir(&p))
            .transpose()?;
        let force_zeros_for_empty_prompt = std::fs::read_to_string(dir.join("model_index.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v.get("force_zeros_for_empty_prompt")
                    .and_then(|b| b.as_bool())
            })
            .unwrap_or(text_encoder_2.is_some());
        Ok(Self {
            unet,
            vae,
            text_encoder,
            text_encoder_2,
            tokenizer,
            tokenizer_2,
            scheduler_config,
            force_zeros_for_empty_prompt,
            feature_upsampler: None,
            folder: dir.to_path_buf(),
            device: device.clone(),
        })
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
        self.vae_scale_factor() << self.unet.config().num_upsamplers()
    }

    /// The training size: UNet `sample_size` × VAE factor (512² for SD 2.1 base, 1024² for SDXL).
    pub fn base_size(&self) -> Size {
        training_size(
            self.unet.config().sample_size.as_ref(),
            self.vae_scale_factor(),
        )
    }

    /// Whether this is an SDXL pipeline (text_time conditioning).
    pub fn is_sdxl(&self) -> bool {
        self.unet.arch().text_time.is_some()
    }

    /// Tokenizes and encodes a prompt and a negative prompt (diffusers' `encode_prompt`).
    pub fn encode_prompt(&self, prompt: &str, negative_prompt: &str) -> Result<PromptEmbeds<B>> {
        let (tok, te) = match (&self.tokenizer, &self.text_encoder) {
            (Some(t), Some(e)) => (t, e),
            _ => {
                return Err(Error::Model(format!(
                    "{} needs tokenizer/ and text_encoder/ to encode prompts",
                    self.folder.display()
                )))
            }
        };
        if !self.is_sdxl() {
            return encode_prompt_with(tok, te, prompt, negative_prompt);
        }
        let mut truncated = false;
        let mut ids = |t: &ClipTokenizer, text: &str| -> Result<Vec<u32>> {
            let e = t.encode_with_info(text)?;
            truncated |= e.truncated;
            Ok(e.ids)
        };
        let (tok2, te2) = match (&self.tokenizer_2, &self.text_encoder_2) {
            (Some(t), Some(e)) => (t, e),
            _ => {
                return Err(Error::Model(format!(
                    "{} is an SDXL model but has no tokenizer_2/ or text_encoder_2/",
                    self.folder.display()
                )))
            }
        };
        let rows1 = [ids(tok, prompt)?, ids(tok, negative_prompt)?];
        let rows2 = [ids(tok2, prompt)?, ids(tok2, negative_prompt)?];
        let o1 = te.forward(&rows1)?;
        let o2 = te2.forward(&rows2)?;
        let embeds = Tensor::cat(
            vec![o1.penultimate_hidden_state, o2.penultimate_hidden_state],
            2,
        );
        let pooled = o2.pooled;
        let mut negative = embeds.clone().narrow(0, 1, 1);
        let mut negative_pooled = pooled.clone().narrow(0, 1, 1);
        if self.force_zeros_for_empty_prompt && negative_prompt.is_empty() {
            negative = negative.zeros_like();
            negative_pooled = negative_pooled.zeros_like();
        }
        Ok(PromptEmbeds {
            positive: embeds.narrow(0, 0, 1),
            negative,
            positive_pooled: Some(pooled.clone().narrow(0, 0, 1)),
            negative_pooled: Some(negative_pooled),
            truncated,
        })
    }
}

impl<B: Backend> StableDiffusion<B> {
    /// The device the models live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Attaches the feature upsamplers φ_n that [`Method::SelfCascadeTuned`] injects while the
    /// timestep t > `t_min` ([`FeatureInjection::DEFAULT_T_MIN`] = 100 as the release; at t ≤ t_min the
    /// plain UNet runs). Errors, leaving the pipeline unchanged, when the upsampler's points or
    /// channels do not match this UNet's injection points or `t_min` is not finite.
    pub fn set_feature_upsampler(
        &mut self,
        upsampler: Box<dyn FeatureUpsampler<B>>,
        t_min: f64,
    ) -> Result<()> {
        FeatureInjection::checked(upsampler.as_ref(), t_min, &self.unet)?;
        self.feature_upsampler = Some((upsampler, t_min));
        Ok(())
    }

    /// Detaches and returns the feature upsamplers.
    pub fn take_feature_upsampler(&mut self) -> Option<Box<dyn FeatureUpsampler<B>>> {
        self.feature_upsampler.take().map(|(u, _)| u)
    }

    /// The attached feature upsamplers, if any.
    pub fn feature_upsampler(&self) -> Option<&dyn FeatureUpsampler<B>> {
        self.feature_upsampler.as_ref().map(|(u, _)| u.as_ref())
    }

    /// The stage plan of `request` (self-cascade stages for the self-cascade methods, one stage for
    /// every other method).
    pub fn plan(&self, request: &GenerateRequest) -> Result<ScalePlan> {
        self.sampling(None).plan(
            request.method,
            Size::new(request.width, request.height),
            self.alignment(),
        )
    }

    fn sampling<'a>(&'a self, scalecrafter: Option<&'a ScaleCrafter>) -> UNetSampling<'a, B> {
        UNetSampling {
            unet: &self.unet,
            scheduler_config: &self.scheduler_config,
            base: self.base_size(),
            latent_scale: self.vae_scale_factor(),
            scalecrafter,
            feature_injection: self
                .feature_upsampler
                .as_ref()
                .map(|(u, t_min)| FeatureInjection {
                    upsampler: u.as_ref(),
                    t_min: *t_min,
                }),
        }
    }

    /// Generates latents for `request` from encoded text, reporting progress per step.
    pub fn generate_latents(
        &self,
        embeds: &PromptEmbeds<B>,
        request: &GenerateRequest,
        noise: &mut dyn NoiseSource<B, 4>,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<CascadeOutput<B>> {
        let plan = self.plan(request)?;
        self.sample_plan(embeds, request, &plan, noise, progress)
    }

    /// Runs `request` over explicit stage sizes `plan` (its last stage is the target; the request's
    /// width and height are not used).
    pub fn sample_plan(
        &self,
        embeds: &PromptEmbeds<B>,
        request: &GenerateRequest,
        plan: &ScalePlan,
        noise: &mut dyn NoiseSource<B, 4>,
        progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
    ) -> Result<CascadeOutput<B>> {
        let scalecrafter = match request.method {
            Method::ScaleCrafter => Some(ScaleCrafter::sd21(plan.target())?),
            _ => None,
        };
        let sampling = self.sampling(scalecrafter.as_ref());
        if self.is_sdxl() && embeds.positive_pooled.is_none() {
            return Err(Error::Input("SDXL needs pooled text embeddings".into()));
        }
        sampling.sample(embeds, request, plan, noise, &self.device, progress)
    }

    /// Decodes scaled latents (as the UNet sees them) to images, tiled when larger than a VAE tile.
    pub fn decode(&self, latent: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
        let vae = self.vae.as_ref().ok_or_else(|| self.no_vae())?;
        decode_latents(vae, latent)
    }

    /// Frees the text encoders: a one-shot generation needs only the UNet and the VAE once the prompt
    /// is encoded (1.4 GB less for SD 2.1 in f32). [`Self::encode_prompt`] errors afterwards.
    pub fn release_text_encoders(&mut self) {
        self.text_encoder = None;
        self.text_encoder_2 = None;
    }

    /// The VAE alone, freeing everything else (the UNet's weights before decoding a large image); decode
    /// with [`decode_latents`].
    pub fn into_vae(self) -> Result<AutoencoderKL<B>> {
        let error = self.no_vae();
        self.vae.ok_or(error)
    }

    fn no_vae(&self) -> Error {
        Error::Model(format!(
            "{} has no vae/ folder: cannot decode latents to images",
            self.folder.display()
        ))
    }
}

/// A UNet config's `sample_size` (one side, or `[h, w]`; 64 when absent) × the VAE factor, in pixels.
pub(crate) fn training_size(sample_size: Option<&serde_json::Value>, vae_factor: usize) -> Size {
    let (h, w) = match sample_size {
        Some(serde_json::Value::Number(n)) => {
            let n = n.as_u64().unwrap_or(64) as usize;
            (n, n)
        }
        Some(serde_json::Value::Array(a)) if a.len() == 2 => {
            let g = |i: usize| a[i].as_u64().unwrap_or(64) as usize;
            (g(0), g(1))
        }
        _ => (64, 64),
    };
    Size::new(w * vae_factor, h * vae_factor)
}

/// A prompt and a negative prompt through one tokenizer and text encoder, conditioning on the last
/// hidden state (SD 1.x / 2.x and ModelScope text-to-video's `encode_prompt`).
pub(crate) fn encode_prompt_with<B: Backend>(
    tokenizer: &ClipTokenizer,
    text_encoder: &CLIPTextModel<B>,
    prompt: &str,
    negative_prompt: &str,
) -> Result<PromptEmbeds<B>> {
    let p = tokenizer.encode_with_info(prompt)?;
    let n = tokenizer.encode_with_info(negative_prompt)?;
    let truncated = p.truncated || n.truncated;
    let h = text_encoder.forward(&[p.ids, n.ids])?.last_hidden_state;
    let [_, m, d] = h.dims();
    Ok(PromptEmbeds {
        positive: h.clone().narrow(0, 0, 1).reshape([1, m, d]),
        negative: h.narrow(0, 1, 1).reshape([1, m, d]),
        positive_pooled: None,
        negative_pooled: None,
        truncated,
    })
}

/// Decodes scaled latents (as the UNet sees them) to images with `vae`, tiled when larger than a VAE
/// tile.
pub fn decode_latents<B: Backend>(
    vae: &AutoencoderKL<B>,
    latent: Tensor<B, 4>,
) -> Result<Vec<RgbImage>> {
    let image = vae.decode_auto(
        latent.div_scalar(vae.scaling_factor()),
        &vae.default_tiling(),
    )?;
    to_rgb8(image)
}

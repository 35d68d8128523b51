//! `selfcascade generate`: a prompt in, a high-resolution PNG out.

use crate::backend::{dispatch, BackendJob, DeviceArg, DtypeArg};
use crate::output::write_png;
use crate::tensors::{Inputs, Outputs};
use crate::CliResult;
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use selfcascade_core::scheduler::SchedulerKind;
use selfcascade_core::FeatureUpsampler;
use selfcascade_core::{
    CascadeOutput, InjectedNoise, NoiseSource, Progress, ScalePlan, SeededNoise,
};
use selfcascade_sd::pipeline::{decode_latents, GenerateRequest, Method, StableDiffusion};
use selfcascade_sd::unet::UNet2DConditionModel;
use selfcascade_sd::upsampler::{
    LightUpsampler, LightUpsamplerConfig, ResBlockUpsampler, ResBlockUpsamplerConfig,
};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `selfcascade generate`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// A diffusers Stable Diffusion folder, or a Hugging Face repo id (e.g.
    /// stabilityai/stable-diffusion-2-1-base) already in the local Hugging Face cache ($HF_HOME/hub).
    /// Without it, the embedded shapes model draws captions like "a red circle on a blue background".
    #[arg(long)]
    pub(crate) model: Option<PathBuf>,
    /// What to draw.
    #[arg(long)]
    pub(crate) prompt: String,
    /// What to avoid (used with guidance > 1).
    #[arg(long, default_value = "")]
    pub(crate) negative_prompt: String,
    /// Width in pixels (a multiple of the model's alignment: 64 for SD, 4 for the shapes model;
    /// default 1024, 128 for the shapes model).
    #[arg(long)]
    pub(crate) width: Option<usize>,
    /// Height in pixels (default as the width).
    #[arg(long)]
    pub(crate) height: Option<usize>,
    /// direct | attn-sf | scalecrafter | self-cascade | self-cascade-tuned (needs --upsamplers).
    #[arg(long, default_value = "self-cascade")]
    pub(crate) method: String,
    /// Feature upsamplers of the tuned method: the released `upsampler_only.pth` (ResBlock upsamplers),
    /// or a safetensors file of ResBlock or light upsamplers.
    #[arg(long)]
    pub(crate) upsamplers: Option<PathBuf>,
    /// The tuned method injects features while the timestep t > t_min.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) t_min: f64,
    /// Inference steps of the full schedule (default 50; 20 for the shapes model).
    #[arg(long)]
    pub(crate) steps: Option<usize>,
    /// Classifier-free guidance scale, ≤ 1 disables guidance (default 7.5; 4 for the shapes model).
    #[arg(long)]
    pub(crate) guidance: Option<f64>,
    /// Re-noising strength of the later self-cascade stages.
    #[arg(long, default_value_t = 0.7)]
    pub(crate) strength: f64,
    /// ddim | ddpm | euler (default: the model's scheduler config; SD 2.1's PNDM config uses ddim).
    #[arg(long)]
    pub(crate) scheduler: Option<String>,
    /// DDIM η (default: 1.0 for scalecrafter, 0 otherwise).
    #[arg(long)]
    pub(crate) eta: Option<f64>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub(crate) device: DeviceArg,
    /// f32, f16 or bf16 (half precision on GPUs only).
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub(crate) dtype: DtypeArg,
    /// Weight variant to load (e.g. fp16 for `*.fp16.safetensors`).
    #[arg(long)]
    pub(crate) variant: Option<String>,
    /// Output PNG.
    #[arg(long, default_value = "out.png")]
    pub(crate) out: PathBuf,
    /// Also write a PNG per stage (OUT-stage0.png, …).
    #[arg(long)]
    pub(crate) save_stages: bool,
    /// Initial noise per stage from a safetensors file (tensors stage0, stage1, …) instead of the seed.
    #[arg(long)]
    pub(crate) noise: Option<PathBuf>,
    /// Write each stage's clean latent (scaled, as the UNet sees it) to a safetensors file.
    #[arg(long)]
    pub(crate) save_latents: Option<PathBuf>,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Print the seconds spent loading, encoding the prompt, sampling and decoding as one JSON line on
    /// standard error.
    #[arg(long)]
    pub(crate) timings: bool,
}

/// Runs `selfcascade generate`.
pub fn run(args: GenerateArgs) -> CliResult {
    let method: Method = args
        .method
        .parse()
        .map_err(|e: selfcascade_sd::Error| e.to_string())?;
    let scheduler: Option<SchedulerKind> = args
        .scheduler
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: selfcascade_core::Error| e.to_string())?;
    check_writable(&args.out)?;
    let mut args = args;
    args.model = args
        .model
        .as_deref()
        .map(|m| resolve_model(m, args.variant.as_deref()))
        .transpose()?;
    let job = Job {
        args: args.clone(),
        method,
        scheduler,
    };
    dispatch(args.device, args.dtype, job)
}

/// A folder as given, or a Hub repo id (`org/name`) resolved to its snapshot in the local Hugging Face
/// cache; a repo that is not cached is downloaded (its configs, tokenizers and safetensors weights
/// only) unless `HF_HUB_OFFLINE=1` or the build has no `download` feature.
pub(crate) fn resolve_model(model: &Path, variant: Option<&str>) -> CliResult<PathBuf> {
    if model.is_dir() {
        return Ok(model.to_path_buf());
    }
    let text = model.to_string_lossy();
    let looks_like_repo =
        text.split('/').count() == 2 && !text.starts_with('.') && !text.starts_with('/');
    if !looks_like_repo {
        return Ok(model.to_path_buf()); // the pipeline loader names what is missing
    }
    let cache = if std::env::var_os("HF_HOME").is_some() {
        hf_hub::Cache::from_env()
    } else if let Some(home) = std::env::var_os("HOME") {
        hf_hub::Cache::new(PathBuf::from(home).join(".cache/huggingface/hub"))
    } else {
        return Err(format!(
            "{text} is not a folder, and no Hugging Face cache is configured (set HF_HOME)"
        ));
    };
    if let Some(index) = cache.model(text.to_string()).get("model_index.json") {
        return index
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| format!("cannot resolve the snapshot folder of {text}"));
    }
    let offline = std::env::var("HF_HUB_OFFLINE")
        .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
        .unwrap_or(false);
    if offline || !cfg!(feature = "download") {
        return Err(format!(
            "{text} is neither a folder nor a model in the Hugging Face cache at {}, and downloading is off \
             ({}); download it first (e.g. `huggingface-cli download {text}`) or pass a local diffusers folder",
            cache.path().display(),
            if offline { "HF_HUB_OFFLINE=1" } else { "built without the `download` feature" }
        ));
    }
    download(&text, variant, cache)
}

/// The files of a diffusers repo a pipeline needs: `model_index.json`, and in each component folder its
/// JSON configs, tokenizer vocabularies and safetensors weights — of `variant` (`*.fp16.safetensors`)
/// when given, else the plain ones. PyTorch `.bin`, ONNX, Flax and other files are skipped.
pub(crate) fn files_to_download(names: &[String], variant: Option<&str>) -> Vec<String> {
    const COMPONENTS: [&str; 7] = [
        "unet",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    ];
    names
        .iter()
        .filter(|name| {
            if name.as_str() == "model_index.json" {
                return true;
            }
            let Some((dir, file)) = name.split_once('/') else {
                return false;
            };
            if !COMPONENTS.contains(&dir) || file.contains('/') {
                return false;
            }
            match weights_variant(file) {
                Some(found) => found == variant,
                None => file.ends_with(".json") || file.ends_with(".txt"),
            }
        })
        .cloned()
        .collect()
}

/// For a safetensors weight file or shard index, its variant (`Some(None)`: plain, `Some(Some("fp16"))`
/// for `model.fp16.safetensors`, `model.fp16-00001-of-00002.safetensors` or
/// `model.safetensors.index.fp16.json`); `None` for other files.
fn weights_variant(file: &str) -> Option<Option<&str>> {
    if let Some(rest) = file.strip_suffix(".json") {
        let (_, index) = rest.split_once(".safetensors.index")?;
        return Some(index.strip_prefix('.'));
    }
    let stem = file.strip_suffix(".safetensors")?;
    Some(
        stem.split('.')
            .nth(1)
            .map(|v| v.split('-').next().unwrap_or(v)),
    )
}

#[cfg(feature = "download")]
fn download(repo: &str, variant: Option<&str>, cache: hf_hub::Cache) -> CliResult<PathBuf> {
    let mut builder = hf_hub::api::sync::ApiBuilder::from_cache(cache).with_progress(true);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    let api = builder
        .build()
        .map_err(|e| format!("cannot set up the Hugging Face client: {e}"))?;
    let remote = api.model(repo.to_string());
    let info = remote.info().map_err(|e| {
        format!(
            "{repo} is not in the local Hugging Face cache and the Hub could not be asked for it ({e}); \
             check the repo id and the network, or pass a local diffusers folder"
        )
    })?;
    let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    if !names.iter().any(|n| n == "model_index.json") {
        return Err(format!(
            "{repo} has no model_index.json: it is not a diffusers pipeline repository"
        ));
    }
    let mut index = None;
    for name in files_to_download(&names, variant) {
        eprintln!("downloading {repo}/{name}");
        let path = remote
            .get(&name)
            .map_err(|e| format!("cannot download {repo}/{name}: {e}"))?;
        if name == "model_index.json" {
            index = Some(path);
        }
    }
    index
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("cannot resolve the snapshot folder of {repo}"))
}

#[cfg(not(feature = "download"))]
fn download(repo: &str, _variant: Option<&str>, _cache: hf_hub::Cache) -> CliResult<PathBuf> {
    Err(format!(
        "{repo}: this build cannot download (no `download` feature)"
    ))
}

pub(crate) fn check_writable(path: &Path) -> CliResult {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "cannot write {}: folder {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    Ok(())
}

struct Job {
    args: GenerateArgs,
    method: Method,
    scheduler: Option<SchedulerKind>,
}

/// `OUT-stage{r}.png` beside `out`.
pub(crate) fn stage_path(out: &Path, stage: usize) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{stem}-stage{stage}.png"))
}

impl BackendJob for Job {
    fn run<B: Backend>(self, device: B::Device) -> CliResult {
        let Some(model) = self.args.model.clone() else {
            return crate::shapes::generate::<B>(&self.args, self.method, self.scheduler, device);
        };
        let args = self.args;
        let t_start = Instant::now();
        let mut sd = StableDiffusion::<B>::load(&model, args.variant.as_deref(), &device)
            .map_err(|e| e.to_string())?;
        match (&args.upsamplers, self.method) {
            (Some(path), _) => {
                let upsampler = load_upsamplers::<B>(path, &sd.unet, &device)?;
                sd.set_feature_upsampler(upsampler, args.t_min)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            (None, Method::SelfCascadeTuned) => {
                return Err(
                    "--method self-cascade-tuned needs --upsamplers PATH (e.g. the released \
                            upsampler_only.pth)"
                        .into(),
                )
            }
            _ => {}
        }
        let request = args.request(self.method, self.scheduler, 1024, 50, 7.5);
        let plan = sd.plan(&request).map_err(|e| e.to_string())?;
        let t_loaded = Instant::now();
        let embeds = sd
            .encode_prompt(&args.prompt, &args.negative_prompt)
            .map_err(|e| e.to_string())?;
        // One prompt per run: the text encoders' memory goes to the sampling from here on.
        sd.release_text_encoders();
        let t_encoded = Instant::now();
        if embeds.truncated {
            eprintln!("warning: the prompt is longer than the text encoder's 77 tokens and was truncated (as diffusers does)");
        }
        let mut source = args.noise_source::<B>(&plan, &device)?;
        let bar = progress_bar(args.quiet)?;
        let out = sd
            .generate_latents(&embeds, &request, source.as_mut(), &mut |p| {
                bar.tick(&plan, p)
            })
            .map_err(|e| e.to_string())?;
        bar.finish();
        let t_sampled = Instant::now();
        let mut meta = metadata(&args, &request, &plan, &model.display().to_string());
        save_latents(&args, &out)?;
        // Only the VAE is needed from here on: the UNet's weights are freed before decoding.
        let vae = sd.into_vae().map_err(|e| e.to_string())?;
        if args.save_stages {
            for (r, latent) in out
                .stages
                .iter()
                .enumerate()
                .take(out.stages.len().saturating_sub(1))
            {
                let images = decode_latents(&vae, latent.clone()).map_err(|e| e.to_string())?;
                let img = &images[0];
                meta.push(("stage".to_string(), r.to_string()));
                write_png(
                    &stage_path(&args.out, r),
                    img.width as u32,
                    img.height as u32,
                    &img.pixels,
                    &meta,
                )?;
                meta.pop();
            }
        }
        let t_decode = Instant::now();
        let images = decode_latents(&vae, out.latent).map_err(|e| e.to_string())?;
        if args.timings {
            let secs = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64();
            eprintln!(
                "{{\"load_s\":{:.3},\"encode_s\":{:.3},\"sample_s\":{:.3},\"decode_s\":{:.3}}}",
                secs(t_start, t_loaded),
                secs(t_loaded, t_encoded),
                secs(t_encoded, t_sampled),
                secs(t_decode, Instant::now())
            );
        }
        let img = &images[0];
        write_final(
            &args,
            &plan,
            img.width as u32,
            img.height as u32,
            &img.pixels,
            &meta,
        )
    }
}

/// Feature upsamplers from `path`: a PyTorch checkpoint (`.pth`, `.pt`, `.ckpt`) holds the released
/// ResBlock upsamplers; a safetensors file holds ResBlock or light upsamplers (whichever matches).
pub(crate) fn load_upsamplers<B: Backend>(
    path: &Path,
    unet: &UNet2DConditionModel<B>,
    device: &B::Device,
) -> CliResult<Box<dyn FeatureUpsampler<B>>> {
    load_upsamplers_for(
        path,
        &ResBlockUpsamplerConfig::for_unet(unet),
        &LightUpsamplerConfig::for_unet(unet),
        device,
    )
}

/// [`load_upsamplers`] for upsamplers of the given sizes (any UNet, e.g. the video UNet).
pub(crate) fn load_upsamplers_for<B: Backend>(
    path: &Path,
    resblock: &ResBlockUpsamplerConfig,
    light: &LightUpsamplerConfig,
    device: &B::Device,
) -> CliResult<Box<dyn FeatureUpsampler<B>>> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if ["pth", "pt", "ckpt", "bin"].contains(&ext.as_str()) {
        return ResBlockUpsampler::<B>::load_pth(path, resblock, device)
            .map(|u| Box::new(u) as Box<dyn FeatureUpsampler<B>>)
            .map_err(|e| e.to_string());
    }
    match ResBlockUpsampler::<B>::load_safetensors(path, resblock, device) {
        Ok(u) => Ok(Box::new(u)),
        Err(first) => LightUpsampler::<B>::load_safetensors(path, light, device)
            .map(|u| Box::new(u) as Box<dyn FeatureUpsampler<B>>)
            .map_err(|second| {
                format!(
                    "{} holds neither ResBlock upsamplers ({first}) nor light upsamplers ({second}) for this UNet",
                    path.display()
                )
            }),
    }
}

impl GenerateArgs {
    /// The request these flags describe, with the model's defaults for the flags not given.
    pub(crate) fn request(
        &self,
        method: Method,
        scheduler: Option<SchedulerKind>,
        side: usize,
        steps: usize,
        guidance: f64,
    ) -> GenerateRequest {
        let width = self.width.or(self.height).unwrap_or(side);
        GenerateRequest {
            width,
            height: self.height.unwrap_or(width),
            method,
            steps: self.steps.unwrap_or(steps),
            guidance: self.guidance.unwrap_or(guidance),
            strength: self.strength,
            scheduler,
            eta: self.eta,
            keep_stages: self.save_stages || self.save_latents.is_some(),
        }
    }

    /// The seeded noise, or the stage noise of `--noise` (step noise still from the seed).
    pub(crate) fn noise_source<B: Backend>(
        &self,
        plan: &ScalePlan,
        device: &B::Device,
    ) -> CliResult<Box<dyn NoiseSource<B, 4>>> {
        match &self.noise {
            None => Ok(Box::new(SeededNoise::new(self.seed))),
            Some(path) => {
                let inputs = Inputs::open(path)?;
                let stages = (0..plan.len())
                    .map(|r| inputs.float::<B, 4>(&format!("stage{r}"), device))
                    .collect::<CliResult<Vec<_>>>()?;
                Ok(Box::new(InjectedNoise::new(stages, self.seed)))
            }
        }
    }
}

/// The progress bar over all stages and steps.
pub(crate) struct Bar(ProgressBar);

impl Bar {
    /// Updates the bar from the sampler's progress.
    pub(crate) fn tick(&self, plan: &ScalePlan, p: &Progress) -> ControlFlow<()> {
        self.0.set_length(p.total as u64);
        self.0.set_position(p.done as u64);
        let size = plan.stages()[p.stage];
        self.0
            .set_message(format!("stage {}/{} ({size})", p.stage + 1, p.num_stages));
        ControlFlow::Continue(())
    }

    /// Removes the bar.
    pub(crate) fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// A progress bar with ETA (hidden when `quiet`).
pub(crate) fn progress_bar(quiet: bool) -> CliResult<Bar> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} steps, {elapsed} elapsed, ETA {eta}",
        )
        .map_err(|e| e.to_string())?,
    );
    Ok(Bar(bar))
}

/// The PNG text metadata of a generation.
pub(crate) fn metadata(
    args: &GenerateArgs,
    request: &GenerateRequest,
    plan: &ScalePlan,
    model: &str,
) -> Vec<(String, String)> {
    vec![
        ("prompt".to_string(), args.prompt.clone()),
        ("negative_prompt".to_string(), args.negative_prompt.clone()),
        ("seed".to_string(), args.seed.to_string()),
        ("method".to_string(), request.method.name().to_string()),
        ("model".to_string(), model.to_string()),
        (
            "size".to_string(),
            format!("{}x{}", request.width, request.height),
        ),
        (
            "stages".to_string(),
            plan.stages()
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(" -> "),
        ),
        ("steps".to_string(), request.steps.to_string()),
        ("guidance".to_string(), request.guidance.to_string()),
        ("strength".to_string(), request.strength.to_string()),
        (
            "software".to_string(),
            format!("selfcascade {}", env!("CARGO_PKG_VERSION")),
        ),
    ]
}

/// Writes `--save-latents` (each stage's clean latent), when asked.
pub(crate) fn save_latents<B: Backend>(args: &GenerateArgs, out: &CascadeOutput<B>) -> CliResult {
    if let Some(path) = &args.save_latents {
        let mut outs = Outputs::default();
        for (r, latent) in out.stages.iter().enumerate() {
            outs.add(&format!("stage{r}"), latent.clone())?;
        }
        outs.write(path)?;
    }
    Ok(())
}

/// Writes the final PNG (and, with `--save-stages`, its copy as the last stage's PNG).
pub(crate) fn write_final(
    args: &GenerateArgs,
    plan: &ScalePlan,
    width: u32,
    height: u32,
    pixels: &[u8],
    meta: &[(String, String)],
) -> CliResult {
    write_png(&args.out, width, height, pixels, meta)?;
    if args.save_stages {
        let last = stage_path(&args.out, plan.len() - 1);
        std::fs::copy(&args.out, &last)
            .map_err(|e| format!("cannot write {}: {e}", last.display()))?;
    }
    eprintln!(
        "wrote {} ({width}x{height}, {})",
        args.out.display(),
        meta.iter()
            .find(|(k, _)| k == "method")
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::files_to_download;

    #[test]
    fn only_the_needed_files_of_a_diffusers_repo_are_downloaded() {
        let names: Vec<String> = [
            "model_index.json",
            "README.md",
            "unet/config.json",
            "unet/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.fp16.safetensors",
            "unet/diffusion_pytorch_model.bin",
            "vae/diffusion_pytorch_model.safetensors",
            "text_encoder/model.safetensors",
            "text_encoder/model.fp16.safetensors",
            "text_encoder/model.safetensors.index.json",
            "text_encoder/model-00001-of-00002.safetensors",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "scheduler/scheduler_config.json",
            "safety_checker/model.safetensors",
            "unet/flax_model.msgpack",
            "v2-1_512-ema-pruned.ckpt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let plain = files_to_download(&names, None);
        assert_eq!(
            plain,
            [
                "model_index.json",
                "unet/config.json",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/diffusion_pytorch_model.safetensors",
                "text_encoder/model.safetensors",
                "text_encoder/model.safetensors.index.json",
                "text_encoder/model-00001-of-00002.safetensors",
                "tokenizer/vocab.json",
                "tokenizer/merges.txt",
                "scheduler/scheduler_config.json",
            ]
        );
        let fp16 = files_to_download(&names, Some("fp16"));
        assert!(fp16.contains(&"unet/diffusion_pytorch_model.fp16.safetensors".to_string()));
        assert!(!fp16.contains(&"unet/diffusion_pytorch_model.safetensors".to_string()));
        assert!(fp16.contains(&"unet/config.json".to_string()));
    }
}

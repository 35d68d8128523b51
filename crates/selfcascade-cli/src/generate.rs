//! `selfcascade generate`: a prompt in, a high-resolution PNG out.

use crate::backend::{dispatch, BackendJob, DeviceArg, DtypeArg};
use crate::output::write_png;
use crate::tensors::{Inputs, Outputs};
use crate::CliResult;
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use selfcascade_core::scheduler::SchedulerKind;
use selfcascade_core::{InjectedNoise, NoiseSource, SeededNoise};
use selfcascade_sd::pipeline::{GenerateRequest, Method, StableDiffusion};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Arguments of `selfcascade generate`.
#[derive(Args, Debug, Clone)]
pub struct GenerateArgs {
    /// A diffusers Stable Diffusion folder, or a Hugging Face repo id (e.g.
    /// stabilityai/stable-diffusion-2-1-base) already in the local Hugging Face cache ($HF_HOME/hub).
    #[arg(long)]
    model: Option<PathBuf>,
    /// What to draw.
    #[arg(long)]
    prompt: String,
    /// What to avoid (used with guidance > 1).
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// Width in pixels (a multiple of the model's alignment, 64 for SD).
    #[arg(long, default_value_t = 1024)]
    width: usize,
    /// Height in pixels.
    #[arg(long, default_value_t = 1024)]
    height: usize,
    /// direct | attn-sf | scalecrafter | self-cascade.
    #[arg(long, default_value = "self-cascade")]
    method: String,
    /// Inference steps of the full schedule.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale (≤ 1 disables guidance).
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Re-noising strength of the later self-cascade stages.
    #[arg(long, default_value_t = 0.7)]
    strength: f64,
    /// ddim | ddpm | euler (default: the model's scheduler config; SD 2.1's PNDM config uses ddim).
    #[arg(long)]
    scheduler: Option<String>,
    /// DDIM η (default: 1.0 for scalecrafter, 0 otherwise).
    #[arg(long)]
    eta: Option<f64>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// f32, f16 or bf16 (half precision on GPUs only).
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// Weight variant to load (e.g. fp16 for `*.fp16.safetensors`).
    #[arg(long)]
    variant: Option<String>,
    /// Output PNG.
    #[arg(long, default_value = "out.png")]
    out: PathBuf,
    /// Also write a PNG per stage (OUT-stage0.png, …).
    #[arg(long)]
    save_stages: bool,
    /// Initial noise per stage from a safetensors file (tensors stage0, stage1, …) instead of the seed.
    #[arg(long)]
    noise: Option<PathBuf>,
    /// Write each stage's clean latent (scaled, as the UNet sees it) to a safetensors file.
    #[arg(long)]
    save_latents: Option<PathBuf>,
    /// Do not draw a progress bar.
    #[arg(long)]
    quiet: bool,
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
    if args.model.is_none() {
        return Err("no --model given: pass a diffusers Stable Diffusion folder (the embedded default model is not \
                    available in this build)"
            .into());
    }
    check_writable(&args.out)?;
    let mut args = args;
    args.model = args.model.as_deref().map(resolve_model).transpose()?;
    let job = Job {
        args: args.clone(),
        method,
        scheduler,
    };
    dispatch(args.device, args.dtype, job)
}

/// A folder as given, or a Hub repo id (`org/name`) resolved to its snapshot in the local Hugging Face
/// cache (offline; nothing is downloaded).
fn resolve_model(model: &Path) -> CliResult<PathBuf> {
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
    match cache.model(text.to_string()).get("model_index.json") {
        Some(index) => index
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| format!("cannot resolve the snapshot folder of {text}")),
        None => Err(format!(
            "{text} is neither a folder nor a model in the Hugging Face cache at {}; download it first \
             (e.g. `huggingface-cli download {text}`) or pass a local diffusers folder",
            cache.path().display()
        )),
    }
}

fn check_writable(path: &Path) -> CliResult {
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

fn stage_path(out: &Path, stage: usize) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{stem}-stage{stage}.png"))
}

impl BackendJob for Job {
    fn run<B: Backend>(self, device: B::Device) -> CliResult {
        let args = self.args;
        let model = args.model.clone().unwrap_or_default();
        let sd = StableDiffusion::<B>::load(&model, args.variant.as_deref(), &device)
            .map_err(|e| e.to_string())?;
        let request = GenerateRequest {
            width: args.width,
            height: args.height,
            method: self.method,
            steps: args.steps,
            guidance: args.guidance,
            strength: args.strength,
            scheduler: self.scheduler,
            eta: args.eta,
            keep_stages: args.save_stages || args.save_latents.is_some(),
        };
        let plan = sd.plan(&request).map_err(|e| e.to_string())?;
        let embeds = sd
            .encode_prompt(&args.prompt, &args.negative_prompt)
            .map_err(|e| e.to_string())?;
        if embeds.truncated {
            eprintln!("warning: the prompt is longer than the text encoder's 77 tokens and was truncated (as diffusers does)");
        }
        let mut seeded = SeededNoise::new(args.seed);
        let mut injected;
        let noise: &mut dyn NoiseSource<B, 4> = match &args.noise {
            None => &mut seeded,
            Some(path) => {
                let inputs = Inputs::open(path)?;
                let stages = (0..plan.len())
                    .map(|r| inputs.float::<B, 4>(&format!("stage{r}"), &device))
                    .collect::<CliResult<Vec<_>>>()?;
                injected = InjectedNoise::new(stages, args.seed);
                &mut injected
            }
        };
        let bar = if args.quiet {
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
        let out = sd
            .generate_latents(&embeds, &request, noise, &mut |p| {
                bar.set_length(p.total as u64);
                bar.set_position(p.done as u64);
                let size = plan.stages()[p.stage];
                bar.set_message(format!("stage {}/{} ({size})", p.stage + 1, p.num_stages));
                ControlFlow::Continue(())
            })
            .map_err(|e| e.to_string())?;
        bar.finish_and_clear();
        let mut meta = vec![
            ("prompt".to_string(), args.prompt.clone()),
            ("negative_prompt".to_string(), args.negative_prompt.clone()),
            ("seed".to_string(), args.seed.to_string()),
            ("method".to_string(), self.method.name().to_string()),
            ("model".to_string(), model.display().to_string()),
            (
                "size".to_string(),
                format!("{}x{}", args.width, args.height),
            ),
            (
                "stages".to_string(),
                plan.stages()
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(" -> "),
            ),
            ("steps".to_string(), args.steps.to_string()),
            ("guidance".to_string(), args.guidance.to_string()),
            ("strength".to_string(), args.strength.to_string()),
            (
                "software".to_string(),
                format!("selfcascade {}", env!("CARGO_PKG_VERSION")),
            ),
        ];
        if let Some(path) = &args.save_latents {
            let mut outs = Outputs::default();
            for (r, latent) in out.stages.iter().enumerate() {
                outs.add(&format!("stage{r}"), latent.clone())?;
            }
            outs.write(path)?;
        }
        if args.save_stages {
            for (r, latent) in out
                .stages
                .iter()
                .enumerate()
                .take(out.stages.len().saturating_sub(1))
            {
                let images = sd.decode(latent.clone()).map_err(|e| e.to_string())?;
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
        let images = sd.decode(out.latent).map_err(|e| e.to_string())?;
        let img = &images[0];
        write_png(
            &args.out,
            img.width as u32,
            img.height as u32,
            &img.pixels,
            &meta,
        )?;
        if args.save_stages {
            let last = plan.len() - 1;
            std::fs::copy(&args.out, stage_path(&args.out, last)).map_err(|e| {
                format!(
                    "cannot write {}: {e}",
                    stage_path(&args.out, last).display()
                )
            })?;
        }
        eprintln!(
            "wrote {} ({}x{}, {})",
            args.out.display(),
            img.width,
            img.height,
            self.method.name()
        );
        Ok(())
    }
}

//! `selfcascade train-upsampler`: Algorithm 1, training the feature upsamplers of the tuned
//! self-cascade on a folder of captioned images (or, for a text-to-video model, of captioned clips)
//! while the model stays frozen.

use crate::backend::DeviceArg;
use crate::CliResult;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use selfcascade_core::{FeatureUpsampler, Size};
use selfcascade_sd::pipeline::{StableDiffusion, VideoUNet};
use selfcascade_sd::train::{
    prepare_training_set, prepare_video_training_set, scan_dataset, scan_video_dataset, train,
    FrozenUNet, PivotSource, PrepareOptions, RunDir, TimestepSampling, TrainingSet, UpsamplerFile,
    UpsamplerTrainConfig, UpsamplerTrainer, VideoPrepareOptions,
};
use selfcascade_sd::unet::UNet2DConditionModel;
use selfcascade_sd::upsampler::{
    LightUpsampler, LightUpsamplerConfig, ResBlockUpsampler, ResBlockUpsamplerConfig,
};
use std::path::PathBuf;

/// The upsampler architecture to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArchArg {
    /// The light time-aware upsampler (9,638 parameters for SD 2.1).
    Light,
    /// The released ResBlock upsamplers (145.5M parameters for SDXL).
    Resblock,
}

/// Where pivots come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PivotArg {
    /// The VAE latent of the image downsampled to half the size.
    Downsampled,
    /// A generation of the base model from the caption at half the size (as the released code).
    Generated,
    /// The `pivot` file of each image in manifest.jsonl (a safetensors latent or an image).
    Files,
}

/// Arguments of `selfcascade train-upsampler`.
#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// A diffusers Stable Diffusion folder (or a Hub repo id in the local cache); or a text-to-video
    /// model: a diffusers folder whose unet/ is a UNet3DConditionModel, or an LVDM checkpoint file
    /// (with --tokenizer).
    #[arg(long)]
    model: PathBuf,
    /// The data folder: images with a `.txt` caption beside each, or a `manifest.jsonl`. For a
    /// text-to-video model: one sub-folder of frames (PNG/JPEG, in file-name order) per clip, captioned
    /// by `<clip>.txt` beside it or `caption.txt` inside it.
    #[arg(long)]
    data: PathBuf,
    /// Video: frames per training clip.
    #[arg(long, default_value_t = 16)]
    frames: usize,
    /// Video: take every N-th frame of a clip.
    #[arg(long, default_value_t = 1)]
    frame_stride: usize,
    /// With an LVDM checkpoint: its CLIP ViT-L/14 tokenizer folder.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// With an LVDM checkpoint: a JSON file of `unet`, `vae`, `text_encoder` settings replacing
    /// lvdm_short's.
    #[arg(long)]
    lvdm_config: Option<PathBuf>,
    /// The run folder: checkpoints/, loss.csv, upsampler.safetensors, cache/.
    #[arg(long)]
    out: PathBuf,
    /// Training size in pixels, WIDTHxHEIGHT (default: twice the model's base size each side; for
    /// video, the frame size).
    #[arg(long)]
    size: Option<String>,
    /// Upsampler architecture.
    #[arg(long, value_enum, default_value_t = ArchArg::Light)]
    arch: ArchArg,
    /// Start from these upsampler weights (safetensors, or the released `.pth` for resblock).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Pivot source.
    #[arg(long, value_enum, default_value_t = PivotArg::Downsampled)]
    pivot: PivotArg,
    /// Sampling steps of generated pivots.
    #[arg(long, default_value_t = 50)]
    pivot_steps: usize,
    /// Guidance scale of generated pivots.
    #[arg(long, default_value_t = 7.5)]
    pivot_guidance: f64,
    /// Sampler of generated pivots: ddim | ddpm | euler (default: the model's scheduler config).
    #[arg(long)]
    pivot_scheduler: Option<String>,
    /// Latent cache folder (default OUT/cache).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Optimizer steps of the whole run.
    #[arg(long, default_value_t = 4000)]
    steps: u64,
    /// Examples per step.
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 5e-5)]
    lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// AdamW ε.
    #[arg(long, default_value_t = 1e-8)]
    adam_epsilon: f64,
    /// Timestep sampling: paper (t ~ U{1..K}), reference (U{0..999}) or MIN..=MAX.
    #[arg(long, default_value = "paper")]
    timesteps: String,
    /// Probability of training on the empty caption.
    #[arg(long, default_value_t = 0.1)]
    caption_dropout: f64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    checkpoint_every: u64,
    /// Checkpoints kept.
    #[arg(long, default_value_t = 2)]
    keep_checkpoints: usize,
    /// Seed of crops, order, timesteps, noise and caption dropout.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue from the newest checkpoint in OUT/checkpoints.
    #[arg(long)]
    resume: bool,
    /// Recompute activations in the backward pass instead of keeping them (less memory, slower).
    #[arg(long)]
    gradient_checkpointing: bool,
    /// cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Train data-parallel on this many CUDA devices (0..N−1; the batch is split between them).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Weight variant to load (e.g. fp16).
    #[arg(long)]
    variant: Option<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Parses `WIDTHxHEIGHT`.
fn parse_size(s: &str) -> CliResult<Size> {
    let bad = || format!("--size {s}: expected WIDTHxHEIGHT in pixels, e.g. 1024x1024");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok(Size::new(
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    ))
}

impl TrainArgs {
    fn config(&self) -> CliResult<UpsamplerTrainConfig> {
        let config = UpsamplerTrainConfig {
            seed: self.seed,
            steps: self.steps,
            batch_size: self.batch_size,
            learning_rate: self.lr,
            weight_decay: self.weight_decay,
            epsilon: self.adam_epsilon,
            timesteps: TimestepSampling::parse(&self.timesteps).map_err(|e| e.to_string())?,
            caption_dropout: self.caption_dropout,
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            ..Default::default()
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    /// `--size`, or twice `base` each side.
    fn size_or_twice(&self, base: Size) -> CliResult<Size> {
        match &self.size {
            Some(s) => parse_size(s),
            None => Ok(Size::new(2 * base.width, 2 * base.height)),
        }
    }

    /// `--cache`, or OUT/cache.
    fn cache_dir(&self) -> PathBuf {
        self.cache.clone().unwrap_or_else(|| self.out.join("cache"))
    }

    fn pivot_source(&self) -> CliResult<PivotSource> {
        Ok(match self.pivot {
            PivotArg::Downsampled => PivotSource::Downsampled,
            PivotArg::Generated => PivotSource::Generated {
                steps: self.pivot_steps,
                guidance: self.pivot_guidance,
                scheduler: self
                    .pivot_scheduler
                    .as_deref()
                    .map(str::parse)
                    .transpose()
                    .map_err(|e: selfcascade_core::Error| format!("--pivot-scheduler: {e}"))?,
            },
            PivotArg::Files => PivotSource::Files,
        })
    }
}

/// Runs `selfcascade train-upsampler`.
pub fn run(args: TrainArgs) -> CliResult {
    let config = args.config()?;
    if args.devices == 0 || (args.devices > 1 && args.device != DeviceArg::Cuda) {
        return Err(format!(
            "--devices {}: give at least 1; more than one is for CUDA GPUs (--device cuda)",
            args.devices
        ));
    }
    type Balanced = burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    let cpu = vec![Default::default()];
    match (args.device, args.gradient_checkpointing) {
        (DeviceArg::Cpu, false) => {
            run_on::<burn::backend::Autodiff<burn::backend::Flex>>(&args, config, cpu)
        }
        (DeviceArg::Cpu, true) => {
            run_on::<burn::backend::Autodiff<burn::backend::Flex, Balanced>>(&args, config, cpu)
        }
        #[cfg(feature = "cuda")]
        (DeviceArg::Cuda, checkpointing) => {
            let gpus: Vec<burn::backend::cuda::CudaDevice> = (0..args.devices)
                .map(burn::backend::cuda::CudaDevice::new)
                .collect();
            type Gpu = burn::backend::Cuda<f32>;
            if checkpointing {
                run_on::<burn::backend::Autodiff<Gpu, Balanced>>(&args, config, gpus)
            } else {
                run_on::<burn::backend::Autodiff<Gpu>>(&args, config, gpus)
            }
        }
        #[cfg(not(feature = "cuda"))]
        (DeviceArg::Cuda, _) => Err(
            "this selfcascade was built without CUDA support; rebuild with `--features cuda` or use \
             --device cpu"
                .into(),
        ),
    }
}

fn run_on<A: AutodiffBackend>(
    args: &TrainArgs,
    config: UpsamplerTrainConfig,
    devices: Vec<A::Device>,
) -> CliResult {
    let device = devices[0].clone();
    let model = if args.model.is_file() {
        args.model.clone()
    } else {
        crate::generate::resolve_model(&args.model, args.variant.as_deref())?
    };
    if crate::video::is_video_model(&model) {
        return run_video_on::<A>(args, &model, config, devices);
    }
    let items = scan_dataset(&args.data).map_err(|e| e.to_string())?;
    let sd = StableDiffusion::<A::InnerBackend>::load(&model, args.variant.as_deref(), &device)
        .map_err(|e| e.to_string())?;
    let size = args.size_or_twice(sd.base_size())?;
    let options = PrepareOptions {
        size,
        pivot: args.pivot_source()?,
        cache: Some(args.cache_dir()),
        seed: args.seed,
    };
    let bar = bar(args.quiet, items.len() as u64, "encoding")?;
    let data = prepare_training_set(&sd, &items, &options, &mut |done, _| {
        bar.set_position(done as u64)
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let unet = UNet2DConditionModel::<A>::from_inner(sd.unet.clone());
    let scheduler = sd.scheduler_config.clone();
    drop(sd);
    let light = LightUpsamplerConfig::for_unet(&unet);
    let resblock = ResBlockUpsamplerConfig::for_unet(&unet);
    let job = FitJob {
        args,
        scheduler: &scheduler,
        config,
        devices: &devices,
    };
    job.with_upsampler(unet, &light, &resblock, &data)
}

/// `train-upsampler` for a text-to-video model: clips in, the video UNet frozen.
fn run_video_on<A: AutodiffBackend>(
    args: &TrainArgs,
    model: &std::path::Path,
    config: UpsamplerTrainConfig,
    devices: Vec<A::Device>,
) -> CliResult {
    if args.pivot == PivotArg::Files {
        return Err(
            "--pivot files is for image data; video clips take --pivot downsampled or generated"
                .into(),
        );
    }
    let clips = scan_video_dataset(&args.data).map_err(|e| e.to_string())?;
    let t2v = crate::video::load_text_to_video::<A::InnerBackend>(
        model,
        args.variant.as_deref(),
        args.tokenizer.as_deref(),
        args.lvdm_config.as_deref(),
        &devices[0],
    )?;
    let options = VideoPrepareOptions {
        size: args.size_or_twice(t2v.base_size())?,
        frames: args.frames,
        frame_stride: args.frame_stride,
        pivot: args.pivot_source()?,
        cache: Some(args.cache_dir()),
        seed: args.seed,
    };
    let bar = bar(args.quiet, clips.len() as u64, "encoding clips")?;
    let data = prepare_video_training_set(&t2v, &clips, &options, &mut |done, _| {
        bar.set_position(done as u64)
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let unet = VideoUNet::<A>::from_inner(t2v.unet.clone());
    let scheduler = t2v.scheduler_config.clone();
    drop(t2v);
    let light = LightUpsamplerConfig {
        channels: unet.injection_channels(),
        time_embed_dim: unet.time_embed_dim(),
    };
    let resblock = ResBlockUpsamplerConfig {
        channels: light.channels.clone(),
        time_embed_dim: light.time_embed_dim,
        groups: unet.groups(),
        eps: ResBlockUpsamplerConfig::RELEASED_EPS,
    };
    let job = FitJob {
        args,
        scheduler: &scheduler,
        config,
        devices: &devices,
    };
    job.with_upsampler(unet, &light, &resblock, &data)
}

/// What a training run needs besides the UNet, the upsampler and the data.
struct FitJob<'a, A: AutodiffBackend> {
    args: &'a TrainArgs,
    scheduler: &'a selfcascade_core::scheduler::SchedulerConfig,
    config: UpsamplerTrainConfig,
    devices: &'a [A::Device],
}

impl<A: AutodiffBackend> FitJob<'_, A> {
    /// Makes the upsampler `--arch` names (from `--init` or seeded) and trains it.
    fn with_upsampler<M: FrozenUNet<A>>(
        self,
        unet: M,
        light: &LightUpsamplerConfig,
        resblock: &ResBlockUpsamplerConfig,
        data: &TrainingSet<A::InnerBackend>,
    ) -> CliResult {
        let (args, device) = (self.args, &self.devices[0]);
        match args.arch {
            ArchArg::Light => {
                let up = match &args.init {
                    Some(p) => LightUpsampler::<A>::load_safetensors(p, light, device),
                    None => LightUpsampler::<A>::init(light, args.seed, device),
                }
                .map_err(|e| e.to_string())?;
                self.fit(unet, up, data)
            }
            ArchArg::Resblock => {
                let up = match &args.init {
                    Some(p) if p.extension().is_some_and(|e| e != "safetensors") => {
                        ResBlockUpsampler::<A>::load_pth(p, resblock, device)
                    }
                    Some(p) => ResBlockUpsampler::<A>::load_safetensors(p, resblock, device),
                    None => ResBlockUpsampler::<A>::init(resblock, args.seed, device),
                }
                .map_err(|e| e.to_string())?;
                self.fit(unet, up, data)
            }
        }
    }

    fn fit<M, U>(self, unet: M, upsampler: U, data: &TrainingSet<A::InnerBackend>) -> CliResult
    where
        M: FrozenUNet<A>,
        U: AutodiffModule<A> + FeatureUpsampler<A> + UpsamplerFile,
    {
        let (args, steps) = (self.args, self.config.steps);
        let run = RunDir::new(&args.out);
        let mut trainer = UpsamplerTrainer::new(
            unet,
            upsampler,
            self.scheduler,
            self.config,
            &self.devices[0],
        )
        .map_err(|e| e.to_string())?;
        if self.devices.len() > 1 {
            trainer
                .set_devices(self.devices.to_vec())
                .map_err(|e| e.to_string())?;
        }
        let bar = bar(args.quiet, steps, "training")?;
        let reports = train(&mut trainer, data, &run, args.resume, &mut |r| {
            bar.set_position(r.step);
            bar.set_message(format!("training, loss {:.4}", r.loss));
        })
        .map_err(|e| e.to_string())?;
        bar.finish_and_clear();
        if !args.quiet {
            let last = reports.last().map(|r| r.loss).unwrap_or(f64::NAN);
            eprintln!(
                "trained {} step(s) (to step {steps}); last loss {last:.5}; weights in {}",
                reports.len(),
                run.weights().display()
            );
        }
        Ok(())
    }
}

fn bar(quiet: bool, len: u64, msg: &'static str) -> CliResult<ProgressBar> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(len)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len}, {elapsed} elapsed, ETA {eta}")
            .map_err(|e| e.to_string())?,
    );
    bar.set_message(msg);
    Ok(bar)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1024x768").unwrap(), Size::new(1024, 768));
        assert!(parse_size("1024").unwrap_err().contains("WIDTHxHEIGHT"));
    }
}

//! `selfcascade train-upsampler`: Algorithm 1, training the feature upsamplers of the tuned
//! self-cascade on a folder of captioned images while the model stays frozen.

use crate::backend::DeviceArg;
use crate::CliResult;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use selfcascade_core::{FeatureUpsampler, Size};
use selfcascade_sd::pipeline::StableDiffusion;
use selfcascade_sd::train::{
    prepare_training_set, scan_dataset, train, PivotSource, PrepareOptions, RunDir,
    TimestepSampling, UpsamplerFile, UpsamplerTrainConfig, UpsamplerTrainer,
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
    /// A diffusers Stable Diffusion folder (or a Hub repo id in the local cache).
    #[arg(long)]
    model: PathBuf,
    /// The data folder: images with a `.txt` caption beside each, or a `manifest.jsonl`.
    #[arg(long)]
    data: PathBuf,
    /// The run folder: checkpoints/, loss.csv, upsampler.safetensors, cache/.
    #[arg(long)]
    out: PathBuf,
    /// Training size in pixels, WIDTHxHEIGHT (default: twice the model's base size each side).
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
    let model = crate::generate::resolve_model(&args.model, args.variant.as_deref())?;
    let items = scan_dataset(&args.data).map_err(|e| e.to_string())?;
    let sd = StableDiffusion::<A::InnerBackend>::load(&model, args.variant.as_deref(), &device)
        .map_err(|e| e.to_string())?;
    let size = match &args.size {
        Some(s) => parse_size(s)?,
        None => {
            let base = sd.base_size();
            Size::new(2 * base.width, 2 * base.height)
        }
    };
    let options = PrepareOptions {
        size,
        pivot: args.pivot_source()?,
        cache: Some(args.cache.clone().unwrap_or_else(|| args.out.join("cache"))),
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
    let run = RunDir::new(&args.out);
    match args.arch {
        ArchArg::Light => {
            let c = LightUpsamplerConfig::for_unet(&unet);
            let up = match &args.init {
                Some(p) => LightUpsampler::<A>::load_safetensors(p, &c, &device),
                None => LightUpsampler::<A>::init(&c, args.seed, &device),
            }
            .map_err(|e| e.to_string())?;
            fit(args, unet, up, &scheduler, config, &data, &run, &devices)
        }
        ArchArg::Resblock => {
            let c = ResBlockUpsamplerConfig::for_unet(&unet);
            let up = match &args.init {
                Some(p) if p.extension().is_some_and(|e| e != "safetensors") => {
                    ResBlockUpsampler::<A>::load_pth(p, &c, &device)
                }
                Some(p) => ResBlockUpsampler::<A>::load_safetensors(p, &c, &device),
                None => ResBlockUpsampler::<A>::init(&c, args.seed, &device),
            }
            .map_err(|e| e.to_string())?;
            fit(args, unet, up, &scheduler, config, &data, &run, &devices)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn fit<A, U>(
    args: &TrainArgs,
    unet: UNet2DConditionModel<A>,
    upsampler: U,
    scheduler: &selfcascade_core::scheduler::SchedulerConfig,
    config: UpsamplerTrainConfig,
    data: &selfcascade_sd::train::TrainingSet<A::InnerBackend>,
    run: &RunDir,
    devices: &[A::Device],
) -> CliResult
where
    A: AutodiffBackend,
    U: AutodiffModule<A> + FeatureUpsampler<A> + UpsamplerFile,
{
    let steps = config.steps;
    let mut trainer = UpsamplerTrainer::new(unet, upsampler, scheduler, config, &devices[0])
        .map_err(|e| e.to_string())?;
    if devices.len() > 1 {
        trainer
            .set_devices(devices.to_vec())
            .map_err(|e| e.to_string())?;
    }
    let bar = bar(args.quiet, steps, "training")?;
    let reports = train(&mut trainer, data, run, args.resume, &mut |r| {
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

//! A small class-conditional pixel-space diffusion model of the shapes world
//! (`selfcascade-shapes`), built from `selfcascade-sd`'s UNet and trained with burn's autodiff.
//!
//! - [`ShapesModel`]: UNet (3 channels, no VAE) + [`LabelEmbedding`] cross-attention context.
//! - [`NoiseSchedule`]: Stable Diffusion's scaled-linear DDPM schedule, T = 1000, q(x_t | x_0).
//! - [`Trainer`] / [`train`]: ε-prediction MSE, t ~ U{0..999}, label dropout to the null label,
//!   AdamW (PyTorch defaults) with linear warm-up, EMA, deterministic given a seed, loss log.
//! - [`ShapesDenoiser`]: the model as a `selfcascade_core::Denoiser` (with CFG), for the samplers.
//! - [`pipeline`]: generation by every method (`direct`, `attn-sf`, `scalecrafter`, `self-cascade`)
//!   through `selfcascade-sd`'s `UNetSampling`, the Stable Diffusion pipeline's own code path.
//! - [`default_model`]: the trained model embedded in the crate (`selfcascade generate`'s default).
//! - [`save_checkpoint`] / [`load_checkpoint`]: one safetensors file with diffusers-style names,
//!   written atomically, loaded strictly through `selfcascade_sd::load::Weights`.
//!
//! ```no_run
//! use burn::backend::{Autodiff, Flex};
//! use selfcascade_shapes_model::{train, RunOptions, ShapesModelConfig, TrainConfig};
//! # fn main() -> selfcascade_shapes_model::Result<()> {
//! let options = RunOptions { out_dir: "runs/shapes".into(), checkpoint_every: 250 };
//! let device = Default::default();
//! train::<Autodiff<Flex>>(&ShapesModelConfig::reference(), TrainConfig::default(), &options, &device, |r| {
//!     println!("step {} loss {:.4}", r.step, r.loss)
//! })?;
//! # Ok(()) }
//! ```

pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod data;
pub mod denoiser;
pub mod ema;
pub mod embedded;
pub mod error;
pub mod eval;
pub mod model;
pub mod pipeline;
pub mod schedule;
pub mod train;
pub mod tuned;

pub use checkpoint::{
    load_checkpoint, load_checkpoint_static, named_parameters, read_checkpoint_info,
    save_checkpoint, save_checkpoint_as, write_tensors, CheckpointInfo, NamedTensor, Precision,
};
pub use classifier::{ClassifierFeatures, ShapesClassifier};
pub use config::ShapesModelConfig;
pub use data::{render_batch, ImageBatch};
pub use denoiser::ShapesDenoiser;
pub use ema::Ema;
pub use embedded::{
    default_model, default_upsampler, DEFAULT_MODEL_NAME, DEFAULT_UPSAMPLER_NAME,
    DEFAULT_UPSAMPLER_STEPS,
};
pub use error::{Error, Result};
pub use eval::{
    add_fid_kid, evaluate, EvalOptions, EvalReport, EvalRow, FineTuned, Quality, QualityOptions,
    RowImages, TunedUpsampler,
};
pub use model::{LabelEmbedding, ShapesModel};
pub use pipeline::{default_request, to_images, DEFAULT_GUIDANCE, DEFAULT_STEPS};
pub use schedule::NoiseSchedule;
pub use train::{
    epsilon_loss, noise_batch, pytorch_adamw, train, NoisedBatch, RunOptions, StepRecord,
    TrainConfig, Trainer,
};

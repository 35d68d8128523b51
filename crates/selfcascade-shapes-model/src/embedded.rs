//! The default model shipped inside the crate: the reference architecture trained by
//! `cargo run --release -p selfcascade-shapes-model --example train_shapes -- --steps 1500 --out runs/shapes`
//! (EMA weights, stored as float16: see `assets/README.md`). `selfcascade generate` uses it when no
//! `--model` is given.

use crate::checkpoint::{load_checkpoint_static, CheckpointInfo};
use crate::error::Result;
use crate::model::ShapesModel;
use burn::tensor::backend::Backend;
use selfcascade_sd::load::TensorStore;
use selfcascade_sd::upsampler::{LightUpsampler, LightUpsamplerConfig};

/// How the embedded model is named in messages and image metadata.
pub const DEFAULT_MODEL_NAME: &str = "embedded:shapes";

/// The embedded checkpoint (safetensors, float16).
pub static DEFAULT_MODEL_BYTES: &[u8] = include_bytes!("../assets/shapes-default.safetensors");

/// Loads the embedded default model onto `device`.
pub fn default_model<B: Backend>(device: &B::Device) -> Result<(ShapesModel<B>, CheckpointInfo)> {
    load_checkpoint_static(DEFAULT_MODEL_NAME, DEFAULT_MODEL_BYTES, device)
}

/// How the embedded feature upsampler is named in messages and image metadata.
pub const DEFAULT_UPSAMPLER_NAME: &str = "embedded:shapes-upsampler";

/// Optimizer steps the embedded feature upsampler was trained for.
pub const DEFAULT_UPSAMPLER_STEPS: usize = 400;

/// The tuned method's light feature upsampler for the embedded model (safetensors, float32), trained
/// with the model frozen by `cargo run --release -p selfcascade-shapes-model --example
/// train_shapes_upsampler -- --out runs/shapes-tuned` (400 steps of batch 8, lr 1e-3, 32² pivots →
/// 64² targets; see `assets/README.md`).
pub static DEFAULT_UPSAMPLER_BYTES: &[u8] =
    include_bytes!("../assets/shapes-default-upsampler.safetensors");

/// Loads the embedded feature upsampler for `model` (the embedded model) onto `device`.
pub fn default_upsampler<B: Backend>(
    model: &ShapesModel<B>,
    device: &B::Device,
) -> Result<LightUpsampler<B>> {
    let store = TensorStore::from_static(DEFAULT_UPSAMPLER_NAME, DEFAULT_UPSAMPLER_BYTES)?;
    Ok(LightUpsampler::load_store(
        store,
        &LightUpsamplerConfig::for_unet(&model.unet),
        device,
    )?)
}

//! The default model shipped inside the crate: the reference architecture trained by
//! `cargo run --release -p selfcascade-shapes-model --example train_shapes -- --steps 1500 --out runs/shapes`
//! (EMA weights, stored as float16: see `assets/README.md`). `selfcascade generate` uses it when no
//! `--model` is given.

use crate::checkpoint::{load_checkpoint_static, CheckpointInfo};
use crate::error::Result;
use crate::model::ShapesModel;
use burn::tensor::backend::Backend;

/// How the embedded model is named in messages and image metadata.
pub const DEFAULT_MODEL_NAME: &str = "embedded:shapes";

/// The embedded checkpoint (safetensors, float16).
pub static DEFAULT_MODEL_BYTES: &[u8] = include_bytes!("../assets/shapes-default.safetensors");

/// Loads the embedded default model onto `device`.
pub fn default_model<B: Backend>(device: &B::Device) -> Result<(ShapesModel<B>, CheckpointInfo)> {
    load_checkpoint_static(DEFAULT_MODEL_NAME, DEFAULT_MODEL_BYTES, device)
}

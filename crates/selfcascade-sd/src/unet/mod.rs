//! Stable Diffusion's conditional UNet (diffusers' `UNet2DConditionModel`) for SD 1.x, SD 2.x and
//! SDXL, numerically equal to diffusers, with the hooks the self-cascade method and its baselines need:
//! Attn-SF attention scaling, ScaleCrafter re-dilation and the tuned variant's pivot feature injection;
//! and the video UNet of ModelScope text-to-video ([`UNet3DConditionModel`]), built from the same
//! blocks plus temporal layers.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use selfcascade_sd::unet::{UNet2DConditionModel, UNetHooks};
//! # fn main() -> selfcascade_sd::Result<()> {
//! let device = Default::default();
//! let unet = UNet2DConditionModel::<Flex>::load("sd21/unet".as_ref(), Some("fp16"), &device)?;
//! let sample = burn::tensor::Tensor::zeros([1, 4, 64, 64], &device);
//! let text = burn::tensor::Tensor::zeros([1, 77, 1024], &device);
//! let eps = unet.forward(sample, &[981.0], text, None, &UNetHooks::default())?;
//! # let _ = eps; Ok(()) }
//! ```

mod attention;
mod blocks;
mod config;
mod config3d;
mod embeddings;
mod hooks;
mod model;
mod model3d;
mod resnet;
mod temporal;

pub use attention::{Attention, BasicTransformerBlock, FeedForward, GeGlu, Transformer2DModel};
pub use blocks::{DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D};
pub use config::{
    BlockKind, BoolPerBlock, PerBlock, UNet2DConditionConfig, UNetArch, HARMLESS_FIELDS,
};
pub use config3d::UNet3DConditionConfig;
pub(crate) use embeddings::timestep_tensor;
pub use embeddings::{timestep_embedding, TimestepEmbedding};
pub(crate) use hooks::check_upsampler_channels;
pub use hooks::{
    redilated_conv, resize_bilinear, resize_nearest, PivotInjection, UNetHooks, MAX_DILATION,
};
pub use model::UNet2DConditionModel;
pub use model3d::{fold_frames, unfold_frames, UNet3DConditionModel};
pub use resnet::{Downsample2D, ResnetBlock2D, Upsample2D};
pub(crate) use temporal::{fold_frames as from_video_layout, unfold_frames as to_video_layout};
pub use temporal::{TemporalConv, TemporalConvLayer, TemporalConvStage, TransformerTemporalModel};

//! Pipelines and the baselines the paper compares against.

pub mod attn_sf;
pub mod image;
pub mod sampling;
pub mod scalecrafter;
pub mod stable_diffusion;

pub use image::{to_rgb8, RgbImage};
pub use sampling::{FeatureInjection, UNetSampling};
pub use stable_diffusion::{
    decode_latents, GenerateRequest, Method, PromptEmbeds, StableDiffusion,
};

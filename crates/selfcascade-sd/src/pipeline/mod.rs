//! Pipelines and the baselines the paper compares against.

pub mod attn_sf;
pub mod image;
pub mod sampling;
pub mod scalecrafter;
pub mod stable_diffusion;
pub mod text_to_video;

pub use image::{to_rgb8, RgbImage};
pub use sampling::{FeatureInjection, UNetSampling};
pub use stable_diffusion::{
    decode_latents, GenerateRequest, Method, PromptEmbeds, StableDiffusion,
};
pub use text_to_video::{decode_video, LvdmParts, TextToVideo, VideoUNet, LVDM_SCHEDULER};

//! # selfcascade-sd
//!
//! Stable Diffusion 1.x / 2.x / SDXL in burn, loaded from diffusers folders and numerically equal to
//! diffusers, plus the self-cascade pipelines. Module and field names follow diffusers' parameter
//! names, so `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight` is found at
//! `unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1.to_q`.

#![warn(missing_docs)]

pub mod clip;
pub mod error;
pub mod load;
pub mod lvdm;
pub mod nn;
pub mod pipeline;
pub mod train;
pub mod unet;
pub mod upsampler;
pub mod vae;

pub use error::{Error, Result};

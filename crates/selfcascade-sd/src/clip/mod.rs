//! The CLIP text encoders of Stable Diffusion (transformers' `CLIPTextModel` and
//! `CLIPTextModelWithProjection`).

pub mod config;
pub mod text_model;

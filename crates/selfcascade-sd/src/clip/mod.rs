//! CLIP, the text side of Stable Diffusion: the tokenizer and the text encoders (transformers'
//! `CLIPTokenizer`, `CLIPTextModel` and `CLIPTextModelWithProjection`).

pub mod config;
pub mod text_model;
pub mod tokenizer;

pub use tokenizer::{ClipTokenizer, Encoded};

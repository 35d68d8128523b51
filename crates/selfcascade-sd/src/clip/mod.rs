//! CLIP: the text side of Stable Diffusion.

pub mod tokenizer;

pub use tokenizer::{ClipTokenizer, Encoded};

//! Pipelines and the baselines the paper compares against.

pub mod attn_sf;
pub mod scalecrafter;

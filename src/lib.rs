//! # selfcascade
//!
//! Generate images 2×–4× (each side) larger than a pretrained Stable Diffusion model was trained for,
//! without object repetition, by the self-cascade method of "Make a Cheap Scaling: A Self-Cascade
//! Diffusion Model for Higher-Resolution Adaptation" (Guo et al., ECCV 2024).
//!
//! This facade re-exports the workspace crates:
//! - [`cascade`] (`selfcascade-core`): backend-generic schedulers, scale plan, the self-cascade sampler
//!   and the `Denoiser` / `PivotUpsampler` / `FeatureUpsampler` traits;
//! - [`sd`] (`selfcascade-sd`): Stable Diffusion models in burn and weight loading.
//!
//! The backend is a type parameter: `burn::backend::Flex` (CPU, default feature `flex`),
//! `NdArray` (feature `ndarray`) or `Cuda` (feature `cuda`).

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub use selfcascade_core as cascade;
pub use selfcascade_core::{
    ClassifierFreeGuidance, Denoiser, FeatureUpsampler, Interpolation, PivotUpsampler, ScalePlan,
    SeededNoise, SelfCascadeConfig, SelfCascadeSampler, Size,
};
pub use selfcascade_sd as sd;

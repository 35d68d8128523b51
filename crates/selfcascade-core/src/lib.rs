//! # selfcascade-core
//!
//! Backend-generic algorithms of "Make a Cheap Scaling: A Self-Cascade Diffusion Model for
//! Higher-Resolution Adaptation" (Guo et al., ECCV 2024): noise schedulers equal to diffusers', the scale
//! plan, and the pivot-guided self-cascade sampler (Algorithm 2). Nothing here knows Stable Diffusion:
//! models plug in through [`Denoiser`], [`PivotUpsampler`] and [`FeatureUpsampler`].
//!
//! ```
//! use burn::backend::Flex;
//! use selfcascade_core::{
//!     scheduler::{DdimScheduler, NoiseSchedule, SchedulerConfig},
//!     GaussianDenoiser, Interpolation, ScalePlan, SeededNoise, SelfCascadeConfig, SelfCascadeSampler, Size,
//! };
//!
//! let config = SchedulerConfig::from_json(
//!     r#"{"_class_name":"DDIMScheduler","beta_schedule":"scaled_linear","beta_start":0.00085,
//!         "beta_end":0.012,"clip_sample":false,"set_alpha_to_one":false,"steps_offset":1}"#,
//! )?;
//! let mut scheduler = DdimScheduler::new(config, 0.0)?;
//! // Data ~ N(0.5, 0.2²): the exact ε-prediction is known in closed form.
//! let denoiser = GaussianDenoiser::new(0.5, 0.2, scheduler.alphas_cumprod());
//! let plan = ScalePlan::new(Size::new(64, 64), Size::new(256, 256), 64)?; // 64² → 128² → 256²
//! let mut sampler = SelfCascadeSampler {
//!     scheduler: &mut scheduler,
//!     pivot_upsampler: &Interpolation::Bicubic,
//!     config: SelfCascadeConfig { steps: 20, ..Default::default() },
//! };
//! let out = sampler.sample::<GaussianDenoiser>(
//!     &plan, &denoiser, &mut SeededNoise::new(42), &Default::default(), &mut |_| std::ops::ControlFlow::Continue(()),
//! )?;
//! let latent: burn::tensor::Tensor<Flex, 4> = out.latent;
//! assert_eq!(latent.dims(), [1, 4, 32, 32]);
//! # Ok::<(), selfcascade_core::Error>(())
//! ```

#![warn(missing_docs)]

pub mod denoiser;
pub mod error;
pub mod feature;
pub mod guidance;
pub mod noise;
pub mod pivot;
pub mod plan;
pub mod sampler;
pub mod scheduler;

pub use denoiser::{Denoiser, GaussianDenoiser, StepContext};
pub use error::{Error, Result};
pub use feature::FeatureUpsampler;
pub use guidance::ClassifierFreeGuidance;
pub use noise::{InjectedNoise, NoiseSource, PerRowNoise, SeededNoise};
pub use pivot::{upsample_spatial, Interpolation, PivotUpsampler};
pub use plan::{ScalePlan, Size};
pub use sampler::{CascadeOutput, Progress, SelfCascadeConfig, SelfCascadeSampler};

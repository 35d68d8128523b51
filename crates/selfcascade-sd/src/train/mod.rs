//! Algorithm 1 of the paper: training the time-aware feature upsamplers Φ of the tuned self-cascade
//! while the UNet (and the VAE and text encoders that made the data) stay frozen.
//!
//! - [`UpsamplerTrainConfig`]: the hyper-parameters (AdamW with PyTorch's defaults, lr 5e-5, weight
//!   decay 0.01, t ~ U{1..K}, caption dropout 10%);
//! - [`TrainingSet`]: clean high-resolution latents, their pivots and caption conditioning;
//! - [`UpsamplerTrainer`]: one step of Algorithm 1 on burn's autodiff, checkpoints with exact resume;
//! - [`train`]: the run around it (checkpoints every N steps, `loss.csv`, the trained weights);
//! - [`FrozenUNet`]: the UNets it trains for — the image UNet, and [`crate::pipeline::VideoUNet`]
//!   (ModelScope, LVDM), whose examples are clips of F frames `[F, C, H, W]`.
//!
//! Folders of captioned images become a [`TrainingSet`] through [`scan_dataset`] and
//! [`prepare_training_set`] (VAE latents, cached), folders of clips through [`scan_video_dataset`] and
//! [`prepare_video_training_set`]; any other source can fill one directly:
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use burn::tensor::{Distribution, Tensor};
//! use selfcascade_core::scheduler::SchedulerConfig;
//! use selfcascade_sd::train::*;
//! use selfcascade_sd::unet::{resize_nearest, UNet2DConditionModel};
//! use selfcascade_sd::upsampler::{LightUpsampler, LightUpsamplerConfig};
//! # fn main() -> selfcascade_sd::Result<()> {
//! // The tiny random-weight SD 2.1-shaped model of the test fixtures.
//! let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/sd21");
//! let device = Default::default();
//! let unet = UNet2DConditionModel::<Autodiff<Flex>>::load(&model.join("unet"), None, &device)?;
//! let scheduler = SchedulerConfig::from_file(model.join("scheduler/scheduler_config.json"))?;
//! let phi = LightUpsampler::init(&LightUpsamplerConfig::for_unet(&unet), 0, &device)?;
//!
//! // Two examples: a 16×16 latent and its 8×8 pivot, with text conditioning [1, M, 32].
//! let text = || Conditioning::<Flex> {
//!     context: Tensor::random([1, 5, 32], Distribution::Normal(0.0, 1.0), &device),
//!     added: None,
//! };
//! let example = |caption| {
//!     let pivot = Tensor::<Flex, 4>::random([1, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
//!     TrainingExample { latent: resize_nearest(pivot.clone(), (16, 16)), pivot, caption }
//! };
//! let data = TrainingSet {
//!     examples: vec![example(0), example(1)],
//!     captions: vec![text(), text()],
//!     empty_caption: text(),
//! };
//!
//! let config = UpsamplerTrainConfig { steps: 2, batch_size: 2, ..Default::default() };
//! let mut trainer = UpsamplerTrainer::new(unet, phi, &scheduler, config, &device)?;
//! let report = trainer.step(&data)?;
//! assert_eq!(report.step, 1);
//! assert!(report.loss.is_finite());
//! # Ok(()) }
//! ```

mod config;
mod data;
mod dataset;
mod model;
mod trainer;
mod video_dataset;

pub use config::{TimestepSampling, UpsamplerTrainConfig};
pub use data::{Conditioning, TrainingExample, TrainingSet};
pub use dataset::{
    image_tensor, prepare_training_set, resize_and_crop, scan_dataset, DatasetItem, PivotSource,
    PrepareOptions,
};
pub use model::FrozenUNet;
pub use trainer::{
    list_checkpoints, train, RunDir, StepDraws, StepReport, UpsamplerFile, UpsamplerTrainer,
};
pub use video_dataset::{
    prepare_video_training_set, scan_video_dataset, VideoClip, VideoPrepareOptions,
};

impl<B: burn::tensor::backend::Backend> UpsamplerFile for crate::upsampler::LightUpsampler<B> {
    fn save_safetensors(&self, path: &std::path::Path) -> crate::Result<()> {
        crate::upsampler::LightUpsampler::save_safetensors(self, path)
    }
}

impl<B: burn::tensor::backend::Backend> UpsamplerFile for crate::upsampler::ResBlockUpsampler<B> {
    fn save_safetensors(&self, path: &std::path::Path) -> crate::Result<()> {
        crate::upsampler::ResBlockUpsampler::save_safetensors(self, path)
    }
    fn save_release(&self, path: &std::path::Path) -> crate::Result<bool> {
        self.save_pth(path).map(|()| true)
    }
}

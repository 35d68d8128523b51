//! Algorithm 1 of the paper: training the time-aware feature upsamplers Φ of the tuned self-cascade
//! while the UNet (and the VAE and text encoders that made the data) stay frozen.
//!
//! - [`UpsamplerTrainConfig`]: the hyper-parameters (AdamW with PyTorch's defaults, lr 5e-5, weight
//!   decay 0.01, t ~ U{1..K}, caption dropout 10%);
//! - [`TrainingSet`]: clean high-resolution latents, their pivots and caption conditioning;
//! - [`UpsamplerTrainer`]: one step of Algorithm 1 on burn's autodiff, checkpoints with exact resume;
//! - [`train`]: the run around it (checkpoints every N steps, `loss.csv`, the trained weights).

mod config;
mod data;
mod dataset;
mod trainer;

pub use config::{TimestepSampling, UpsamplerTrainConfig};
pub use data::{Conditioning, TrainingExample, TrainingSet};
pub use dataset::{
    image_tensor, prepare_training_set, resize_and_crop, scan_dataset, DatasetItem, PivotSource,
    PrepareOptions,
};
pub use trainer::{
    list_checkpoints, train, RunDir, StepDraws, StepReport, UpsamplerFile, UpsamplerTrainer,
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

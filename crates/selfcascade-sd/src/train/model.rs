//! The frozen UNets Algorithm 1 trains feature upsamplers for: the image UNet (one frame per example)
//! and the video UNets (ModelScope, LVDM), whose examples are clips with their frames folded into the
//! batch.

use crate::error::{Error, Result};
use crate::pipeline::VideoUNet;
use crate::unet::{fold_frames, unfold_frames, UNet2DConditionModel, UNetHooks};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use selfcascade_core::FeatureUpsampler;

/// A UNet whose feature upsamplers [`super::UpsamplerTrainer`] trains while it stays frozen.
///
/// Training tensors are 4-D for every model: an example of F frames is F rows `[F, C, H, W]` (F = 1 for
/// an image), and a batch of N examples is `[N·F, C, H, W]` with each example's frames adjacent — the
/// layout the video UNets use for their spatial layers and pivots ([`fold_frames`]).
pub trait FrozenUNet<B: Backend>: Clone + Send + Sized {
    /// Latent channels in.
    fn in_channels(&self) -> usize;
    /// Width of the text conditioning (`encoder_hidden_states`).
    fn cross_attention_dim(&self) -> usize;
    /// Whether examples may hold more than one frame (a video UNet).
    fn is_video(&self) -> bool;
    /// Errors unless `upsampler` has this UNet's injection points and channels.
    fn check_feature_upsampler(&self, upsampler: &dyn FeatureUpsampler<B>) -> Result<()>;
    /// This UNet with none of its parameters tracked for gradients.
    fn frozen(self) -> Self;
    /// A copy of this UNet on `device`.
    fn fork(self, device: &B::Device) -> Self;
    /// The prediction for `noisy` `[N·F, C, H, W]` (N examples of `frames` frames each) at one timestep
    /// per example, with text `context` `[N, M, D]`, SDXL's `added` conditioning (image UNet only) and
    /// `hooks` (the pivot is `[N·F, C, H/2, W/2]`). Returns `[N·F, C, H, W]`.
    fn predict(
        &self,
        noisy: Tensor<B, 4>,
        frames: usize,
        timesteps: &[f64],
        context: Tensor<B, 3>,
        added: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>>;
}

impl<B: Backend> FrozenUNet<B> for UNet2DConditionModel<B> {
    fn in_channels(&self) -> usize {
        self.config().in_channels
    }

    fn cross_attention_dim(&self) -> usize {
        self.arch().cross_attention_dim
    }

    fn is_video(&self) -> bool {
        false
    }

    fn check_feature_upsampler(&self, upsampler: &dyn FeatureUpsampler<B>) -> Result<()> {
        UNet2DConditionModel::check_feature_upsampler(self, upsampler)
    }

    fn frozen(self) -> Self {
        self.no_grad()
    }

    fn fork(self, device: &B::Device) -> Self {
        Module::fork(self, device)
    }

    fn predict(
        &self,
        noisy: Tensor<B, 4>,
        frames: usize,
        timesteps: &[f64],
        context: Tensor<B, 3>,
        added: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        if frames != 1 {
            return Err(Error::Input(format!(
                "examples of {frames} frames for an image UNet; it trains on single images (one frame \
                 each), clips need a video UNet"
            )));
        }
        self.forward(noisy, timesteps, context, added, hooks)
    }
}

impl<B: Backend> FrozenUNet<B> for VideoUNet<B> {
    fn in_channels(&self) -> usize {
        VideoUNet::in_channels(self)
    }

    fn cross_attention_dim(&self) -> usize {
        match self {
            Self::ModelScope(u) => u.arch().cross_attention_dim,
            Self::Lvdm(u) => u.config().context_dim,
        }
    }

    fn is_video(&self) -> bool {
        true
    }

    fn check_feature_upsampler(&self, upsampler: &dyn FeatureUpsampler<B>) -> Result<()> {
        VideoUNet::check_feature_upsampler(self, upsampler)
    }

    fn frozen(self) -> Self {
        match self {
            Self::ModelScope(u) => Self::ModelScope(Box::new(u.no_grad())),
            Self::Lvdm(u) => Self::Lvdm(Box::new(u.no_grad())),
        }
    }

    fn fork(self, device: &B::Device) -> Self {
        match self {
            Self::ModelScope(u) => Self::ModelScope(Box::new(Module::fork(*u, device))),
            Self::Lvdm(u) => Self::Lvdm(Box::new(Module::fork(*u, device))),
        }
    }

    fn predict(
        &self,
        noisy: Tensor<B, 4>,
        frames: usize,
        timesteps: &[f64],
        context: Tensor<B, 3>,
        added: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        if added.is_some() {
            return Err(Error::Input(
                "SDXL's added conditioning was given to a video UNet, which takes text only".into(),
            ));
        }
        let video = unfold_frames(noisy, frames)?;
        Ok(fold_frames(self.forward(video, timesteps, context, hooks)?))
    }
}

impl<A: AutodiffBackend> VideoUNet<A> {
    /// The autodiff twin of an inner-backend video UNet (the same weights, for training).
    pub fn from_inner(inner: VideoUNet<A::InnerBackend>) -> Self {
        match inner {
            VideoUNet::ModelScope(u) => Self::ModelScope(Box::new(AutodiffModule::from_inner(*u))),
            VideoUNet::Lvdm(u) => Self::Lvdm(Box::new(AutodiffModule::from_inner(*u))),
        }
    }
}

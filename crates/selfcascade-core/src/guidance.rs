//! Classifier-free guidance as an adaptor over any [`Denoiser`].

use crate::denoiser::{Denoiser, StepContext};
use crate::error::{Error, Result};
use crate::scheduler::PredictionType;
use burn::tensor::{backend::Backend, Tensor};

/// ε = ε(x, ∅) + w·(ε(x, c) − ε(x, ∅)).
///
/// `inner` must be conditioned on a batch of 2B: the B unconditional rows first, then the B conditional
/// rows (diffusers' order). The adaptor repeats the latents and the pivot explicitly (no broadcasting),
/// runs `inner` once and combines the halves.
#[derive(Debug, Clone)]
pub struct ClassifierFreeGuidance<T> {
    /// The doubly-conditioned denoiser.
    pub inner: T,
    /// Guidance scale w.
    pub scale: f64,
}

impl<T> ClassifierFreeGuidance<T> {
    /// Wraps `inner` with guidance scale `scale`.
    pub fn new(inner: T, scale: f64) -> Self {
        Self { inner, scale }
    }
}

/// Stacks a tensor on itself along the batch axis.
pub fn repeat_batch<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::cat(vec![x.clone(), x], 0)
}

impl<B: Backend, const D: usize, T: Denoiser<B, D>> Denoiser<B, D> for ClassifierFreeGuidance<T> {
    fn prediction_type(&self) -> PredictionType {
        self.inner.prediction_type()
    }

    fn predict(&self, latents: Tensor<B, D>, ctx: &StepContext<B, D>) -> Result<Tensor<B, D>> {
        let batch = latents.dims()[0];
        let doubled = StepContext {
            pivot: ctx.pivot.clone().map(repeat_batch),
            ..ctx.clone()
        };
        let out = self.inner.predict(repeat_batch(latents), &doubled)?;
        if out.dims()[0] != 2 * batch {
            return Err(Error::Model(format!(
                "guided denoiser returned batch {} for an input batch of {}",
                out.dims()[0],
                2 * batch
            )));
        }
        let uncond = out.clone().narrow(0, 0, batch);
        let cond = out.narrow(0, batch, batch);
        Ok(uncond.clone().add(cond.sub(uncond).mul_scalar(self.scale)))
    }
}

//! The training set of Algorithm 1 in memory: clean high-resolution latents, their pivots and the
//! text conditioning of their captions.

use super::model::FrozenUNet;
use crate::error::{Error, Result};
use burn::tensor::{backend::Backend, Tensor};

/// The text conditioning of one caption, batch 1: what the UNet takes besides the sample.
#[derive(Debug, Clone)]
pub struct Conditioning<B: Backend> {
    /// `encoder_hidden_states` `[1, M, cross_attention_dim]`.
    pub context: Tensor<B, 3>,
    /// SDXL's `(text_embeds [1, D], time_ids [1, 6])`; `None` for SD 1.x/2.x.
    pub added: Option<(Tensor<B, 2>, Tensor<B, 2>)>,
}

/// One training example: an image (F = 1) or a clip of F frames, one row per frame.
#[derive(Debug, Clone)]
pub struct TrainingExample<B: Backend> {
    /// The clean high-resolution latent z₀ʳ `[F, C, H, W]`, scaled by the VAE's scaling factor.
    pub latent: Tensor<B, 4>,
    /// The clean pivot z₀^{r−1} `[F, C, H/2, W/2]`, scaled once like `latent`.
    pub pivot: Tensor<B, 4>,
    /// Index of its caption in [`TrainingSet::captions`].
    pub caption: usize,
}

/// Examples, the conditioning of their captions, and of the empty caption (used for caption dropout).
#[derive(Debug, Clone)]
pub struct TrainingSet<B: Backend> {
    /// The examples; all share one latent size.
    pub examples: Vec<TrainingExample<B>>,
    /// The conditioning of each distinct caption.
    pub captions: Vec<Conditioning<B>>,
    /// The conditioning of the empty caption.
    pub empty_caption: Conditioning<B>,
}

impl<B: Backend> TrainingSet<B> {
    /// `[F, C, H, W]` of one example's latent (F = 1 for images, the frames of a clip otherwise).
    pub fn latent_shape(&self) -> Result<[usize; 4]> {
        let first = self
            .examples
            .first()
            .ok_or_else(|| Error::Input("the training set has no examples".into()))?;
        Ok(first.latent.dims())
    }

    /// The conditioning of example `i`, or of the empty caption when `dropped`.
    pub fn conditioning(&self, i: usize, dropped: bool) -> Result<&Conditioning<B>> {
        if dropped {
            return Ok(&self.empty_caption);
        }
        let e = self.examples.get(i).ok_or_else(|| {
            Error::Input(format!(
                "no example {i}; the set has {}",
                self.examples.len()
            ))
        })?;
        self.captions.get(e.caption).ok_or_else(|| {
            Error::Input(format!(
                "example {i} names caption {} but the set has {} captions",
                e.caption,
                self.captions.len()
            ))
        })
    }

    /// Checks the set against `unet`: at least one example, every latent `[F, in_channels, H, W]` of
    /// one shape (F = 1 unless the UNet is a video UNet), every pivot half of it, every caption index
    /// valid, every conditioning of one shape and of the UNet's text width.
    pub fn check<BU: Backend, M: FrozenUNet<BU>>(&self, unet: &M) -> Result<()> {
        let [f, c, h, w] = self.latent_shape()?;
        let cin = unet.in_channels();
        if c != cin {
            return Err(Error::Input(format!(
                "training latents have {c} channels; the UNet takes {cin}"
            )));
        }
        if f == 0 || (f != 1 && !unet.is_video()) {
            return Err(Error::Input(format!(
                "training examples of {f} frames; an image UNet trains on single images [1, {c}, H, W]"
            )));
        }
        for (i, e) in self.examples.iter().enumerate() {
            let l = e.latent.dims();
            let p = e.pivot.dims();
            if l != [f, c, h, w] {
                return Err(Error::Input(format!(
                    "example {i}: latent {l:?}; every latent must be [{f}, {c}, {h}, {w}] like the first \
                     (train one resolution and frame count per run)"
                )));
            }
            if p != [f, c, h / 2, w / 2] || h % 2 != 0 || w % 2 != 0 {
                return Err(Error::Input(format!(
                    "example {i}: pivot {p:?} for a latent {l:?}; the pivot must be [{f}, {c}, H/2, W/2] \
                     (the previous stage, half the size)"
                )));
            }
            self.conditioning(i, false)?;
        }
        let shape = |k: &Conditioning<B>| {
            (
                k.context.dims(),
                k.added.as_ref().map(|(t, i)| (t.dims(), i.dims())),
            )
        };
        let reference = shape(&self.empty_caption);
        let cross = unet.cross_attention_dim();
        if reference.0[0] != 1 || reference.0[2] != cross {
            return Err(Error::Input(format!(
                "caption conditioning {:?}; the UNet expects [1, M, {cross}]",
                reference.0
            )));
        }
        if let Some(k) = self.captions.iter().find(|k| shape(k) != reference) {
            return Err(Error::Input(format!(
                "caption conditioning shapes differ: {:?} against the empty caption's {reference:?}",
                shape(k)
            )));
        }
        Ok(())
    }
}

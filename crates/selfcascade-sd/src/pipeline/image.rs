//! Converting decoded images to 8-bit RGB, as diffusers' `VaeImageProcessor.postprocess` does.

use crate::error::{Error, Result};
use burn::tensor::{backend::Backend, Tensor};

/// An 8-bit RGB image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major RGB bytes.
    pub pixels: Vec<u8>,
}

/// `[B, 3, H, W]` in [−1, 1] → B images: `round(clamp(x/2 + 0.5, 0, 1) · 255)`.
pub fn to_rgb8<B: Backend>(images: Tensor<B, 4>) -> Result<Vec<RgbImage>> {
    let [b, c, h, w] = images.dims();
    if c != 3 {
        return Err(Error::Input(format!(
            "expected 3-channel images, got {c} channels"
        )));
    }
    let data = images
        .div_scalar(2.0)
        .add_scalar(0.5)
        .clamp(0.0, 1.0)
        .mul_scalar(255.0)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| Error::Input(format!("cannot read image data: {e:?}")))?;
    let plane = h * w;
    Ok((0..b)
        .map(|i| {
            let img = &data[i * 3 * plane..(i + 1) * 3 * plane];
            let mut pixels = Vec::with_capacity(3 * plane);
            for p in 0..plane {
                for ch in 0..3 {
                    pixels.push(img[ch * plane + p].round() as u8);
                }
            }
            RgbImage {
                width: w,
                height: h,
                pixels,
            }
        })
        .collect())
}

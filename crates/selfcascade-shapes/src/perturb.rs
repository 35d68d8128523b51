//! Degradations that imitate generated images, for testing the measurement's robustness: Gaussian
//! noise, Gaussian blur and a global colour cast. All are deterministic.

use image::RgbImage;

use crate::mathx::SplitMix64;

/// Adds independent Gaussian noise of standard deviation `sigma` (in 8-bit levels) to every channel,
/// drawn from `seed`; results are rounded and clamped.
pub fn add_gaussian_noise(image: &RgbImage, sigma: f32, seed: u64) -> RgbImage {
    let mut rng = SplitMix64::new(seed);
    let mut out = image.clone();
    for v in out.iter_mut() {
        let x = *v as f64 + sigma as f64 * rng.normal();
        *v = (x + 0.5).floor().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Separable Gaussian blur of standard deviation `sigma` pixels (kernel radius ⌈3σ⌉, edges clamped).
/// `sigma <= 0` (or non-finite) returns a copy.
pub fn gaussian_blur(image: &RgbImage, sigma: f32) -> RgbImage {
    if sigma.is_nan() || sigma <= 0.0 || sigma > 1000.0 || image.width() == 0 || image.height() == 0
    {
        return image.clone();
    }
    let radius = (3.0 * sigma).ceil() as i64;
    let kernel: Vec<f64> = (-radius..=radius)
        .map(|d| {
            let t = d as f64 / sigma as f64;
            // exp(-t²/2) through the standard library is fine here: blur is a test aid, not a renderer.
            (-0.5 * t * t).exp()
        })
        .collect();
    let norm: f64 = kernel.iter().sum();
    let (w, h) = (image.width() as i64, image.height() as i64);
    let src: Vec<f64> = image.iter().map(|&v| v as f64).collect();
    let pass = |src: &[f64], horizontal: bool| -> Vec<f64> {
        let mut dst = vec![0.0; src.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let mut acc = 0.0;
                    for (i, k) in kernel.iter().enumerate() {
                        let d = i as i64 - radius;
                        let (sx, sy) = if horizontal {
                            ((x + d).clamp(0, w - 1), y)
                        } else {
                            (x, (y + d).clamp(0, h - 1))
                        };
                        acc += k * src[((sy * w + sx) * 3 + c) as usize];
                    }
                    dst[((y * w + x) * 3 + c) as usize] = acc / norm;
                }
            }
        }
        dst
    };
    let tmp = pass(&src, true);
    let res = pass(&tmp, false);
    let mut out = image.clone();
    for (v, r) in out.iter_mut().zip(res) {
        *v = (r + 0.5).floor().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Adds `shift[c]` levels to channel `c` of every pixel (clamped): a global colour cast.
pub fn color_shift(image: &RgbImage, shift: [i16; 3]) -> RgbImage {
    let mut out = image.clone();
    for px in out.pixels_mut() {
        for (v, s) in px.0.iter_mut().zip(shift) {
            *v = (*v as i16 + s).clamp(0, 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perturbations_keep_size_and_are_deterministic() {
        let img = crate::render(&crate::Scene::sample(1), 16, 16).unwrap();
        assert_eq!(
            add_gaussian_noise(&img, 10.0, 3),
            add_gaussian_noise(&img, 10.0, 3)
        );
        assert_eq!(gaussian_blur(&img, 0.0), img);
        assert_eq!(gaussian_blur(&img, 1.0).dimensions(), (16, 16));
        assert_eq!(color_shift(&img, [0, 0, 0]), img);
        assert_eq!(
            gaussian_blur(&RgbImage::new(0, 0), 1.0).dimensions(),
            (0, 0)
        );
    }
}

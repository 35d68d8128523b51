//! Resolution-independent, bit-deterministic renderer.

use image::{Rgb, RgbImage};

use crate::mathx::{sin_cos, ValueNoise};
use crate::scene::{Background, Geometry, Scene, SceneObject};
use crate::ShapesError;

/// Largest width or height accepted by the renderer and the conversions.
pub const MAX_SIDE: u32 = 8192;

/// Texture octaves: (cells per canvas side, amplitude in 8-bit levels). The sum of amplitudes bounds
/// the texture at ±8 levels, far below the ≈50-level margin between the palettes.
pub const TEXTURE_OCTAVES: [(f64, f64); 2] = [(5.0, 5.0), (13.0, 3.0)];

/// Supersampling grid per axis on edge pixels (4 × 4 = 16 samples).
const SUPERSAMPLE: usize = 4;

pub(crate) fn check_size(width: u32, height: u32) -> Result<(), ShapesError> {
    if width == 0 || height == 0 {
        return Err(ShapesError::EmptyImage { width, height });
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(ShapesError::TooLarge {
            width,
            height,
            max: MAX_SIDE,
        });
    }
    Ok(())
}

/// Background colour (0–255 scale, unrounded) at canvas point `(u, v)`.
fn background_at(
    bg: &Background,
    texture: &[(ValueNoise, f64)],
    dir: (f64, f64),
    u: f64,
    v: f64,
) -> [f64; 3] {
    let t = (0.5 + ((u - 0.5) * dir.0 + (v - 0.5) * dir.1) * std::f64::consts::FRAC_1_SQRT_2)
        .clamp(0.0, 1.0);
    let strength = if bg.gradient_strength.is_finite() {
        (bg.gradient_strength as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let tone = 1.0 - strength * t;
    let mut tex = 0.0;
    for (noise, amp) in texture {
        tex += amp * noise.sample(u, v);
    }
    let base = bg.color.rgb();
    [
        base[0] as f64 * tone + tex,
        base[1] as f64 * tone + tex,
        base[2] as f64 * tone + tex,
    ]
}

fn to_u8(x: f64) -> u8 {
    // Round half up; NaN maps to 0 through the saturating cast.
    (x + 0.5).floor().clamp(0.0, 255.0) as u8
}

/// Renders `scene` into a `width × height` sRGB image.
///
/// Pixel `(i, j)` samples the canvas at its centre `((i + ½)/width, (j + ½)/height)`, so the same scene
/// depicts the same picture at every resolution (a non-square canvas stretches it). Object coverage is
/// computed by 4 × 4 supersampling on pixels within one pixel of an edge (exact 0/1 elsewhere) and
/// blended linearly with the background. Only IEEE basic operations are used, so the bytes are identical
/// on every platform.
///
/// # Errors
/// [`ShapesError::EmptyImage`] when a side is 0, [`ShapesError::TooLarge`] above [`MAX_SIDE`].
/// Any scene renders without panicking (non-finite parameters give a degenerate picture).
pub fn render(scene: &Scene, width: u32, height: u32) -> Result<RgbImage, ShapesError> {
    render_composite(
        &scene.background,
        scene.texture_seed,
        &[scene.object()],
        width,
        height,
    )
}

/// Renders any number of objects, painted in order (later ones on top), over the background
/// `background` with texture `texture_seed` — e.g. a synthetic "repetition" picture with several copies
/// of an object. With one object this is exactly [`render`].
///
/// # Errors
/// As [`render`].
pub fn render_composite(
    background: &Background,
    texture_seed: u64,
    objects: &[SceneObject],
    width: u32,
    height: u32,
) -> Result<RgbImage, ShapesError> {
    check_size(width, height)?;
    let layers: Vec<(Geometry, [f64; 3])> = objects
        .iter()
        .map(|o| {
            let c = o.color.rgb();
            (o.geometry(), [c[0] as f64, c[1] as f64, c[2] as f64])
        })
        .collect();
    let dir = sin_cos(background.gradient_angle as f64);
    let dir = (dir.1, dir.0);
    let texture: Vec<(ValueNoise, f64)> = TEXTURE_OCTAVES
        .iter()
        .enumerate()
        .map(|(octave, &(freq, amp))| (ValueNoise::new(texture_seed, octave as u64, freq), amp))
        .collect();
    let (w, h) = (width as f64, height as f64);
    // Half pixel diagonal (upper bound) in canvas units: beyond it all subsamples agree.
    let band = 0.5 * ((1.0 / (w * w)) + (1.0 / (h * h))).sqrt() * 1.0001;
    let n = SUPERSAMPLE as f64;
    let mut img = RgbImage::new(width, height);
    let mut coverages = vec![0.0f64; layers.len()];
    for j in 0..height {
        let v = (j as f64 + 0.5) / h;
        for i in 0..width {
            let u = (i as f64 + 0.5) / w;
            // The background is needed unless some layer covers the pixel fully.
            let mut first_visible = 0;
            for (k, (geom, _)) in layers.iter().enumerate() {
                let d = geom.signed_distance_bound(u, v);
                coverages[k] = if d > band {
                    0.0
                } else if d < -band {
                    1.0
                } else {
                    let mut hits = 0u32;
                    for sj in 0..SUPERSAMPLE {
                        let y = (j as f64 + (sj as f64 + 0.5) / n) / h;
                        for si in 0..SUPERSAMPLE {
                            let x = (i as f64 + (si as f64 + 0.5) / n) / w;
                            hits += geom.contains(x, y) as u32;
                        }
                    }
                    hits as f64 / (n * n)
                };
                if coverages[k] >= 1.0 {
                    first_visible = k;
                }
            }
            let mut px = if coverages.get(first_visible).is_some_and(|&c| c >= 1.0) {
                layers[first_visible].1
            } else {
                first_visible = 0;
                background_at(background, &texture, dir, u, v)
            };
            for (k, (_, col)) in layers.iter().enumerate().skip(first_visible) {
                let c = coverages[k];
                if c >= 1.0 {
                    px = *col;
                } else if c > 0.0 {
                    px = [
                        px[0] + (col[0] - px[0]) * c,
                        px[1] + (col[1] - px[1]) * c,
                        px[2] + (col[2] - px[2]) * c,
                    ];
                }
            }
            img.put_pixel(i, j, Rgb([to_u8(px[0]), to_u8(px[1]), to_u8(px[2])]));
        }
    }
    Ok(img)
}

/// Renders `scene` as a channel-first `[3, height, width]` float buffer in `[-1, 1]`
/// (`value = byte / 127.5 − 1`), the range diffusion models train on. Same pixels as [`render`].
///
/// # Errors
/// As [`render`].
pub fn render_chw(scene: &Scene, width: u32, height: u32) -> Result<Vec<f32>, ShapesError> {
    Ok(image_to_chw(&render(scene, width, height)?))
}

/// Converts an image to a channel-first `[3, H, W]` buffer in `[-1, 1]` (`byte / 127.5 − 1`).
/// An empty image gives an empty buffer.
pub fn image_to_chw(image: &RgbImage) -> Vec<f32> {
    let (w, h) = image.dimensions();
    let plane = w as usize * h as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (k, px) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + k] = px.0[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

/// Converts a channel-first `[3, height, width]` buffer in `[-1, 1]` (e.g. a model's output) to an
/// image: values are clamped to `[-1, 1]`, mapped to `0..=255` and rounded; NaN becomes 0.
///
/// # Errors
/// [`ShapesError::EmptyImage`] / [`ShapesError::TooLarge`] for bad sizes, [`ShapesError::BufferSize`]
/// when `data.len() != 3 * width * height`.
pub fn chw_to_image(data: &[f32], width: u32, height: u32) -> Result<RgbImage, ShapesError> {
    check_size(width, height)?;
    let plane = width as usize * height as usize;
    if data.len() != 3 * plane {
        return Err(ShapesError::BufferSize {
            got: data.len(),
            expected: 3 * plane,
        });
    }
    let mut img = RgbImage::new(width, height);
    for (k, px) in img.pixels_mut().enumerate() {
        for c in 0..3 {
            let x = data[c * plane + k];
            let x = if x.is_nan() { -1.0 } else { x.clamp(-1.0, 1.0) };
            px.0[c] = to_u8((x as f64 + 1.0) * 127.5);
        }
    }
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_sizes_are_errors() {
        let s = Scene::sample(0);
        assert!(matches!(
            render(&s, 0, 10),
            Err(ShapesError::EmptyImage { .. })
        ));
        assert!(matches!(
            render(&s, 10, 0),
            Err(ShapesError::EmptyImage { .. })
        ));
        assert!(matches!(
            render(&s, MAX_SIDE + 1, 4),
            Err(ShapesError::TooLarge { .. })
        ));
        assert!(matches!(
            chw_to_image(&[0.0; 5], 2, 2),
            Err(ShapesError::BufferSize { .. })
        ));
    }

    #[test]
    fn chw_round_trip() {
        let s = Scene::sample(4);
        let img = render(&s, 24, 16).unwrap();
        let chw = render_chw(&s, 24, 16).unwrap();
        assert_eq!(chw.len(), 3 * 24 * 16);
        assert!(chw.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_eq!(chw_to_image(&chw, 24, 16).unwrap(), img);
    }

    #[test]
    fn degenerate_scenes_do_not_panic() {
        let mut s = Scene::sample(9);
        s.size = f32::NAN;
        s.center = (f32::INFINITY, -3.0);
        s.background.gradient_strength = f32::NAN;
        s.rotation = f32::NEG_INFINITY;
        render(&s, 8, 8).unwrap();
        s.size = 0.0;
        render(&s, 8, 8).unwrap();
    }
}

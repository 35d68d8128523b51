//! Image resampling that reproduces Pillow's `Image.resize` exactly, and the two ways of bringing an
//! image to the Inception's 299×299 input.
//!
//! Pillow resizes separably: a horizontal pass over the rows the vertical pass will read, then a
//! vertical pass. Each output sample is a normalised weighted sum over the input samples within the
//! filter's support, widened by the downscaling factor (so downscaling antialiases). For 8-bit images
//! the normalised weights are rounded to 22-bit fixed point and every pass rounds and clamps to 0..=255;
//! for 32-bit float images (`mode "F"`) the sums are accumulated in double precision and stored as
//! float32. Both paths are reproduced here, including the rounding, so a PNG gives the same numbers as
//! clean-fid's Python preprocessing (checked by `tools/oracle/fid.py`).

use image::RgbImage;

/// Pillow's resampling filters used by the FID protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Image.BICUBIC`: Keys' cubic with a = −0.5, support 2.
    Bicubic,
    /// `Image.LANCZOS`: a 3-lobed Lanczos window, support 3.
    Lanczos,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// The taps of one pass: for each output sample, the first input index and its normalised weights.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<f64>>,
}

/// Pillow's `precompute_coeffs` for the whole input range.
fn taps(in_size: usize, out_size: usize, filter: Filter) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    // Pillow multiplies by the reciprocal (not a division): kept for bit-equal weights.
    let ss = 1.0 / filterscale;
    let mut first = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C's `(int)` truncates toward zero; the clamps follow.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(0) as usize;
        let mut k: Vec<f64> = (xmin..xmax.max(xmin))
            .map(|x| filter.weight((x as f64 - center + 0.5) * ss))
            .collect();
        let total: f64 = k.iter().sum();
        if total != 0.0 {
            k.iter_mut().for_each(|w| *w /= total);
        }
        first.push(xmin);
        weights.push(k);
    }
    Taps { first, weights }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The weights in Pillow's 22-bit fixed point (`normalize_coeffs_8bpc`).
fn fixed_point(taps: &Taps) -> Vec<Vec<i64>> {
    let one = (1u64 << PRECISION_BITS) as f64;
    taps.weights
        .iter()
        .map(|k| {
            k.iter()
                .map(|&w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i64
                    } else {
                        (0.5 + w * one) as i64
                    }
                })
                .collect()
        })
        .collect()
}

/// Pillow ≥ 13 runs the vertical pass first when the height shrinks by more than twice as many pixels
/// as the width (Pillow < 13 always ran the horizontal pass first; the order changes float results in
/// the last bit and 8-bit results by at most one level).
fn vertical_first((w, h): (usize, usize), (out_w, out_h): (usize, usize)) -> bool {
    let (dy, dx) = (h as i64 - out_h as i64, w as i64 - out_w as i64);
    dy > 0 && dy > dx * 2
}

/// One separable pass over `channels`-interleaved samples of a `w × h` image, along x (`horizontal`)
/// or y: output sample `o` combines the input samples `first[o]..` with `weights[o]` by `combine`.
fn pass<T: Copy + Default, W>(
    src: &[T],
    (w, h): (usize, usize),
    channels: usize,
    horizontal: bool,
    (first, weights): (&[usize], &[Vec<W>]),
    combine: impl Fn(&[W], &mut dyn Iterator<Item = T>) -> T,
) -> Vec<T> {
    let n_out = first.len();
    let (ow, oh) = if horizontal { (n_out, h) } else { (w, n_out) };
    let mut out = vec![T::default(); ow * oh * channels];
    for y in 0..oh {
        for x in 0..ow {
            let (o, fixed) = if horizontal { (x, y) } else { (y, x) };
            let k = &weights[o];
            for c in 0..channels {
                let mut values = (first[o]..first[o] + k.len()).map(|i| {
                    let (sx, sy) = if horizontal { (i, fixed) } else { (fixed, i) };
                    src[(sy * w + sx) * channels + c]
                });
                out[(y * ow + x) * channels + c] = combine(k, &mut values);
            }
        }
    }
    out
}

/// Runs the passes that change a dimension, in Pillow's order; `run(data, size, horizontal)`.
fn resize_separable<T: Clone>(
    src: &[T],
    (w, h): (usize, usize),
    (out_w, out_h): (usize, usize),
    run: impl Fn(&[T], (usize, usize), bool) -> Vec<T>,
) -> Vec<T> {
    let order = if vertical_first((w, h), (out_w, out_h)) {
        [false, true]
    } else {
        [true, false]
    };
    let mut data = src.to_vec();
    let mut size = (w, h);
    for horizontal in order {
        if horizontal && out_w != w {
            data = run(&data, size, true);
            size.0 = out_w;
        } else if !horizontal && out_h != h {
            data = run(&data, size, false);
            size.1 = out_h;
        }
    }
    data
}

/// Resizes one float plane (`[h, w]` row-major) like Pillow resizes a `mode "F"` image: weights and
/// sums in double precision, each pass stored as float32. Errors if `src` does not hold `w × h` values.
pub fn resize_plane_f32(
    src: &[f32],
    (w, h): (usize, usize),
    (out_w, out_h): (usize, usize),
    filter: Filter,
) -> crate::Result<Vec<f32>> {
    if src.len() != w * h {
        return Err(crate::Error::Input(format!(
            "a {w}×{h} plane needs {} values, got {}",
            w * h,
            src.len()
        )));
    }
    Ok(resize_plane(src, (w, h), (out_w, out_h), filter))
}

/// [`resize_plane_f32`] on a plane known to hold `w × h` values.
fn resize_plane(
    src: &[f32],
    (w, h): (usize, usize),
    (out_w, out_h): (usize, usize),
    filter: Filter,
) -> Vec<f32> {
    let (th, tv) = (taps(w, out_w, filter), taps(h, out_h, filter));
    resize_separable(src, (w, h), (out_w, out_h), |data, size, horizontal| {
        let t = if horizontal { &th } else { &tv };
        pass(
            data,
            size,
            1,
            horizontal,
            (&t.first, &t.weights),
            |k, values| values.zip(k).fold(0.0f64, |s, (v, wt)| s + v as f64 * wt) as f32,
        )
    })
}

/// Resizes an 8-bit RGB image like Pillow resizes a `mode "RGB"` image (22-bit fixed-point weights,
/// each pass rounded and clamped to 0..=255).
pub fn resize_rgb8(src: &RgbImage, out_w: u32, out_h: u32, filter: Filter) -> RgbImage {
    let (w, h) = (src.width() as usize, src.height() as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let (th, tv) = (taps(w, ow, filter), taps(h, oh, filter));
    let (kh, kv) = (fixed_point(&th), fixed_point(&tv));
    let half = 1i64 << (PRECISION_BITS - 1);
    let data = resize_separable(src.as_raw(), (w, h), (ow, oh), |data, size, horizontal| {
        let (first, k) = if horizontal {
            (&th.first, &kh)
        } else {
            (&tv.first, &kv)
        };
        pass(data, size, 3, horizontal, (first, k), |k, values| {
            let s = values.zip(k).fold(half, |s, (v, wt)| s + v as i64 * wt);
            (s >> PRECISION_BITS).clamp(0, 255) as u8
        })
    });
    RgbImage::from_raw(out_w, out_h, data).expect("buffer sized for the output")
}

/// How an image is brought to the network's square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preprocess {
    /// clean-fid's `mode="clean"`: each channel as a float image, resized straight to the input size
    /// with Pillow's bicubic filter (the aspect ratio is not kept), clipped to 0..=255.
    #[default]
    Clean,
    /// The shorter side resized to the input size with Pillow's Lanczos filter on the 8-bit image
    /// (the longer side to `⌊size · long / short⌋`, as torchvision's `Resize(size)`), then the centre
    /// square cropped (offsets rounded half to even, as torchvision's `CenterCrop`).
    LanczosCrop,
}

impl Preprocess {
    /// The name used on the command line and in feature caches.
    pub fn name(self) -> &'static str {
        match self {
            Preprocess::Clean => "clean",
            Preprocess::LanczosCrop => "lanczos-crop",
        }
    }

    /// Parses [`Preprocess::name`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "clean" => Some(Preprocess::Clean),
            "lanczos-crop" => Some(Preprocess::LanczosCrop),
            _ => None,
        }
    }

    /// The image as `[3, size, size]` channel-major float values in 0..=255 (zeros for an empty image;
    /// [`crate::features::image_features`] refuses those).
    pub fn apply(self, img: &RgbImage, size: usize) -> Vec<f32> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        match self {
            Preprocess::Clean => {
                let mut out = Vec::with_capacity(3 * size * size);
                for c in 0..3 {
                    let plane: Vec<f32> = img.pixels().map(|p| p.0[c] as f32).collect();
                    let resized = resize_plane(&plane, (w, h), (size, size), Filter::Bicubic);
                    out.extend(resized.into_iter().map(|v| v.clamp(0.0, 255.0)));
                }
                out
            }
            // An empty image has nothing to resize (and no shorter side to divide by).
            _ if w == 0 || h == 0 => vec![0.0; 3 * size * size],
            Preprocess::LanczosCrop => {
                let (short, long) = (w.min(h), w.max(h));
                let long = size * long / short;
                let (rw, rh) = if w <= h { (size, long) } else { (long, size) };
                let resized = resize_rgb8(img, rw as u32, rh as u32, Filter::Lanczos);
                let left = round_half_even((rw - size) as f64 / 2.0);
                let top = round_half_even((rh - size) as f64 / 2.0);
                let mut out = vec![0f32; 3 * size * size];
                for y in 0..size {
                    for x in 0..size {
                        let p = resized.get_pixel((left + x) as u32, (top + y) as u32);
                        for c in 0..3 {
                            out[(c * size + y) * size + x] = p.0[c] as f32;
                        }
                    }
                }
                out
            }
        }
    }
}

/// Python's `round` on a non-negative half-integer or integer.
fn round_half_even(x: f64) -> usize {
    let f = x.floor();
    let r = if x - f == 0.5 {
        if (f as usize).is_multiple_of(2) {
            f
        } else {
            f + 1.0
        }
    } else {
        x.round()
    };
    r as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_identity_is_a_copy() {
        for filter in [Filter::Bicubic, Filter::Lanczos] {
            for (i, o) in [(10, 3), (3, 10), (299, 299), (1000, 299), (7, 1)] {
                let t = taps(i, o, filter);
                for k in &t.weights {
                    assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-12);
                }
            }
        }
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
        assert_eq!(resize_rgb8(&img, 5, 4, Filter::Lanczos), img);
    }

    #[test]
    fn constant_images_stay_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 3, 77]));
        let out = resize_rgb8(&img, 11, 50, Filter::Lanczos);
        assert!(out.pixels().all(|p| p.0 == [200, 3, 77]));
        let plane = vec![42.5f32; 37 * 23];
        let out = resize_plane_f32(&plane, (37, 23), (299, 299), Filter::Bicubic).unwrap();
        assert!(resize_plane_f32(&plane, (36, 23), (5, 5), Filter::Bicubic).is_err());
        assert!(out.iter().all(|v| (v - 42.5).abs() < 1e-4));
    }

    #[test]
    fn lanczos_crop_keeps_the_centre_and_python_rounding() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.0), 2);
        // A wide image whose left and right thirds differ from its centre: the crop sees the centre.
        let img = RgbImage::from_fn(900, 299, |x, _| {
            image::Rgb(if (300..600).contains(&x) {
                [255; 3]
            } else {
                [0; 3]
            })
        });
        let out = Preprocess::LanczosCrop.apply(&img, 299);
        assert_eq!(out.len(), 3 * 299 * 299);
        assert!(out[299 * 150 + 150] > 250.0);
    }
}

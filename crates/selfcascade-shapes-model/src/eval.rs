//! The paper's Table 1 in miniature: every method at several pixel scales on the same seeds, measured by
//! `selfcascade-shapes` (objects per image, object size, caption match) and timed.
//!
//! Sample i of every row uses the scene label of `Scene::sample(derive_seed(seed, LABELS, i))` and the
//! noise seed `derive_seed(seed, NOISE, i)` (streams no training step uses), whatever the method and
//! scale, so rows compare the same draws.

use crate::data::derive_seed;
use crate::error::{Error, Result};
use crate::model::ShapesModel;
use crate::pipeline::{default_request, DEFAULT_GUIDANCE, DEFAULT_STEPS};
use burn::tensor::backend::Backend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfcascade_core::{FeatureUpsampler, Progress};
use selfcascade_eval::features::{image_features, FeatureNet, FeatureOptions};
use selfcascade_eval::metrics::{fid, kid, Features, KidOptions, Whitening};
use selfcascade_eval::resize::Preprocess;
use selfcascade_sd::pipeline::{FeatureInjection, Method};
use selfcascade_shapes::{
    measure, render, summarize, Expected, Measurement, RgbImage, Scene, SceneLabel, SceneObject,
    Shape, SIZE_MAX, SIZE_MIN,
};
use serde::{Deserialize, Serialize};
use std::ops::ControlFlow;
use std::time::Instant;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// Methods, one row each per scale.
    pub methods: Vec<Method>,
    /// Target pixel counts as multiples of the base pixel count (4 = 2× the side, 16 = 4×); each must
    /// be a perfect square so the target stays square.
    pub pixel_scales: Vec<usize>,
    /// Images per row.
    pub samples: usize,
    /// Seed of the labels and the noise.
    pub seed: u64,
    /// Images sampled together (memory vs speed; results do not depend on it).
    pub batch: usize,
    /// Also evaluate the model at its base size (the ceiling of every method; reported as method
    /// `base`, pixel scale 1).
    pub include_base: bool,
    /// DDIM steps of the full schedule.
    pub steps: usize,
    /// Classifier-free guidance scale.
    pub guidance: f64,
}

/// The feature upsamplers of `self-cascade-tuned` rows, with what they cost to train.
pub struct TunedUpsampler<'a, B: Backend> {
    /// φ_n for the model's UNet.
    pub upsampler: &'a dyn FeatureUpsampler<B>,
    /// Trainable parameters (reported in the row).
    pub trainable_parameters: usize,
    /// Training steps (reported in the row).
    pub training_steps: usize,
}

/// A copy of the model fine-tuned at a higher resolution (the paper's full fine-tuning baseline): its
/// row samples it directly at `pixel_scale` × the base pixels.
pub struct FineTuned<'a, B: Backend> {
    /// Row name (`full-fine-tune`).
    pub name: String,
    /// The fine-tuned weights (same architecture).
    pub model: &'a ShapesModel<B>,
    /// The pixel scale it was fine-tuned for (its row's scale; must be one of the evaluated scales).
    pub pixel_scale: usize,
    /// Trainable parameters (reported in the row).
    pub trainable_parameters: usize,
    /// Fine-tuning steps (reported in the row).
    pub training_steps: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            methods: Method::TUNING_FREE.to_vec(),
            pixel_scales: vec![4, 16],
            samples: 32,
            seed: 0,
            batch: 8,
            include_base: true,
            steps: DEFAULT_STEPS,
            guidance: DEFAULT_GUIDANCE,
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    /// Method name as in `selfcascade generate --method` (`base`: the model at its training size).
    pub method: String,
    /// Target pixels / base pixels.
    pub pixel_scale: usize,
    /// Target width in pixels.
    pub width: usize,
    /// Target height in pixels.
    pub height: usize,
    /// Images measured.
    pub samples: usize,
    /// Parameters trained for the method (0: tuning-free).
    pub trainable_parameters: usize,
    /// Training steps of the method (0: tuning-free).
    pub training_steps: usize,
    /// Wall time per image in seconds (batched as `EvalOptions::batch`).
    pub seconds_per_image: f64,
    /// Wall time relative to `direct` at the same scale (when `direct` was evaluated).
    pub time_vs_direct: Option<f64>,
    /// Fraction of images with exactly one object.
    pub single_object_rate: f64,
    /// Standard error of `single_object_rate` (binomial, √(p(1−p)/n)).
    pub single_object_stderr: f64,
    /// Mean number of objects per image.
    pub mean_objects: f64,
    /// Standard error of `mean_objects`.
    pub mean_objects_stderr: f64,
    /// Mean relative distance of the largest object's size from the training range (0 inside it), over
    /// images with at least one object; see [`size_error`].
    pub mean_size_error: Option<f64>,
    /// Fraction of images with exactly one object of the caption's shape and colour.
    pub caption_accuracy: f64,
    /// Fraction of images with no object.
    pub empty_rate: f64,
    /// FID/KID against renders of the same scenes at this size, and against the base model's own
    /// samples (see [`add_fid_kid`]); absent until scored.
    #[serde(default, flatten)]
    pub quality: Quality,
}

/// FID and KID columns of a row, on the shapes classifier's features ([`crate::classifier`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quality {
    /// FID against renders at the row's size (FID_r).
    pub fid_r: Option<f64>,
    /// Bootstrap standard deviation of `fid_r` (generated images resampled with replacement).
    pub fid_r_std: Option<f64>,
    /// KID against the renders (KID_r).
    pub kid_r: Option<f64>,
    /// Standard deviation of `kid_r` over KID's subsets.
    pub kid_r_std: Option<f64>,
    /// FID against the base model's samples at its training size (FID_b).
    pub fid_b: Option<f64>,
    /// Bootstrap standard deviation of `fid_b`.
    pub fid_b_std: Option<f64>,
    /// KID against the base samples (KID_b).
    pub kid_b: Option<f64>,
    /// Standard deviation of `kid_b` over subsets.
    pub kid_b_std: Option<f64>,
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Base (training) side in pixels.
    pub base_side: usize,
    /// DDIM steps.
    pub steps: usize,
    /// Guidance scale.
    pub guidance: f64,
    /// Seed of the draws.
    pub seed: u64,
    /// Rows, by scale then method.
    pub rows: Vec<EvalRow>,
}

/// Images of one row, in sample order (for picture grids).
#[derive(Debug, Clone)]
pub struct RowImages {
    /// Method name.
    pub method: String,
    /// Pixel scale.
    pub pixel_scale: usize,
    /// The images.
    pub images: Vec<RgbImage>,
}

/// The size error of a measured object: how far its equivalent side `size` (fraction of the canvas
/// side) lies outside the range the world draws for `shape` (sizes 30–60% of the side), relative to
/// the nearer end; 0 inside the range. Objects repeated at the base scale in a 4×-side image measure
/// about a quarter of the range, i.e. an error near 0.7.
pub fn size_error(shape: Shape, size: f64) -> f64 {
    let side = |s: f32| {
        SceneObject {
            shape,
            color: selfcascade_shapes::ObjectColor::Red,
            center: (0.5, 0.5),
            size: s,
            rotation: 0.0,
        }
        .equivalent_side() as f64
    };
    let (lo, hi) = (side(SIZE_MIN), side(SIZE_MAX));
    if size < lo {
        (lo - size) / lo
    } else if size > hi {
        (size - hi) / hi
    } else {
        0.0
    }
}

/// Seed stream of the evaluation labels (and of the reference scenes of FID_r).
const LABELS: u64 = u64::MAX;
/// Seed stream of the evaluation noise.
const NOISE: u64 = u64::MAX - 1;

/// The label and noise seed of sample `i`.
pub fn draw(seed: u64, i: usize) -> (SceneLabel, u64) {
    let scene = Scene::sample(derive_seed(seed, LABELS, i as u64));
    (scene.label(), derive_seed(seed, NOISE, i as u64))
}

fn summarize_row(
    method: &str,
    pixel_scale: usize,
    side: usize,
    labels: &[SceneLabel],
    images: &[RgbImage],
    seconds: f64,
) -> EvalRow {
    let ms: Vec<Measurement> = images
        .iter()
        .zip(labels)
        .map(|(img, l)| measure(img, Some(&Expected::from(*l))))
        .collect();
    let s = summarize(&ms);
    let n = ms.len().max(1) as f64;
    let p = s.single_object_rate as f64;
    let mean = s.mean_objects as f64;
    let var = ms
        .iter()
        .map(|m| (m.num_objects as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    let errors: Vec<f64> = ms
        .iter()
        .zip(labels)
        .filter_map(|(m, l)| {
            m.objects
                .first()
                .map(|o| size_error(l.shape, o.size_fraction as f64))
        })
        .collect();
    EvalRow {
        method: method.to_string(),
        pixel_scale,
        width: side,
        height: side,
        samples: ms.len(),
        trainable_parameters: 0,
        training_steps: 0,
        seconds_per_image: seconds / n,
        time_vs_direct: None,
        single_object_rate: p,
        single_object_stderr: (p * (1.0 - p) / n).sqrt(),
        mean_objects: mean,
        mean_objects_stderr: (var / n).sqrt(),
        mean_size_error: (!errors.is_empty())
            .then(|| errors.iter().sum::<f64>() / errors.len() as f64),
        caption_accuracy: s.caption_match_rate as f64,
        empty_rate: s.empty_rate as f64,
        quality: Quality::default(),
    }
}

/// Progress of an evaluation: which row, and the sampler's progress within the current batch.
#[derive(Debug, Clone, Copy)]
pub struct EvalProgress<'a> {
    /// Method of the current row.
    pub method: &'a str,
    /// Pixel scale of the current row.
    pub pixel_scale: usize,
    /// Images finished in this row.
    pub images_done: usize,
    /// Images of this row.
    pub images_total: usize,
    /// The sampler's progress within the current batch.
    pub step: &'a Progress,
}

/// Runs the evaluation. Returns the table and the images of every row. `tuned` is needed when the
/// methods include `self-cascade-tuned`; each of `fine_tuned` adds a row at its scale.
pub fn evaluate<B: Backend>(
    model: &ShapesModel<B>,
    options: &EvalOptions,
    tuned: Option<&TunedUpsampler<'_, B>>,
    fine_tuned: &[FineTuned<'_, B>],
    progress: &mut dyn FnMut(&EvalProgress),
) -> Result<(EvalReport, Vec<RowImages>)> {
    if options.samples == 0 || options.batch == 0 {
        return Err(Error::Config("samples and batch must be positive".into()));
    }
    let base = model.config().image_size;
    let mut sides = Vec::new();
    for &k in &options.pixel_scales {
        let r = (k as f64).sqrt().round() as usize;
        if k == 0 || r * r != k {
            return Err(Error::Config(format!(
                "pixel scale {k} is not a perfect square (use 4, 9, 16, …) so the target stays square"
            )));
        }
        sides.push((k, r * base));
    }
    let draws: Vec<(SceneLabel, u64)> = (0..options.samples)
        .map(|i| draw(options.seed, i))
        .collect();
    let labels: Vec<SceneLabel> = draws.iter().map(|d| d.0).collect();
    // (row name, model, method, scale, side, trainable parameters, training steps)
    type Job<'m, B> = (
        String,
        &'m ShapesModel<B>,
        Method,
        usize,
        usize,
        usize,
        usize,
    );
    let mut jobs: Vec<Job<'_, B>> = Vec::new();
    if options.include_base {
        jobs.push(("base".into(), model, Method::Direct, 1, base, 0, 0));
    }
    for &(k, side) in &sides {
        for m in &options.methods {
            let (params, steps) = match (m, tuned) {
                (Method::SelfCascadeTuned, Some(t)) => (t.trainable_parameters, t.training_steps),
                _ => (0, 0),
            };
            jobs.push((m.name().to_string(), model, *m, k, side, params, steps));
        }
        for f in fine_tuned.iter().filter(|f| f.pixel_scale == k) {
            let (params, steps) = (f.trainable_parameters, f.training_steps);
            jobs.push((
                f.name.clone(),
                f.model,
                Method::Direct,
                k,
                side,
                params,
                steps,
            ));
        }
    }
    if let Some(f) = fine_tuned
        .iter()
        .find(|f| !sides.iter().any(|(k, _)| *k == f.pixel_scale))
    {
        return Err(Error::Config(format!(
            "`{}` was fine-tuned for {}× pixels, which is not among the evaluated scales {:?}",
            f.name, f.pixel_scale, options.pixel_scales
        )));
    }
    if options.methods.contains(&Method::SelfCascadeTuned) && tuned.is_none() {
        return Err(Error::Config(
            "self-cascade-tuned rows need trained feature upsamplers".into(),
        ));
    }
    let injection = tuned.map(|t| FeatureInjection::new(t.upsampler));
    let mut rows = Vec::new();
    let mut pictures = Vec::new();
    for (name, row_model, method, k, side, params, steps) in jobs {
        let mut request = default_request(side, side, method);
        request.steps = options.steps;
        request.guidance = options.guidance;
        let start = Instant::now();
        let mut images = Vec::with_capacity(options.samples);
        for chunk in draws.chunks(options.batch) {
            let l: Vec<SceneLabel> = chunk.iter().map(|d| d.0).collect();
            let s: Vec<u64> = chunk.iter().map(|d| d.1).collect();
            let done = images.len();
            images.extend(
                row_model.generate_with(&l, &s, &request, injection, &mut |p| {
                    progress(&EvalProgress {
                        method: &name,
                        pixel_scale: k,
                        images_done: done,
                        images_total: options.samples,
                        step: p,
                    });
                    ControlFlow::Continue(())
                })?,
            );
        }
        let seconds = start.elapsed().as_secs_f64();
        let mut row = summarize_row(&name, k, side, &labels, &images, seconds);
        row.trainable_parameters = params;
        row.training_steps = steps;
        rows.push(row);
        pictures.push(RowImages {
            method: name,
            pixel_scale: k,
            images,
        });
    }
    let direct: Vec<(usize, f64)> = rows
        .iter()
        .filter(|r| r.method == Method::Direct.name())
        .map(|r| (r.pixel_scale, r.seconds_per_image))
        .collect();
    for row in rows.iter_mut().filter(|r| r.pixel_scale > 1) {
        if let Some((_, t)) = direct.iter().find(|(k, _)| *k == row.pixel_scale) {
            row.time_vs_direct = Some(row.seconds_per_image / t);
        }
    }
    Ok((
        EvalReport {
            base_side: base,
            steps: options.steps,
            guidance: options.guidance,
            seed: options.seed,
            rows,
        },
        pictures,
    ))
}

/// How the FID/KID columns are computed.
#[derive(Debug, Clone, Copy)]
pub struct QualityOptions {
    /// Renders of reference scenes per size for FID_r (scene i = the label draw i of the seed, so the
    /// first `samples` are the evaluated scenes themselves).
    pub reference_samples: usize,
    /// Bootstrap resamples for the FID spread.
    pub bootstrap: usize,
    /// KID subsets.
    pub kid_subsets: usize,
    /// Whitened principal components the features are reduced to before FID/KID (0: the raw
    /// features), fitted on the reference renders: a covariance of 64 dimensions cannot be estimated
    /// from a row's 16–64 samples.
    pub components: usize,
}

impl Default for QualityOptions {
    fn default() -> Self {
        Self {
            reference_samples: 256,
            bootstrap: 20,
            kid_subsets: 100,
            components: 8,
        }
    }
}

/// Fills the FID/KID columns of every row of `report` from the images of `pictures` (as `evaluate`
/// returns them) through the features of `net`: FID_r/KID_r against reference renders at the row's size
/// (exact ground truth of the world), FID_b/KID_b against the base row's samples (the model at its
/// training size; needs `EvalOptions::include_base`). Seeded: the same inputs give the same numbers.
pub fn add_fid_kid(
    report: &mut EvalReport,
    pictures: &[RowImages],
    net: &dyn FeatureNet,
    options: &QualityOptions,
) -> Result<()> {
    let features = |images: &[RgbImage]| -> Result<Features> {
        let opts = FeatureOptions {
            preprocess: Preprocess::Clean,
            batch_size: 64,
            cache: false,
        };
        image_features(net, images, &opts, &mut |_, _| {}).map_err(eval_error)
    };
    // Reference renders of the evaluated label draws at every row's size; the whitening is fitted
    // on all of them together, so every row is measured in the same coordinates.
    let mut references: Vec<(usize, Features)> = Vec::new();
    for row in &report.rows {
        if !references.iter().any(|(s, _)| *s == row.width) {
            let renders = (0..options.reference_samples.max(2))
                .map(|i| {
                    let scene = Scene::sample(derive_seed(report.seed, LABELS, i as u64));
                    Ok(render(&scene, row.width as u32, row.width as u32)?)
                })
                .collect::<Result<Vec<_>>>()?;
            references.push((row.width, features(&renders)?));
        }
    }
    let whitening = match options.components {
        0 => None,
        k => {
            let dim = references.first().map_or(0, |(_, f)| f.dim);
            let all: Vec<f32> = references
                .iter()
                .flat_map(|(_, f)| f.data.iter().copied())
                .collect();
            let n = all.len() / dim.max(1);
            let all = Features::new(all, n, dim).map_err(eval_error)?;
            Some(Whitening::fit(&all, k.min(dim)).map_err(eval_error)?)
        }
    };
    let project = |f: Features| -> Result<Features> {
        match &whitening {
            Some(w) => w.apply(&f).map_err(eval_error),
            None => Ok(f),
        }
    };
    let references = references
        .into_iter()
        .map(|(side, f)| Ok((side, project(f)?)))
        .collect::<Result<Vec<_>>>()?;
    let base = match pictures.iter().find(|p| p.method == "base") {
        Some(p) => Some(project(features(&p.images)?)?),
        None => None,
    };
    let kid_options = |seed| KidOptions {
        subsets: options.kid_subsets,
        seed,
        ..Default::default()
    };
    for (row, picture) in report.rows.iter_mut().zip(pictures) {
        let side = row.width;
        let reference = references
            .iter()
            .find(|(s, _)| *s == side)
            .map(|(_, f)| f)
            .ok_or_else(|| Error::Config("reference features missing".into()))?;
        let fake = project(features(&picture.images)?)?;
        let q = &mut row.quality;
        let (fid, spread) = fid_with_spread(reference, &fake, options.bootstrap, report.seed)?;
        let k = kid(reference, &fake, kid_options(report.seed)).map_err(eval_error)?;
        (q.fid_r, q.fid_r_std, q.kid_r, q.kid_r_std) =
            (Some(fid), spread, Some(k.mean), Some(k.std));
        if let (Some(base), false) = (&base, picture.method == "base") {
            let (fid, spread) = fid_with_spread(base, &fake, options.bootstrap, report.seed)?;
            let k = kid(base, &fake, kid_options(report.seed)).map_err(eval_error)?;
            (q.fid_b, q.fid_b_std, q.kid_b, q.kid_b_std) =
                (Some(fid), spread, Some(k.mean), Some(k.std));
        }
    }
    Ok(())
}

fn eval_error(e: selfcascade_eval::Error) -> Error {
    Error::Config(format!("FID/KID: {e}"))
}

/// FID of `fake` against `reference`, and its bootstrap standard deviation over `resamples` draws of
/// `fake` with replacement (none when `resamples` < 2).
fn fid_with_spread(
    reference: &Features,
    fake: &Features,
    resamples: usize,
    seed: u64,
) -> Result<(f64, Option<f64>)> {
    let value = fid(reference, fake).map_err(eval_error)?;
    if resamples < 2 {
        return Ok((value, None));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut values = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let rows: Vec<usize> = (0..fake.n).map(|_| rng.random_range(0..fake.n)).collect();
        let data = rows
            .iter()
            .flat_map(|&r| fake.data[r * fake.dim..(r + 1) * fake.dim].iter().copied())
            .collect();
        let resampled = Features::new(data, fake.n, fake.dim).map_err(eval_error)?;
        values.push(fid(reference, &resampled).map_err(eval_error)?);
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    Ok((value, Some(var.sqrt())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_error_is_zero_in_the_training_range_and_grows_outside() {
        for &shape in Shape::ALL {
            let mid = SceneObject {
                shape,
                color: selfcascade_shapes::ObjectColor::Red,
                center: (0.5, 0.5),
                size: 0.45,
                rotation: 0.0,
            }
            .equivalent_side() as f64;
            assert_eq!(size_error(shape, mid), 0.0);
            let quarter = size_error(shape, mid / 4.0);
            assert!(quarter > 0.55 && quarter < 0.8, "{shape:?}: {quarter}");
            assert!(size_error(shape, 0.99) > 0.0);
        }
    }

    #[test]
    fn draws_are_fixed_by_the_seed() {
        assert_eq!(draw(3, 5), draw(3, 5));
        assert_ne!(draw(3, 5), draw(4, 5));
    }
}

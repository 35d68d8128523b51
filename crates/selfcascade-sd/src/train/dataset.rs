//! Training data from a folder of captioned images: resize (short side, Lanczos) and random crop to
//! the target size, VAE-encode, make the pivot, and cache the latents on disk so a run (or the next
//! one) does not re-encode.

use super::data::{Conditioning, TrainingExample, TrainingSet};
use crate::error::{Error, Result};
use crate::load::TensorStore;
use crate::pipeline::{GenerateRequest, Method, StableDiffusion};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use image::imageops::FilterType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfcascade_core::scheduler::SchedulerKind;
use selfcascade_core::{SeededNoise, Size};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One image of a data folder with its caption (and, for [`PivotSource::Files`], its pivot file).
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetItem {
    /// The image file.
    pub image: PathBuf,
    /// Its caption.
    pub caption: String,
    /// The pivot file named by the manifest, if any.
    pub pivot: Option<PathBuf>,
}

/// Where the pivot z₀^{r−1} of an image comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PivotSource {
    /// (a) The VAE latent of the cropped image downsampled (Lanczos) to half the size: cheap, the
    /// default.
    Downsampled,
    /// (b) A generation of the base model from the caption at half the size (what the released code
    /// does), plain sampling with `steps` steps and guidance `guidance`, seeded per image.
    Generated {
        /// Sampling steps.
        steps: usize,
        /// Classifier-free guidance scale.
        guidance: f64,
        /// The sampler (`None`: the model's scheduler config).
        scheduler: Option<SchedulerKind>,
    },
    /// (c) Given as files: the manifest's `pivot` of each image, a safetensors latent (scaled, as
    /// the UNet sees it; the tensor named `pivot` or the file's only tensor, `[1, C, h, w]` or
    /// `[C, h, w]`) or an image, which is VAE-encoded at half the size.
    Files,
}

impl PivotSource {
    pub(super) fn cache_tag(&self) -> String {
        match self {
            Self::Downsampled => "downsampled".into(),
            Self::Generated {
                steps,
                guidance,
                scheduler,
            } => format!("generated-{steps}-{guidance}-{scheduler:?}"),
            Self::Files => "files".into(),
        }
    }
}

#[derive(Deserialize)]
struct ManifestLine {
    image: PathBuf,
    caption: String,
    #[serde(default)]
    pivot: Option<PathBuf>,
}

/// Image files this reader decodes.
pub(super) const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Lists a data folder: the lines of `dir/manifest.jsonl` when it exists (`{"image": "a.png",
/// "caption": "…", "pivot": "a.pivot.safetensors"}`, paths relative to `dir`), otherwise every
/// PNG/JPEG image with a `.txt` caption beside it (same stem). Sorted by image path.
pub fn scan_dataset(dir: &Path) -> Result<Vec<DatasetItem>> {
    let manifest = dir.join("manifest.jsonl");
    let mut items = Vec::new();
    if manifest.is_file() {
        let text = std::fs::read_to_string(&manifest).map_err(|e| Error::io(&manifest, e))?;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let l: ManifestLine = serde_json::from_str(line).map_err(|e| {
                Error::Input(format!(
                    "{} line {}: {e}; expected {{\"image\": PATH, \"caption\": TEXT, \"pivot\": PATH (optional)}}",
                    manifest.display(),
                    n + 1
                ))
            })?;
            items.push(DatasetItem {
                image: dir.join(l.image),
                caption: l.caption,
                pivot: l.pivot.map(|p| dir.join(p)),
            });
        }
    } else {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut missing = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let is_image = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if !is_image {
                continue;
            }
            let txt = path.with_extension("txt");
            match std::fs::read_to_string(&txt) {
                Ok(caption) => items.push(DatasetItem {
                    image: path,
                    caption: caption.trim().to_string(),
                    pivot: None,
                }),
                Err(_) => missing.push(txt.display().to_string()),
            }
        }
        if !missing.is_empty() {
            missing.sort();
            return Err(Error::Input(format!(
                "{}: {} image(s) have no caption file: {} (write the caption into a .txt beside each \
                 image, or list the images in manifest.jsonl)",
                dir.display(),
                missing.len(),
                missing.join(", ")
            )));
        }
    }
    if items.is_empty() {
        return Err(Error::Input(format!(
            "{}: no training images (PNG or JPEG with a .txt caption beside each, or a manifest.jsonl)",
            dir.display()
        )));
    }
    items.sort_by(|a, b| a.image.cmp(&b.image));
    Ok(items)
}

/// How [`prepare_training_set`] turns images into latents.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// The high-resolution training size in pixels (the pivot is half of it).
    pub size: Size,
    /// Where pivots come from.
    pub pivot: PivotSource,
    /// Folder of cached latents (created when needed); `None` encodes every time.
    pub cache: Option<PathBuf>,
    /// Seed of the random crops (and of generated pivots).
    pub seed: u64,
}

/// Loads `path` as RGB8.
pub(super) fn load_rgb(path: &Path) -> Result<image::RgbImage> {
    let img = image::open(path).map_err(|e| {
        Error::Input(format!(
            "{}: cannot read the image: {e} (PNG and JPEG are supported)",
            path.display()
        ))
    })?;
    Ok(img.to_rgb8())
}

/// Resizes `img` so that it covers `size` (its short side, relatively, to the target; Lanczos) and
/// crops a window of `size` at an offset drawn from `rng`.
pub fn resize_and_crop(img: &image::RgbImage, size: Size, rng: &mut impl Rng) -> image::RgbImage {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let scale = (size.width as f64 / w).max(size.height as f64 / h);
    let rw = ((w * scale).round() as u32).max(size.width as u32);
    let rh = ((h * scale).round() as u32).max(size.height as u32);
    let resized = image::imageops::resize(img, rw, rh, FilterType::Lanczos3);
    let x = rng.random_range(0..=rw - size.width as u32);
    let y = rng.random_range(0..=rh - size.height as u32);
    image::imageops::crop_imm(&resized, x, y, size.width as u32, size.height as u32).to_image()
}

/// `[1, 3, H, W]` in [−1, 1] (diffusers' `VaeImageProcessor.preprocess`).
pub fn image_tensor<B: Backend>(img: &image::RgbImage, device: &B::Device) -> Tensor<B, 4> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut planar = vec![0f32; 3 * w * h];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            planar[c * w * h + i] = p.0[c] as f32 / 127.5 - 1.0;
        }
    }
    Tensor::from_data(TensorData::new(planar, [1, 3, h, w]), device)
}

/// The scaled latent (the posterior mean × the VAE's scaling factor) of `img`.
fn encode<B: Backend>(sd: &StableDiffusion<B>, img: &image::RgbImage) -> Result<Tensor<B, 4>> {
    let vae = sd.vae.as_ref().ok_or_else(|| {
        Error::Model(format!(
            "{} has no vae/ folder: cannot encode training images",
            sd.folder().display()
        ))
    })?;
    let (mean, _) = vae.encode(image_tensor(img, sd.device()))?;
    Ok(mean.mul_scalar(vae.scaling_factor()))
}

/// The training set of `items` for `sd` (SD 1.x/2.x; SDXL's conditioning included when `sd` is
/// SDXL): each image resized and randomly cropped to `options.size`, encoded by the VAE, with its
/// pivot from `options.pivot`; each distinct caption encoded once, and the empty caption.
///
/// With `options.cache`, the latents of an image are read from `cache/<key>.safetensors` when it
/// exists (the key covers the path, length and modification time of the image and of its pivot
/// file, the size, the pivot source, the seed and the model folder) and written there otherwise. `on_item(done, total)` is
/// called after each image.
pub fn prepare_training_set<B: Backend>(
    sd: &StableDiffusion<B>,
    items: &[DatasetItem],
    options: &PrepareOptions,
    on_item: &mut dyn FnMut(usize, usize),
) -> Result<TrainingSet<B>> {
    let f = sd.vae_scale_factor();
    let Size { width, height } = options.size;
    if width % (2 * f) != 0 || height % (2 * f) != 0 || width == 0 || height == 0 {
        return Err(Error::Input(format!(
            "training size {width}×{height}: width and height must be positive multiples of {} (the \
             pivot is half the size and both must be whole latents)",
            2 * f
        )));
    }
    if let Some(dir) = &options.cache {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut caption_index: HashMap<&str, usize> = HashMap::new();
    let mut captions = Vec::new();
    let mut examples = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let caption = match caption_index.get(item.caption.as_str()) {
            Some(&c) => c,
            None => {
                captions.push(conditioning(sd, &item.caption, options.size)?);
                caption_index.insert(&item.caption, captions.len() - 1);
                captions.len() - 1
            }
        };
        let (latent, pivot) = cached_latents(sd, item, i, options)?;
        examples.push(TrainingExample {
            latent,
            pivot,
            caption,
        });
        on_item(i + 1, items.len());
    }
    Ok(TrainingSet {
        examples,
        captions,
        empty_caption: conditioning(sd, "", options.size)?,
    })
}

/// The UNet conditioning of `caption` at `size` (SDXL: pooled text and time ids for an uncropped
/// image of that size, as at inference).
fn conditioning<B: Backend>(
    sd: &StableDiffusion<B>,
    caption: &str,
    size: Size,
) -> Result<Conditioning<B>> {
    let embeds = sd.encode_prompt(caption, "")?;
    let added = embeds.positive_pooled.map(|pooled| {
        let (w, h) = (size.width as f32, size.height as f32);
        let ids = Tensor::<B, 1>::from_floats([h, w, 0.0, 0.0, h, w], sd.device()).unsqueeze::<2>();
        (pooled, ids)
    });
    Ok(Conditioning {
        context: embeds.positive,
        added,
    })
}

/// A file for a cache key: its path, length and modification time.
pub(super) fn stamp(path: &Path) -> String {
    let meta = std::fs::metadata(path).ok();
    let len = meta.as_ref().map(|m| m.len()).unwrap_or_default();
    let modified = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}|{len}|{modified}", path.display())
}

fn cache_key<B: Backend>(
    sd: &StableDiffusion<B>,
    item: &DatasetItem,
    options: &PrepareOptions,
) -> String {
    format!(
        "v1|{}|{}x{}|{}|{}|{}|{}",
        stamp(&item.image),
        options.size.width,
        options.size.height,
        options.pivot.cache_tag(),
        item.pivot.as_deref().map(stamp).unwrap_or_default(),
        options.seed,
        sd.folder().display()
    )
}

/// FNV-1a, 64 bits: a stable file name for a cache key (the key itself is stored in the file and
/// compared, so a collision only costs a re-encode).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn cached_latents<B: Backend>(
    sd: &StableDiffusion<B>,
    item: &DatasetItem,
    index: usize,
    options: &PrepareOptions,
) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
    cached(
        options.cache.as_deref(),
        cache_key(sd, item, options),
        sd.device(),
        || encode_item(sd, item, index, options),
    )
}

/// The `(latent, pivot)` pair cached under `key` in `cache` (`<hash of key>.safetensors`, holding the
/// key), or computed by `compute` and written there.
pub(super) fn cached<B: Backend>(
    cache: Option<&Path>,
    key: String,
    device: &B::Device,
    compute: impl FnOnce() -> Result<(Tensor<B, 4>, Tensor<B, 4>)>,
) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
    let file = cache.map(|dir| dir.join(format!("{:016x}.safetensors", fnv1a(&key))));
    if let Some(file) = file.as_ref().filter(|f| f.is_file()) {
        if let Ok(store) = TensorStore::open(std::slice::from_ref(file)) {
            if store.metadata("key") == Some(key.as_str()) {
                let read = |name: &str| -> Result<Tensor<B, 4>> {
                    let t = store.read(name)?;
                    let shape: [usize; 4] = t.shape.clone().try_into().map_err(|_| {
                        Error::Weights(format!("{}: `{name}` is not 4-D", file.display()))
                    })?;
                    Ok(Tensor::from_data(TensorData::new(t.data, shape), device))
                };
                return Ok((read("latent")?, read("pivot")?));
            }
        }
    }
    let (latent, pivot) = compute()?;
    if let Some(file) = file {
        let tensors = [
            crate::upsampler::NamedTensor::of("latent".into(), latent.clone()),
            crate::upsampler::NamedTensor::of("pivot".into(), pivot.clone()),
        ];
        let mut metadata = HashMap::new();
        metadata.insert("key".to_string(), key);
        crate::upsampler::write_safetensors(&file, &tensors, metadata)?;
    }
    Ok((latent, pivot))
}

fn encode_item<B: Backend>(
    sd: &StableDiffusion<B>,
    item: &DatasetItem,
    index: usize,
    options: &PrepareOptions,
) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    rng.set_stream(index as u64);
    let crop = resize_and_crop(&load_rgb(&item.image)?, options.size, &mut rng);
    let latent = encode(sd, &crop)?;
    let half = Size::new(options.size.width / 2, options.size.height / 2);
    let pivot = match &options.pivot {
        PivotSource::Downsampled => {
            let small = image::imageops::resize(
                &crop,
                half.width as u32,
                half.height as u32,
                FilterType::Lanczos3,
            );
            encode(sd, &small)?
        }
        PivotSource::Generated {
            steps,
            guidance,
            scheduler,
        } => {
            let embeds = sd.encode_prompt(&item.caption, "")?;
            let request = GenerateRequest {
                width: half.width,
                height: half.height,
                method: Method::Direct,
                steps: *steps,
                guidance: *guidance,
                scheduler: *scheduler,
                ..Default::default()
            };
            let mut noise = SeededNoise::new(options.seed ^ (index as u64).rotate_left(32));
            let out = sd.generate_latents(&embeds, &request, &mut noise, &mut |_| {
                std::ops::ControlFlow::Continue(())
            })?;
            out.latent
        }
        PivotSource::Files => {
            let path = item.pivot.as_ref().ok_or_else(|| {
                Error::Input(format!(
                    "{}: pivots from files need a `pivot` path for every image in manifest.jsonl",
                    item.image.display()
                ))
            })?;
            pivot_file(sd, path, half)?
        }
    };
    let (l, p) = (latent.dims(), pivot.dims());
    if p[1] != l[1] || 2 * p[2] != l[2] || 2 * p[3] != l[3] {
        return Err(Error::Input(format!(
            "{}: pivot latent {p:?} for a latent {l:?}; it must be [1, {}, {}, {}]",
            item.image.display(),
            l[1],
            l[2] / 2,
            l[3] / 2
        )));
    }
    Ok((latent, pivot))
}

/// A pivot from a file: a safetensors latent or an image encoded at `half`.
fn pivot_file<B: Backend>(
    sd: &StableDiffusion<B>,
    path: &Path,
    half: Size,
) -> Result<Tensor<B, 4>> {
    let is_safetensors = path.extension().and_then(|e| e.to_str()) == Some("safetensors");
    if !is_safetensors {
        let img = load_rgb(path)?;
        if (img.width() as usize, img.height() as usize) != (half.width, half.height) {
            return Err(Error::Input(format!(
                "{}: pivot image is {}×{}; it must be {}×{} (half the training size)",
                path.display(),
                img.width(),
                img.height(),
                half.width,
                half.height
            )));
        }
        return encode(sd, &img);
    }
    let store = TensorStore::open(&[path.to_path_buf()])?;
    let names: Vec<String> = store.names().map(str::to_string).collect();
    let name = if names.iter().any(|n| n == "pivot") {
        "pivot".to_string()
    } else if names.len() == 1 {
        names[0].clone()
    } else {
        return Err(Error::Input(format!(
            "{}: holds {names:?}; name the pivot latent `pivot` or store only it",
            path.display()
        )));
    };
    let t = store.read(&name)?;
    let shape: [usize; 4] = match t.shape.as_slice() {
        [c, h, w] => [1, *c, *h, *w],
        [1, c, h, w] => [1, *c, *h, *w],
        s => {
            return Err(Error::Input(format!(
                "{}: `{name}` has shape {s:?}; expected [1, C, h, w] or [C, h, w]",
                path.display()
            )))
        }
    };
    Ok(Tensor::from_data(
        TensorData::new(t.data, shape),
        sd.device(),
    ))
}

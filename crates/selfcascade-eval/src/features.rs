//! Features of images and image folders through any [`FeatureNet`], with a per-folder cache.
//!
//! A folder's images are its PNG and JPEG files, recursively, in the order of their relative paths
//! (clean-fid sorts its file list the same way); hidden files are skipped. The cache is a hidden
//! safetensors file in the folder (`.selfcascade-features-{net}-{preprocess}.safetensors`) holding the
//! features and, per image, its relative path, size and modification time: a later call computes
//! features only for images that are new or changed, so FID_r and FID_b share one pass over the
//! generated images, and an interrupted batch resumes.

use crate::error::{Error, Result};
use crate::inception::{InceptionV3, FEATURE_DIM, INPUT_SIZE};
use crate::metrics::Features;
use crate::resize::Preprocess;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A network that maps square RGB images (values 0..=255) to feature vectors.
pub trait FeatureNet {
    /// A name for the network and its weights, part of the cache's file name and key (changing the
    /// weights must change it).
    fn id(&self) -> String;
    /// Side of the square input.
    fn input_size(&self) -> usize;
    /// Length of the feature vector.
    fn dim(&self) -> usize;
    /// Features `n × dim` of `n` images given as `[n, 3, size, size]` values in 0..=255.
    fn features(&self, pixels: Vec<f32>, n: usize) -> Result<Vec<f32>>;
}

/// The FID Inception-v3 as a [`FeatureNet`] on a device.
pub struct InceptionFeatures<B: Backend> {
    net: InceptionV3<B>,
    device: B::Device,
    id: String,
}

impl<B: Backend> InceptionFeatures<B> {
    /// Loads the weights at `path` (see [`InceptionV3::load`]); the cache key records the file's name,
    /// size and modification time.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let net = InceptionV3::load(path, device)?;
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let stamp = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        Ok(Self::new(
            net,
            device,
            format!("inception:{name}:{}:{stamp}", meta.len()),
        ))
    }

    /// Wraps a built network; `id` names its weights in caches.
    pub fn new(net: InceptionV3<B>, device: &B::Device, id: String) -> Self {
        Self {
            net,
            device: device.clone(),
            id,
        }
    }
}

impl<B: Backend> FeatureNet for InceptionFeatures<B> {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn input_size(&self) -> usize {
        INPUT_SIZE
    }

    fn dim(&self) -> usize {
        FEATURE_DIM
    }

    fn features(&self, pixels: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        let s = INPUT_SIZE;
        let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, 3, s, s]), &self.device);
        let f = self.net.features(x)?;
        f.into_data()
            .to_vec::<f32>()
            .map_err(|e| Error::Numeric(format!("reading features back: {e:?}")))
    }
}

/// How images are turned into features.
#[derive(Debug, Clone, Copy)]
pub struct FeatureOptions {
    /// Resizing to the network's input.
    pub preprocess: Preprocess,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Read and write the folder's feature cache.
    pub cache: bool,
}

impl Default for FeatureOptions {
    fn default() -> Self {
        Self {
            preprocess: Preprocess::Clean,
            batch_size: 16,
            cache: true,
        }
    }
}

/// Features of in-memory images, in order.
pub fn image_features(
    net: &dyn FeatureNet,
    images: &[RgbImage],
    options: &FeatureOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Features> {
    if let Some(i) = images
        .iter()
        .position(|img| img.width() == 0 || img.height() == 0)
    {
        return Err(Error::Input(format!("image {i} is empty (0 pixels)")));
    }
    let (size, dim) = (net.input_size(), net.dim());
    let batch = options.batch_size.max(1);
    let mut data = Vec::with_capacity(images.len() * dim);
    for (b, chunk) in images.chunks(batch).enumerate() {
        let mut pixels = Vec::with_capacity(chunk.len() * 3 * size * size);
        for img in chunk {
            pixels.extend(options.preprocess.apply(img, size));
        }
        data.extend(net.features(pixels, chunk.len())?);
        progress(b * batch + chunk.len(), images.len());
    }
    Features::new(data, images.len(), dim)
}

/// The image files of `dir` (PNG, JPEG; recursive; hidden files skipped), sorted by relative path.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::Input(format!(
            "{} is not a folder of images",
            dir.display()
        )));
    }
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if is_image(&path) {
                found.push(path);
            }
        }
    }
    found.sort_by(|a, b| a.strip_prefix(dir).ok().cmp(&b.strip_prefix(dir).ok()));
    Ok(found)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Reads an image file as 8-bit RGB (alpha dropped, grey replicated, as PIL's `convert('RGB')`).
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?
        .decode()
        .map_err(|e| Error::Image {
            path: path.display().to_string(),
            message: format!("cannot decode the image: {e}"),
        })?;
    Ok(img.to_rgb8())
}

/// One image's entry in a feature cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct Stamp {
    path: String,
    size: u64,
    modified_ns: u128,
}

fn stamp(dir: &Path, path: &Path) -> Result<Stamp> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let modified_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let rel = path.strip_prefix(dir).unwrap_or(path);
    Ok(Stamp {
        path: rel.to_string_lossy().replace('\\', "/"),
        size: meta.len(),
        modified_ns,
    })
}

/// The path of `dir`'s feature cache for `net` and `preprocess`.
pub fn cache_path(dir: &Path, net: &dyn FeatureNet, preprocess: Preprocess) -> PathBuf {
    let tag: String = net
        .id()
        .split(':')
        .next()
        .unwrap_or("net")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    dir.join(format!(
        ".selfcascade-features-{tag}-{}.safetensors",
        preprocess.name()
    ))
}

/// Features of every image of `dir` (see [`list_images`]), in that order, reusing and updating the
/// folder's cache when `options.cache` is set. An unwritable folder only disables the cache write.
pub fn folder_features(
    net: &dyn FeatureNet,
    dir: &Path,
    options: &FeatureOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Features> {
    let files = list_images(dir)?;
    if files.is_empty() {
        return Err(Error::Input(format!(
            "{} holds no PNG or JPEG images",
            dir.display()
        )));
    }
    let stamps = files
        .iter()
        .map(|p| stamp(dir, p))
        .collect::<Result<Vec<_>>>()?;
    let cache_file = cache_path(dir, net, options.preprocess);
    let dim = net.dim();
    let cached: HashMap<Stamp, Vec<f32>> = if options.cache {
        read_cache(&cache_file, &net.id(), dim).unwrap_or_default()
    } else {
        HashMap::new()
    };
    let missing: Vec<usize> = (0..files.len())
        .filter(|&i| !cached.contains_key(&stamps[i]))
        .collect();
    let mut computed: HashMap<usize, Vec<f32>> = HashMap::new();
    let batch = options.batch_size.max(1);
    let done_before = files.len() - missing.len();
    progress(done_before, files.len());
    for (b, chunk) in missing.chunks(batch).enumerate() {
        let images = chunk
            .iter()
            .map(|&i| read_rgb(&files[i]))
            .collect::<Result<Vec<_>>>()?;
        let f = image_features(net, &images, options, &mut |_, _| {})?;
        for (k, &i) in chunk.iter().enumerate() {
            computed.insert(i, f.data[k * dim..(k + 1) * dim].to_vec());
        }
        progress(done_before + b * batch + chunk.len(), files.len());
    }
    let mut data = Vec::with_capacity(files.len() * dim);
    for (i, s) in stamps.iter().enumerate() {
        let row = computed
            .get(&i)
            .or_else(|| cached.get(s))
            .ok_or_else(|| Error::Numeric(format!("no features for {}", files[i].display())))?;
        data.extend_from_slice(row);
    }
    let features = Features::new(data, files.len(), dim)?;
    if options.cache && !missing.is_empty() {
        // A folder we cannot write to (read-only data sets) only loses the cache.
        let _ = write_cache(&cache_file, &net.id(), &stamps, &features);
    }
    Ok(features)
}

fn read_cache(path: &Path, id: &str, dim: usize) -> Option<HashMap<Stamp, Vec<f32>>> {
    let bytes = std::fs::read(path).ok()?;
    let st = safetensors::SafeTensors::deserialize(&bytes).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
    let meta = meta.metadata().as_ref()?;
    if meta.get("net")? != id {
        return None;
    }
    let stamps: Vec<Stamp> = serde_json::from_str(meta.get("images")?).ok()?;
    let t = st.tensor("features").ok()?;
    if t.dtype() != safetensors::Dtype::F32 || t.shape() != [stamps.len(), dim] {
        return None;
    }
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Some(
        stamps
            .into_iter()
            .enumerate()
            .map(|(i, s)| (s, values[i * dim..(i + 1) * dim].to_vec()))
            .collect(),
    )
}

fn write_cache(path: &Path, id: &str, stamps: &[Stamp], features: &Features) -> Result<()> {
    let images = serde_json::to_string(stamps)
        .map_err(|e| Error::Input(format!("feature cache index: {e}")))?;
    let meta = HashMap::from([
        ("net".to_string(), id.to_string()),
        ("images".to_string(), images),
    ]);
    save_features(path, features, Some(meta))
}

/// Writes `features` as tensor `features` `[n, dim]` (float32) of a safetensors file, atomically.
pub fn save_features(
    path: &Path,
    features: &Features,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<u8> = features.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![features.n, features.dim],
        &bytes,
    )
    .map_err(|e| Error::Input(format!("features {}×{}: {e}", features.n, features.dim)))?;
    let encoded = safetensors::serialize(vec![("features", view)], metadata)
        .map_err(|e| Error::Input(format!("encoding features: {e}")))?;
    selfcascade_sd::load::write_atomically(path, |f| std::io::Write::write_all(f, &encoded))?;
    Ok(())
}

/// Reads tensor `features` `[n, dim]` of a safetensors file written by [`save_features`] (or by
/// anything else that stores float32 features under that name).
pub fn load_features(path: &Path) -> Result<Features> {
    let store = selfcascade_sd::load::TensorStore::open(&[path.to_path_buf()])?;
    let t = store.read("features")?;
    if t.shape.len() != 2 {
        return Err(Error::Input(format!(
            "{}: tensor `features` has shape {:?}; expected [N, D]",
            path.display(),
            t.shape
        )));
    }
    Features::new(t.data, t.shape[0], t.shape[1])
}

//! The tuned self-cascade's time-aware feature upsamplers φ_n (Algorithm 1 of the paper), as
//! [`selfcascade_core::FeatureUpsampler`]s for the UNet's [`crate::unet::PivotInjection`]:
//!
//! - [`ResBlockUpsampler`]: the authors' released architecture (two latent-diffusion ResBlocks per
//!   injection point, the first upsampling), loadable from their `upsampler_only.pth` and from
//!   safetensors with the same names;
//! - [`LightUpsampler`]: a lightweight time-aware variant within the paper's parameter budget
//!   (9,638 parameters for SD 2.1).
//!
//! Both are zero-initialised: untrained, φ_n is plain nearest-neighbour upsampling of the pivot's
//! features, so the tuned model starts as "add the upsampled pivot features".
//!
//! ```no_run
//! use burn::backend::Flex;
//! use selfcascade_sd::unet::UNet2DConditionModel;
//! use selfcascade_sd::upsampler::{ResBlockUpsampler, ResBlockUpsamplerConfig};
//! # fn main() -> selfcascade_sd::Result<()> {
//! let device = Default::default();
//! let unet = UNet2DConditionModel::<Flex>::load("sdxl/unet".as_ref(), None, &device)?;
//! let config = ResBlockUpsamplerConfig::for_unet(&unet);
//! let phi = ResBlockUpsampler::<Flex>::load_pth("upsampler_only.pth".as_ref(), &config, &device)?;
//! # let _ = phi; Ok(()) }
//! ```

mod light;
mod resblock;

pub use light::{LightPoint, LightUpsampler, LightUpsamplerConfig};
pub use resblock::{ResBlock, ResBlockUpsampler, ResBlockUpsamplerConfig};

use crate::error::{Error, Result};
use burn::tensor::{backend::Backend, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// A parameter as written to disk: its name, shape (PyTorch layout) and values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Dotted name (`unet.feature_upsampler0.0.in_layers.0.weight`).
    pub name: String,
    /// Shape in PyTorch's layout (`Linear` weights `[out, in]`).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl NamedTensor {
    pub(crate) fn of<B: Backend, const D: usize>(name: String, t: Tensor<B, D>) -> Self {
        let shape = t.dims().to_vec();
        // Parameters of these modules are float32; a failed read leaves the values empty, which
        // `write_safetensors` reports.
        let data = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        Self { name, shape, data }
    }

    /// Checks that the values fill the shape: an [`Error::Weights`] naming `path` and the tensor
    /// otherwise (a parameter that could not be read as float32 has no values).
    pub(crate) fn check(&self, path: &Path) -> Result<()> {
        if self.data.len() == self.shape.iter().product::<usize>() {
            return Ok(());
        }
        Err(Error::Weights(format!(
            "{}: parameter `{}` of shape {:?} could not be read as float32 ({} values)",
            path.display(),
            self.name,
            self.shape,
            self.data.len()
        )))
    }

    /// The values as little-endian float32 bytes.
    pub(crate) fn le_bytes(&self) -> Vec<u8> {
        self.data.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// Checks a call φ_n(features, temb) → `size` against the upsampler's points, channels and embedding
/// width (the trait's "an error, never a panic").
pub(crate) fn check_call<B: Backend>(
    kind: &str,
    channels: &[usize],
    time_embed_dim: usize,
    n: usize,
    features: &Tensor<B, 4>,
    temb: &Tensor<B, 2>,
    size: (usize, usize),
) -> selfcascade_core::Result<()> {
    let err = |m: String| selfcascade_core::Error::Model(format!("{kind}: {m}"));
    let Some(&c) = channels.get(n) else {
        return Err(err(format!(
            "no injection point {n}; this upsampler has {} (channels {channels:?})",
            channels.len()
        )));
    };
    let [b, fc, fh, fw] = features.dims();
    let [tb, td] = temb.dims();
    if fc != c || b == 0 || fh == 0 || fw == 0 {
        return Err(err(format!(
            "point {n} expects features [B ≥ 1, {c}, h ≥ 1, w ≥ 1]; got [{b}, {fc}, {fh}, {fw}]"
        )));
    }
    if tb != b || td != time_embed_dim {
        return Err(err(format!(
            "point {n} expects a time embedding [{b}, {time_embed_dim}] for features of batch {b}; got [{tb}, {td}]"
        )));
    }
    if size.0 == 0 || size.1 == 0 {
        return Err(err(format!("point {n}: output size {size:?} is empty")));
    }
    Ok(())
}

/// Writes `tensors` as float32 safetensors with `format` and the JSON of `config` in the metadata.
pub(crate) fn save_with_config<C: serde::Serialize>(
    path: &Path,
    tensors: &[NamedTensor],
    format: &str,
    config: &C,
) -> Result<()> {
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), format.to_string());
    metadata.insert(
        "config".to_string(),
        serde_json::to_string(config)
            .map_err(|e| Error::Weights(format!("cannot encode the config: {e}")))?,
    );
    write_safetensors(path, tensors, metadata)
}

/// Builds a module from `store` with `build`, strictly: every tensor of the store must be used.
pub(crate) fn build_strict<B: Backend, T>(
    store: crate::load::TensorStore,
    device: &B::Device,
    build: impl FnOnce(&crate::load::Vb<B>) -> Result<T>,
) -> Result<T> {
    let weights = crate::load::Weights::from_store(store);
    let model = build(&weights.root(device))?;
    weights.finish()?;
    Ok(model)
}

/// Writes `tensors` as float32 safetensors with `metadata`, atomically
/// ([`crate::load::write_atomically`]), so a reader never sees a partial file.
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: &[NamedTensor],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let bad = |m: String| Error::Weights(format!("{}: {m}", path.display()));
    let mut raw: Vec<Vec<u8>> = Vec::with_capacity(tensors.len());
    for t in tensors {
        t.check(path)?;
        raw.push(t.le_bytes());
    }
    let mut views = Vec::with_capacity(tensors.len());
    for (t, bytes) in tensors.iter().zip(&raw) {
        let view = TensorView::new(Dtype::F32, t.shape.clone(), bytes)
            .map_err(|e| bad(format!("tensor `{}`: {e}", t.name)))?;
        views.push((t.name.clone(), view));
    }
    let data = safetensors::serialize(views, Some(metadata))
        .map_err(|e| bad(format!("cannot serialise: {e}")))?;
    crate::load::write_atomically(path, |f| f.write_all(&data))
}

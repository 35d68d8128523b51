//! Checkpoints: one safetensors file with diffusers-style parameter names (`unet.conv_in.weight`, …,
//! `label_embedding.weight`) and the architecture in its metadata, written atomically. Loading goes
//! through `selfcascade-sd`'s strict [`Weights`] loader, so a missing, unexpected or mis-shaped tensor
//! is an error.

use crate::config::ShapesModelConfig;
use crate::error::{Error, Result};
use crate::model::ShapesModel;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use selfcascade_sd::load::{TensorStore, Weights};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Value of the `format` metadata key of checkpoints written here.
pub const FORMAT: &str = "selfcascade-shapes-model/1";

/// A float parameter read out of a module: its dotted path, shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Dotted path of field names (`unet.down_blocks.0.resnets.0.conv1.weight`).
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

struct Collector {
    path: Vec<String>,
    containers: Vec<String>,
    out: Vec<NamedTensor>,
}

/// burn's container name of `selfcascade_sd::nn::Linear`, whose weight is `[in, out]` in memory and
/// `[out, in]` (PyTorch's layout) on disk.
const LINEAR: &str = "Struct:Linear";

impl<B: Backend> ModuleVisitor<B> for Collector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let mut t = param.val();
        let linear_weight = D == 2
            && self.containers.last().map(String::as_str) == Some(LINEAR)
            && self.path.last().map(String::as_str) == Some("weight");
        if linear_weight {
            t = t.swap_dims(0, 1);
        }
        let shape = t.dims().to_vec();
        // Tensors of this crate's models are float32; a conversion failure leaves the entry empty,
        // which the shape check of `save_checkpoint` reports.
        let data = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        self.out.push(NamedTensor {
            name: self.path.join("."),
            shape,
            data,
        });
    }
}

/// Every float parameter of `module` with its dotted field path, in visiting order, in the on-disk
/// (PyTorch / diffusers) layout: weights of `selfcascade_sd::nn::Linear` are transposed to `[out, in]`.
pub fn named_parameters<B: Backend, M: Module<B>>(module: &M) -> Vec<NamedTensor> {
    let mut c = Collector {
        path: Vec::new(),
        containers: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// What a checkpoint says about itself besides the weights.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    /// The architecture.
    pub config: ShapesModelConfig,
    /// Optimizer steps taken when it was written.
    pub step: u64,
    /// Free-form metadata (`format`, `config`, `unet_config`, `step`, and whatever the writer added).
    pub metadata: HashMap<String, String>,
}

/// How parameters are stored in a checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// float32 (training checkpoints; bit-exact reload).
    #[default]
    F32,
    /// float16 (the shipped default model: half the size; loaded back as float32).
    F16,
}

/// Writes `model` to `path` as safetensors (float32) with `extra` metadata added to the architecture
/// and `step`. The file is written to a temporary sibling, flushed and renamed, so a reader never sees
/// a partial checkpoint.
pub fn save_checkpoint<B: Backend>(
    path: &Path,
    model: &ShapesModel<B>,
    step: u64,
    extra: &[(&str, String)],
) -> Result<()> {
    save_checkpoint_as(path, model, step, extra, Precision::F32)
}

/// [`save_checkpoint`] with the storage precision chosen.
pub fn save_checkpoint_as<B: Backend>(
    path: &Path,
    model: &ShapesModel<B>,
    step: u64,
    extra: &[(&str, String)],
    precision: Precision,
) -> Result<()> {
    let tensors = named_parameters(model);
    let mut metadata: HashMap<String, String> = HashMap::new();
    metadata.insert("format".into(), FORMAT.into());
    let config = serde_json::to_string(model.config())
        .map_err(|e| Error::checkpoint(path, format!("cannot encode the config: {e}")))?;
    let unet_config = serde_json::to_string(model.unet.config())
        .map_err(|e| Error::checkpoint(path, format!("cannot encode the UNet config: {e}")))?;
    metadata.insert("config".into(), config);
    metadata.insert("unet_config".into(), unet_config);
    metadata.insert("step".into(), step.to_string());
    for (k, v) in extra {
        metadata.insert((*k).to_string(), v.clone());
    }
    write_tensors(path, tensors, metadata, precision)
}

/// Writes `data` to `path` atomically: a temporary file in the same folder, synced, then renamed.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::checkpoint(path, "the path names no file"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(data).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads the metadata of a checkpoint written by [`save_checkpoint`] without loading the weights.
pub fn read_checkpoint_info(path: &Path) -> Result<CheckpointInfo> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_checkpoint_info(&bytes, path)
}

/// The metadata of a checkpoint held in memory (`path` names it in messages).
fn parse_checkpoint_info(bytes: &[u8], path: &Path) -> Result<CheckpointInfo> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::checkpoint(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    match metadata.get("format") {
        Some(f) if f == FORMAT => {}
        Some(f) => {
            return Err(Error::checkpoint(
                path,
                format!("format `{f}` is not `{FORMAT}`"),
            ))
        }
        None => {
            return Err(Error::checkpoint(
                path,
                format!("no `format` metadata: not a {FORMAT} checkpoint"),
            ))
        }
    }
    let config_text = metadata
        .get("config")
        .ok_or_else(|| Error::checkpoint(path, "no `config` metadata"))?;
    let config: ShapesModelConfig = serde_json::from_str(config_text)
        .map_err(|e| Error::checkpoint(path, format!("invalid `config` metadata: {e}")))?;
    let step = match metadata.get("step") {
        Some(s) => s
            .parse()
            .map_err(|e| Error::checkpoint(path, format!("invalid `step` metadata `{s}`: {e}")))?,
        None => 0,
    };
    Ok(CheckpointInfo {
        config,
        step,
        metadata,
    })
}

/// Loads a checkpoint written by [`save_checkpoint`] onto `device`, strictly (every tensor of the
/// architecture present with its shape, nothing else in the file).
pub fn load_checkpoint<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(ShapesModel<B>, CheckpointInfo)> {
    let info = read_checkpoint_info(path)?;
    let weights = Weights::from_store(TensorStore::open(&[path.to_path_buf()])?);
    let model = ShapesModel::new(&weights.root(device), &info.config)?;
    weights.finish()?;
    Ok((model, info))
}

/// Loads a checkpoint embedded in the program (`include_bytes!` of a file written by
/// [`save_checkpoint`] or [`save_checkpoint_as`]); `name` stands for its path in messages.
pub fn load_checkpoint_static<B: Backend>(
    name: &str,
    bytes: &'static [u8],
    device: &B::Device,
) -> Result<(ShapesModel<B>, CheckpointInfo)> {
    let info = parse_checkpoint_info(bytes, Path::new(name))?;
    let weights = Weights::from_store(TensorStore::from_static(name, bytes)?);
    let model = ShapesModel::new(&weights.root(device), &info.config)?;
    weights.finish()?;
    Ok((model, info))
}

/// Writes named tensors (on-disk layouts, see [`named_parameters`]) with `metadata` as a safetensors
/// file, atomically.
pub fn write_tensors(
    path: &Path,
    tensors: Vec<NamedTensor>,
    metadata: HashMap<String, String>,
    precision: Precision,
) -> Result<()> {
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for t in tensors {
        let n: usize = t.shape.iter().product();
        if t.data.len() != n {
            return Err(Error::checkpoint(
                path,
                format!("parameter `{}` could not be read as float32", t.name),
            ));
        }
        let raw: Vec<u8> = match precision {
            Precision::F32 => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Precision::F16 => t
                .data
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        };
        bytes.push((t.name, t.shape, raw));
    }
    let dtype = match precision {
        Precision::F32 => Dtype::F32,
        Precision::F16 => Dtype::F16,
    };
    let mut views = Vec::with_capacity(bytes.len());
    for (name, shape, raw) in &bytes {
        let view = TensorView::new(dtype, shape.clone(), raw)
            .map_err(|e| Error::checkpoint(path, format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    let data = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::checkpoint(path, format!("cannot serialise: {e}")))?;
    write_atomic(path, &data)
}

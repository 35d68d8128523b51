//! PyTorch checkpoints (`torch.save` files, `.pth` / `.pt`) read through burn-store's pickle reader and
//! presented as a [`TensorStore`], so the strict [`super::Weights`] accounting applies to them as to
//! safetensors files.

use super::store::TensorStore;
use crate::error::{Error, Result};
use burn::tensor::DType;
use burn_store::pytorch::{PytorchError, PytorchReader};
use safetensors::tensor::{Dtype, TensorView};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

impl TensorStore {
    /// Reads the tensors of a PyTorch checkpoint. With `top_level_key = Some("state_dict")` only the
    /// dictionary under that key is read (a Lightning checkpoint, or the released `upsampler_only.pth`);
    /// its tensors keep their dotted names (`unet.feature_upsampler0.0.in_layers.0.weight`). Float tensors
    /// (F32, F16, BF16, F64) are kept in their precision and read as float32 like safetensors ones;
    /// batch norms' integer `num_batches_tracked` counters are left out; a tensor of any other type, a file that is not a PyTorch checkpoint, a missing key or a truncated
    /// file is an [`Error::Weights`] naming the file.
    pub fn open_pth(path: &Path, top_level_key: Option<&str>) -> Result<Self> {
        let bad = |what: String| Error::Weights(format!("{}: {what}", path.display()));
        if !path.is_file() {
            return Err(Error::Model(format!(
                "PyTorch checkpoint {} does not exist",
                path.display()
            )));
        }
        // burn-store reports malformed files as errors; a panic inside it is turned into one too, so
        // no file can abort the program.
        let read = catch_unwind(AssertUnwindSafe(|| match top_level_key {
            Some(key) => PytorchReader::with_top_level_key(path, key),
            None => PytorchReader::new(path),
        }))
        .map_err(|_| bad("the PyTorch reader failed on this file (corrupt checkpoint?)".into()))?;
        let reader = read.map_err(|e| match e {
            PytorchError::KeyNotFound(k) => bad(format!(
                "no `{k}` entry in this PyTorch checkpoint; expected a dictionary of tensors under `{k}` \
                 (as torch.save({{'{k}': model.state_dict()}}) writes)"
            )),
            other => bad(format!("not a readable PyTorch checkpoint: {other}")),
        })?;
        let mut names = reader.keys();
        names.sort();
        if names.is_empty() {
            return Err(bad(format!(
                "no tensors{}",
                top_level_key
                    .map(|k| format!(" under `{k}`"))
                    .unwrap_or_default()
            )));
        }
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            let Some(snapshot) = reader.get(&name) else {
                continue;
            };
            let data = snapshot
                .to_data()
                .map_err(|e| bad(format!("tensor `{name}` cannot be read: {e}")))?;
            let dtype = match data.dtype {
                DType::F32 => Dtype::F32,
                DType::F16 => Dtype::F16,
                DType::BF16 => Dtype::BF16,
                DType::F64 => Dtype::F64,
                // Batch norm's step counter (an int64 buffer) is not a weight: left out.
                _ if name.ends_with("num_batches_tracked") => continue,
                other => {
                    return Err(bad(format!(
                        "tensor `{name}` has dtype {other:?}; expected a float type (F32, F16, BF16, F64)"
                    )))
                }
            };
            tensors.push((name, dtype, data.shape.to_vec(), data.bytes));
        }
        let views = tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), &bytes[..])
                    .map(|v| (name.clone(), v))
                    .map_err(|e| bad(format!("tensor `{name}` {shape:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| bad(format!("cannot index the tensors: {e}")))?;
        TensorStore::from_owned(path.to_path_buf(), bytes)
    }
}

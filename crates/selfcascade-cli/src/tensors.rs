//! Reading and writing named float32 tensors as safetensors files (atomically).

use crate::output::write_atomic;
use crate::CliResult;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use selfcascade_sd::load::TensorStore;
use std::collections::BTreeMap;
use std::path::Path;

/// A safetensors file opened for reading.
pub struct Inputs {
    store: TensorStore,
    path: String,
}

impl Inputs {
    /// Opens `path`.
    pub fn open(path: &Path) -> CliResult<Self> {
        let store = TensorStore::open(&[path.to_path_buf()]).map_err(|e| e.to_string())?;
        Ok(Self {
            store,
            path: path.display().to_string(),
        })
    }

    /// Whether the file holds `name`.
    pub fn has(&self, name: &str) -> bool {
        self.store.shape(name).is_some()
    }

    /// Tensor `name` of rank `D` as float32 on `device`.
    pub fn float<B: Backend, const D: usize>(
        &self,
        name: &str,
        device: &B::Device,
    ) -> CliResult<Tensor<B, D>> {
        let t = self.store.read(name).map_err(|_| {
            format!(
                "{} has no tensor `{name}` (it holds: {})",
                self.path,
                self.store.names().collect::<Vec<_>>().join(", ")
            )
        })?;
        if t.shape.len() != D {
            return Err(format!(
                "{}: tensor `{name}` has shape {:?}; expected rank {D}",
                self.path, t.shape
            ));
        }
        let mut shape = [0usize; D];
        shape.copy_from_slice(&t.shape);
        Ok(Tensor::from_data(TensorData::new(t.data, shape), device))
    }

    /// Tensor `name` as flat float values and shape (any rank).
    pub fn values(&self, name: &str) -> CliResult<(Vec<usize>, Vec<f32>)> {
        let t = self
            .store
            .read(name)
            .map_err(|e| format!("{}: {e}", self.path))?;
        Ok((t.shape, t.data))
    }

    /// Integer rows of a `[B, N]` tensor `name`.
    pub fn int_rows(&self, name: &str) -> CliResult<Vec<Vec<i64>>> {
        let (shape, data) = self.values(name)?;
        match shape.as_slice() {
            [_, n] if *n > 0 => Ok(data
                .chunks(*n)
                .map(|r| r.iter().map(|v| *v as i64).collect())
                .collect()),
            [n] => Ok(vec![data.iter().take(*n).map(|v| *v as i64).collect()]),
            _ => Err(format!(
                "{}: `{name}` has shape {shape:?}; expected [B, N] token ids",
                self.path
            )),
        }
    }
}

/// Named tensors to write.
#[derive(Default)]
pub struct Outputs {
    tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)>,
}

impl Outputs {
    /// Adds a float tensor.
    pub fn add<B: Backend, const D: usize>(&mut self, name: &str, t: Tensor<B, D>) -> CliResult {
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| format!("cannot read tensor `{name}`: {e:?}"))?;
        self.tensors.insert(
            name.to_string(),
            (shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        );
        Ok(())
    }

    /// Writes every tensor to `path` atomically.
    pub fn write(&self, path: &Path) -> CliResult {
        let views: Vec<(String, TensorView)> = self
            .tensors
            .iter()
            .map(|(n, (s, b))| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot serialise tensors: {e}"))?;
        let bytes = safetensors::serialize(views, None)
            .map_err(|e| format!("cannot serialise tensors: {e}"))?;
        write_atomic(path, |f| std::io::Write::write_all(f, &bytes))
    }
}

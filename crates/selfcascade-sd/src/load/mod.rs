//! Weight loading: safetensors files (single, sharded, fp16/bf16 variants) and strict name accounting.

mod store;
mod vb;

pub use store::{find_weight_files, HostTensor, TensorStore};
pub use vb::{Init, Vb, Weights};

use crate::error::{Error, Result};
use std::path::Path;

/// Opens the weights of a component folder (`unet/`, `vae/`, `text_encoder/`, …).
pub fn open_component(dir: &Path, variant: Option<&str>) -> Result<Weights> {
    if !dir.is_dir() {
        return Err(Error::Model(format!(
            "component folder {} does not exist",
            dir.display()
        )));
    }
    let files = find_weight_files(dir, variant)?;
    Ok(Weights::from_store(TensorStore::open(&files)?))
}

/// Reads and parses a component's `config.json` into `T`.
pub fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.display().to_string(),
        message: format!("invalid config: {e}"),
    })
}

//! Weight loading: safetensors files (single, sharded, fp16/bf16 variants), PyTorch checkpoints
//! ([`TensorStore::open_pth`]) and strict name accounting.

mod pth;
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

/// Reads a component's `config.json` into `T` and checks it with `validate` (whose message names what is
/// wrong); both failures are [`Error::Config`] naming the file.
pub fn read_checked_config<T: serde::de::DeserializeOwned>(
    path: &Path,
    validate: impl FnOnce(&T) -> std::result::Result<(), String>,
) -> Result<T> {
    let cfg: T = read_config(path)?;
    validate(&cfg).map_err(|message| Error::Config {
        path: path.display().to_string(),
        message,
    })?;
    Ok(cfg)
}

/// Parses config JSON `text` into `T` and checks it with `validate`; `origin` names the text in errors.
pub fn parse_checked_config<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    validate: impl FnOnce(&T) -> std::result::Result<(), String>,
) -> Result<T> {
    let cfg: T = serde_json::from_str(text).map_err(|e| Error::Config {
        path: origin.to_string(),
        message: format!("invalid config: {e}"),
    })?;
    validate(&cfg).map_err(|message| Error::Config {
        path: origin.to_string(),
        message,
    })?;
    Ok(cfg)
}

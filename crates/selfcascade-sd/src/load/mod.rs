//! Weight loading: safetensors files (single, sharded, fp16/bf16 variants), PyTorch checkpoints
//! ([`TensorStore::open_pth`]) and strict name accounting; writing PyTorch checkpoints
//! ([`write_pth_state_dict`]) and the atomic file writes shared by every saver.

mod pth;
mod pth_write;
mod store;
mod vb;

pub use pth_write::write_pth_state_dict;
pub use store::{find_weight_files, HostTensor, TensorStore};
pub use vb::{Init, Vb, Weights};

use crate::error::{Error, Result};
use std::path::Path;

/// Writes `path` atomically: `write` fills a temporary sibling (`.{name}.tmp-{pid}-{n}` in the same
/// folder), which is synced and then renamed over `path`, so a reader sees the old file or the complete
/// new one, never a partial one. On any error the temporary is removed, `path` is left as it was and the
/// error (an [`Error::Io`]) names `path`.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    // Distinguishes concurrent writes of one process to the same path (parallel tests).
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::Weights(format!("{}: not a file path", path.display())))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

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

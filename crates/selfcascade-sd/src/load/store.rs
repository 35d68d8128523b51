//! Memory-mapped safetensors files, single or sharded, with any float dtype converted on read.

use crate::error::{Error, Result};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, TensorInfo};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The bytes of one safetensors file: memory-mapped from disk, embedded in the program, or built in
/// memory (a PyTorch checkpoint converted on load). Shared, so a store clones without copying them.
#[derive(Clone)]
enum Bytes {
    Mapped(Arc<Mmap>),
    Static(&'static [u8]),
    Owned(Arc<[u8]>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Static(b) => b,
            Bytes::Owned(b) => b,
        }
    }
}

#[derive(Clone)]
struct MappedFile {
    path: PathBuf,
    map: Bytes,
    data_start: usize,
}

/// The tensors of one model component: one or more safetensors files, indexed by tensor name. Cloning
/// shares the files' bytes (one checkpoint read once can feed several models).
#[derive(Clone)]
pub struct TensorStore {
    files: Vec<MappedFile>,
    index: BTreeMap<String, (usize, TensorInfo)>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for TensorStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorStore")
            .field(
                "files",
                &self
                    .files
                    .iter()
                    .map(|m| m.path.display().to_string())
                    .collect::<Vec<_>>(),
            )
            .field("tensors", &self.index.len())
            .finish()
    }
}

/// A tensor read from a store, converted to float32.
#[derive(Debug, Clone)]
pub struct HostTensor {
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl TensorStore {
    /// Opens safetensors files (shards of one model are given together).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut store = Self {
            files: Vec::new(),
            index: BTreeMap::new(),
            metadata: BTreeMap::new(),
        };
        for path in paths {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the map is read-only; the file is expected not to change while the model loads.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            store.add(path.clone(), Bytes::Mapped(Arc::new(map)))?;
        }
        Ok(store)
    }

    /// A store over one safetensors file embedded in the program (`include_bytes!`); `name` stands
    /// for its path in messages.
    pub fn from_static(name: &str, bytes: &'static [u8]) -> Result<Self> {
        let mut store = Self {
            files: Vec::new(),
            index: BTreeMap::new(),
            metadata: BTreeMap::new(),
        };
        store.add(PathBuf::from(name), Bytes::Static(bytes))?;
        Ok(store)
    }

    /// A store over safetensors bytes built in memory; `origin` stands for their file in messages.
    pub fn from_owned(origin: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        let mut store = Self {
            files: Vec::new(),
            index: BTreeMap::new(),
            metadata: BTreeMap::new(),
        };
        store.add(origin, Bytes::Owned(bytes.into()))?;
        Ok(store)
    }

    fn add(&mut self, path: PathBuf, map: Bytes) -> Result<()> {
        let (header, meta) = SafeTensors::read_metadata(&map).map_err(|e| {
            Error::Weights(format!(
                "{}: not a valid safetensors file ({e}); it may be truncated or corrupt",
                path.display()
            ))
        })?;
        if let Some(m) = meta.metadata() {
            self.metadata
                .extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let data_start = 8 + header;
        let data_len = map.len() - data_start.min(map.len());
        for (name, info) in meta.tensors() {
            let (start, end) = info.data_offsets;
            if end > data_len || start > end {
                return Err(Error::Weights(format!(
                    "{}: tensor `{name}` lies outside the file (bytes {start}..{end} of {data_len}); the file is truncated",
                    path.display()
                )));
            }
            if let Some((other, _)) = self.index.get(&name) {
                let other: &MappedFile = &self.files[*other];
                return Err(Error::Weights(format!(
                    "tensor `{name}` appears in both {} and {}",
                    other.path.display(),
                    path.display()
                )));
            }
            self.index.insert(name, (self.files.len(), info.clone()));
        }
        self.files.push(MappedFile {
            path,
            map,
            data_start,
        });
        Ok(())
    }

    /// The value of `key` in the files' `__metadata__` (a later file's value wins).
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The same tensors under new names: `rename(name, shape)` gives the new name and shape of a tensor
    /// (a shape of the same element count, e.g. a 1×1 convolution's `[C, C, 1, 1]` as a linear layer's
    /// `[C, C]`), or `None` to leave the tensor out. Used to read a checkpoint with another naming scheme
    /// (latent diffusion's) through modules built with diffusers' names. Errors when two tensors get the
    /// same name or a shape changes its element count.
    pub fn renamed(
        self,
        rename: impl Fn(&str, &[usize]) -> Option<(String, Vec<usize>)>,
    ) -> Result<Self> {
        let mut index = BTreeMap::new();
        for (name, (file, mut info)) in self.index {
            let Some((new, shape)) = rename(&name, &info.shape) else {
                continue;
            };
            let count = |s: &[usize]| s.iter().product::<usize>();
            if count(&shape) != count(&info.shape) {
                return Err(Error::Weights(format!(
                    "tensor `{name}` {:?} cannot be read as `{new}` {shape:?}",
                    info.shape
                )));
            }
            info.shape = shape;
            if index.insert(new.clone(), (file, info)).is_some() {
                return Err(Error::Weights(format!(
                    "two tensors are renamed to `{new}` (the second is `{name}`)"
                )));
            }
        }
        Ok(Self { index, ..self })
    }

    /// Names of every tensor.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|(_, i)| i.shape.as_slice())
    }

    /// The file holding a tensor (for messages).
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.index
            .get(name)
            .map(|(f, _)| self.files[*f].path.as_path())
    }

    /// A description of the files, for messages.
    pub fn describe(&self) -> String {
        self.files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Reads a tensor as float32 (F32, F16, BF16 and F64 are accepted).
    pub fn read(&self, name: &str) -> Result<HostTensor> {
        let (fi, info) = self.index.get(name).ok_or_else(|| {
            Error::Weights(format!(
                "tensor `{name}` is missing from {}",
                self.describe()
            ))
        })?;
        let file = &self.files[*fi];
        let (s, e) = info.data_offsets;
        let bytes = &file.map[file.data_start + s..file.data_start + e];
        let n: usize = info.shape.iter().product();
        let bad = |w: usize| {
            Error::Weights(format!(
                "{}: tensor `{name}` has {} bytes, expected {} for shape {:?} {:?}",
                file.path.display(),
                bytes.len(),
                n * w,
                info.shape,
                info.dtype
            ))
        };
        let data: Vec<f32> = match info.dtype {
            Dtype::F32 => {
                if bytes.len() != n * 4 {
                    return Err(bad(4));
                }
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            Dtype::F16 => {
                if bytes.len() != n * 2 {
                    return Err(bad(2));
                }
                bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            Dtype::BF16 => {
                if bytes.len() != n * 2 {
                    return Err(bad(2));
                }
                bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
            }
            Dtype::F64 => {
                if bytes.len() != n * 8 {
                    return Err(bad(8));
                }
                bytes
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                    .collect()
            }
            Dtype::I64 => {
                if bytes.len() != n * 8 {
                    return Err(bad(8));
                }
                bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
                    .collect()
            }
            Dtype::I32 => {
                if bytes.len() != n * 4 {
                    return Err(bad(4));
                }
                bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f32).collect()
            }
            other => {
                return Err(Error::Weights(format!(
                    "{}: tensor `{name}` has dtype {other:?}; expected a float type (F32, F16, BF16, F64)",
                    file.path.display()
                )))
            }
        };
        #[cfg(unix)]
        if let Bytes::Mapped(map) = &file.map {
            // The bytes are copied out: let the kernel drop their pages now rather than when the whole
            // store is dropped, so loading a model does not hold it twice in resident memory (file pages
            // plus the converted tensors). Advice only; a failure changes nothing.
            // SAFETY: the map is read-only and file-backed, so dropped pages are read back from the file
            // if touched again; no data is lost.
            let _ = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    file.data_start + s,
                    e - s,
                )
            };
        }
        Ok(HostTensor {
            shape: info.shape.clone(),
            data,
        })
    }

    /// Reads an integer tensor (I64, I32) as i64 values.
    pub fn read_int(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        let t = self.read(name)?;
        Ok((t.shape, t.data.iter().map(|v| *v as i64).collect()))
    }
}

/// Finds the weight files of a component folder (e.g. `unet/`): a single file, or the shards named
/// by an index; `variant` selects e.g. `fp16` files (`diffusion_pytorch_model.fp16.safetensors`).
/// Without a variant, plain files are preferred and a single variant is used if it is all there is.
pub fn find_weight_files(dir: &Path, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let variant_of = |n: &str| -> Option<String> {
        // model.fp16.safetensors, model.safetensors.index.fp16.json, model.fp16-00001-of-00002.safetensors
        let stem = n
            .strip_suffix(".safetensors")
            .or_else(|| n.strip_suffix(".json"))?;
        let parts: Vec<&str> = stem.split('.').collect();
        parts
            .iter()
            .skip(1)
            .find(|p| **p != "safetensors" && **p != "index")
            .map(|p| p.split('-').next().unwrap_or(p).to_string())
    };
    let wanted = |n: &str| variant_of(n).as_deref() == variant;
    let pick = |wanted: &dyn Fn(&str) -> bool| -> Result<Option<Vec<PathBuf>>> {
        if let Some(index) = names
            .iter()
            .find(|n| n.contains(".safetensors.index") && n.ends_with(".json") && wanted(n))
        {
            let path = dir.join(index);
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Weights(format!("{}: not valid JSON: {e}", path.display())))?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| {
                    Error::Weights(format!(
                        "{}: no `weight_map` object in the shard index",
                        path.display()
                    ))
                })?;
            let mut shards: Vec<String> = map
                .values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            shards.sort();
            shards.dedup();
            let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
            if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
                return Err(Error::Weights(format!(
                    "{} names shard {} which does not exist",
                    path.display(),
                    missing.display()
                )));
            }
            return Ok(Some(paths));
        }
        let singles: Vec<&String> = names
            .iter()
            .filter(|n| n.ends_with(".safetensors") && !n.contains("-of-") && wanted(n))
            .collect();
        match singles.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(vec![dir.join(one)])),
            many => Err(Error::Weights(format!(
                "{} holds several weight files ({}); keep one",
                dir.display(),
                many.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    };
    if let Some(found) = pick(&wanted)? {
        return Ok(found);
    }
    if variant.is_none() {
        let variants: std::collections::BTreeSet<String> =
            names.iter().filter_map(|n| variant_of(n)).collect();
        if variants.len() == 1 {
            let only = variants.into_iter().next();
            if let Some(found) = pick(&|n: &str| variant_of(n) == only)? {
                return Ok(found);
            }
        }
    }
    Err(Error::Model(format!(
        "no {}safetensors weights in {} (expected e.g. diffusion_pytorch_model{}.safetensors, model{}.safetensors, \
         or shards with a .safetensors.index.json){}",
        variant.map(|v| format!("`{v}` ")).unwrap_or_default(),
        dir.display(),
        variant.map(|v| format!(".{v}")).unwrap_or_default(),
        variant.map(|v| format!(".{v}")).unwrap_or_default(),
        if names.iter().any(|n| n.ends_with(".bin") || n.ends_with(".ckpt")) {
            "; PyTorch .bin/.ckpt files are not read: convert them to safetensors"
        } else {
            ""
        }
    )))
}

//! Building modules from weights by name, with strict accounting of what was used.

use super::store::TensorStore;
use crate::error::{Error, Result};
use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// How a parameter is initialised when no weight file is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// All ones (norm scales).
    Ones,
    /// All zeros (biases of norms, zero-initialised outputs).
    Zeros,
    /// U(−bound, bound) (PyTorch's default for conv/linear: bound = 1/sqrt(fan_in)).
    Uniform(f64),
    /// N(0, std²) (embeddings).
    Normal(f64),
}

/// Where parameters come from: a weight store (pretrained) or a seeded initialiser (training from
/// scratch). Tracks which tensors were taken so unexpected ones can be reported.
pub struct Weights {
    store: Option<TensorStore>,
    used: Mutex<BTreeSet<String>>,
    rng: Mutex<ChaCha8Rng>,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("store", &self.store)
            .finish()
    }
}

impl Weights {
    /// Parameters read from `store`.
    pub fn from_store(store: TensorStore) -> Self {
        Self {
            store: Some(store),
            used: Mutex::new(BTreeSet::new()),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(0)),
        }
    }

    /// Freshly initialised parameters (seeded).
    pub fn random(seed: u64) -> Self {
        Self {
            store: None,
            used: Mutex::new(BTreeSet::new()),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
        }
    }

    /// The builder at the root of the naming tree.
    pub fn root<B: Backend>(&self, device: &B::Device) -> Vb<'_, B> {
        Vb {
            weights: self,
            prefix: String::new(),
            device: device.clone(),
        }
    }

    /// Errors if the store holds tensors that no module took (strict loading).
    pub fn finish(&self) -> Result<()> {
        self.finish_under("")
    }

    /// [`Self::finish`] for the tensors whose names start with `prefix` only (one model of a
    /// checkpoint that holds several, e.g. `model.diffusion_model.` of a latent-diffusion `.ckpt`).
    pub fn finish_under(&self, prefix: &str) -> Result<()> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let used = self
            .used
            .lock()
            .map_err(|_| Error::Weights("weight accounting poisoned".into()))?;
        let extra: Vec<&str> = store
            .names()
            .filter(|n| n.starts_with(prefix) && !used.contains(*n))
            .collect();
        if extra.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = extra
            .iter()
            .take(8)
            .map(|n| format!("`{n}` {:?}", store.shape(n).unwrap_or(&[])))
            .collect();
        Err(Error::Weights(format!(
            "{} unexpected tensor(s) in {} that the config does not use: {}{} — is the config.json from the same model?",
            extra.len(),
            store.describe(),
            shown.join(", "),
            if extra.len() > 8 { ", …" } else { "" }
        )))
    }

    fn take(&self, name: &str, shape: &[usize], init: Init) -> Result<Vec<f32>> {
        match &self.store {
            Some(store) => {
                let Some(found) = store.shape(name) else {
                    return Err(Error::Weights(format!(
                        "tensor `{name}` is missing from {} (the config expects shape {shape:?})",
                        store.describe()
                    )));
                };
                if found != shape {
                    return Err(Error::Weights(format!(
                        "tensor `{name}` in {} has shape {found:?}, the config expects {shape:?}",
                        store
                            .file_of(name)
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    )));
                }
                let t = store.read(name)?;
                if let Ok(mut used) = self.used.lock() {
                    used.insert(name.to_string());
                }
                Ok(t.data)
            }
            None => {
                let n: usize = shape.iter().product();
                let mut rng = self
                    .rng
                    .lock()
                    .map_err(|_| Error::Weights("weight initialiser poisoned".into()))?;
                Ok(match init {
                    Init::Ones => vec![1.0; n],
                    Init::Zeros => vec![0.0; n],
                    Init::Uniform(b) => {
                        let d = Uniform::new_inclusive(-b as f32, b as f32)
                            .map_err(|e| Error::Weights(format!("bad init bound {b}: {e}")))?;
                        (0..n).map(|_| d.sample(&mut *rng)).collect()
                    }
                    Init::Normal(s) => {
                        let d = Normal::new(0.0f32, s as f32)
                            .map_err(|e| Error::Weights(format!("bad init std {s}: {e}")))?;
                        (0..n).map(|_| d.sample(&mut *rng)).collect()
                    }
                })
            }
        }
    }

    fn mark_used(&self, name: &str) {
        if let Ok(mut used) = self.used.lock() {
            used.insert(name.to_string());
        }
    }

    fn has(&self, name: &str) -> bool {
        self.store.as_ref().is_some_and(|s| s.shape(name).is_some())
    }

    fn is_random(&self) -> bool {
        self.store.is_none()
    }
}

/// A position in the parameter naming tree (`down_blocks.0.resnets.1`), diffusers' names.
#[derive(Clone)]
pub struct Vb<'a, B: Backend> {
    weights: &'a Weights,
    prefix: String,
    device: B::Device,
}

impl<'a, B: Backend> Vb<'a, B> {
    /// The child named `name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Self {
            weights: self.weights,
            prefix,
            device: self.device.clone(),
        }
    }

    /// The full name of `name` under this prefix.
    pub fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// The device parameters are created on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Whether the weight store holds `name` here (always false when initialising randomly).
    pub fn contains(&self, name: &str) -> bool {
        self.weights.has(&self.path(name))
    }

    /// True when parameters are initialised rather than loaded.
    pub fn is_random(&self) -> bool {
        self.weights.is_random()
    }

    /// Marks a stored tensor as deliberately unused (e.g. buffers such as `position_ids`).
    pub fn ignore(&self, name: &str) {
        self.weights.mark_used(&self.path(name));
    }

    /// The tensor `name` of exactly `shape`.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Tensor<B, D>> {
        let data = self.weights.take(&self.path(name), &shape, init)?;
        Ok(Tensor::from_data(
            TensorData::new(data, shape),
            &self.device,
        ))
    }

    /// The parameter `name` of exactly `shape`.
    pub fn param<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        init: Init,
    ) -> Result<Param<Tensor<B, D>>> {
        Ok(Param::from_tensor(self.tensor(name, shape, init)?))
    }
}

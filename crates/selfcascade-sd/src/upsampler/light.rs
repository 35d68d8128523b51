//! A lightweight time-aware feature upsampler within the paper's parameter budget (the paper reports
//! 0.002M trainable parameters for SD 2.1; the released ResBlocks have 145.5M).

use super::{build_strict, check_call, save_with_config, NamedTensor};
use crate::error::{Error, Result};
use crate::load::{Init, TensorStore, Vb, Weights};
use crate::nn::{kernels, Linear};
use crate::unet::{resize_nearest, UNet2DConditionModel};
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
use selfcascade_core::FeatureUpsampler;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Value of the `format` metadata key of safetensors files written by [`LightUpsampler`].
pub const FORMAT: &str = "selfcascade-light-upsampler/1";

/// Name prefix of every tensor of a [`LightUpsampler`] checkpoint.
const PREFIX: &str = "light_upsampler";

/// Width of the shared time code s(t) (one component gates the gains, one the shifts).
const TIME_CODE: usize = 2;

/// The sizes of a [`LightUpsampler`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LightUpsamplerConfig {
    /// Channels C_n at each injection point (SD 2.1: `[320, 640, 1280, 1280]`).
    pub channels: Vec<usize>,
    /// Width D of the UNet's time embedding (SD 2.1: 1280).
    pub time_embed_dim: usize,
}

impl LightUpsamplerConfig {
    /// The upsampler for `unet`: its injection channels and time embedding width.
    pub fn for_unet<B: Backend>(unet: &UNet2DConditionModel<B>) -> Self {
        Self {
            channels: unet.injection_channels(),
            time_embed_dim: unet.time_embed_dim(),
        }
    }

    /// SD 2.1 base's sizes: channels `[320, 640, 1280, 1280]`, time embedding 1280.
    pub fn sd21() -> Self {
        Self {
            channels: vec![320, 640, 1280, 1280],
            time_embed_dim: 1280,
        }
    }

    /// Trainable parameters: 2·D + 2 (the shared time projection) + Σ_n (2·C_n + 9) (gain, shift and
    /// one 3×3 kernel per point). SD 2.1: 2,562 + 7,040 + 36 = 9,638.
    pub fn num_params(&self) -> usize {
        TIME_CODE * self.time_embed_dim
            + TIME_CODE
            + self.channels.iter().map(|c| 2 * c + 9).sum::<usize>()
    }

    fn validate(&self) -> Result<()> {
        if self.channels.is_empty() || self.channels.contains(&0) || self.time_embed_dim == 0 {
            return Err(Error::Input(format!(
                "light upsampler config {self:?}: needs at least one injection point, positive channel \
                 counts and a time embedding width"
            )));
        }
        Ok(())
    }
}

/// The parameters of one injection point of a [`LightUpsampler`].
#[derive(Module, Debug)]
pub struct LightPoint<B: Backend> {
    /// γ_n `[C]`: per-channel gain, gated by s₀(t); zero-initialised.
    pub gain: Param<Tensor<B, 1>>,
    /// β_n `[C]`: per-channel shift, gated by s₁(t); zero-initialised.
    pub shift: Param<Tensor<B, 1>>,
    /// k_n `[3, 3]`: the residual 3×3 kernel, applied to every channel alike; zero-initialised.
    pub kernel: Param<Tensor<B, 2>>,
}

/// A lightweight time-aware feature upsampler (this project's design, not the release's). For the
/// pivot features h `[B, C_n, h, w]` at point n, the target size (H, W) and the UNet's time
/// embedding `emb` `[B, D]`:
///
/// ```text
/// y   = nearest(h, (H, W))                       PyTorch nearest; ×2 when (H, W) = 2·(h, w)
/// z   = y + k_n ⋆ y                              one 3×3 kernel for all C_n channels, zero padding:
///                                                a channel-shared depthwise conv initialised to identity
/// s   = W · SiLU(emb) + c                        s ∈ R^{B×2}, W `[2, D]`, c `[2]`, shared by every point
/// φ_n = z ⊙ (1 + s₀ · γ_n) + s₁ · β_n            γ_n, β_n ∈ R^{C_n}, broadcast over (H, W)
/// ```
///
/// Time-aware through s(t): the per-channel gain and shift are switched on and off by the timestep
/// (and SDXL's micro-conditioning, which `emb` includes). k_n, γ_n and β_n start at zero (W and c
/// with PyTorch's default uniform initialisation), so the untrained module is exactly nearest
/// upsampling of the pivot features (adding an exact zero), and every zero parameter still gets a
/// gradient at the first step (∂φ/∂γ = s₀·z, ∂φ/∂β = s₁, ∂φ/∂k = y's shifted copies); W and c get
/// theirs once γ or β moves.
///
/// Parameters: 2·D + 2 + Σ_n (2·C_n + 9). For SD 2.1 (D = 1280, C = 320, 640, 1280, 1280, N = 4):
/// 2·1280 + 2 = 2,562 (time projection) + 2·3,520 = 7,040 (gains and shifts) + 4·9 = 36 (kernels) =
/// **9,638** ≤ 10,000 (0.0096M, against 0.002M in the paper and 145.5M for the release).
///
/// Checkpoint names (safetensors): `light_upsampler.time_proj.{weight [2, D], bias [2]}`,
/// `light_upsampler.feature_upsampler{n}.{gain [C_n], shift [C_n], kernel [3, 3]}`.
#[derive(Module, Debug)]
pub struct LightUpsampler<B: Backend> {
    /// `time_proj`: Linear(D, 2) on SiLU(emb), shared by every point.
    pub time_proj: Linear<B>,
    /// `feature_upsampler{n}`: the per-point parameters.
    pub points: Vec<LightPoint<B>>,
    #[module(skip)]
    config: LightUpsamplerConfig,
}

impl<B: Backend> LightUpsampler<B> {
    /// Builds the upsampler of `config` from `vb` at the checkpoint root, loaded or freshly initialised.
    pub fn new(vb: &Vb<B>, config: &LightUpsamplerConfig) -> Result<Self> {
        config.validate()?;
        let root = vb.pp(PREFIX);
        let time_proj = Linear::new(
            &root.pp("time_proj"),
            config.time_embed_dim,
            TIME_CODE,
            true,
        )?;
        let points = config
            .channels
            .iter()
            .enumerate()
            .map(|(n, &c)| {
                let vb = root.pp(format!("feature_upsampler{n}"));
                Ok(LightPoint {
                    gain: vb.param("gain", [c], Init::Zeros)?,
                    shift: vb.param("shift", [c], Init::Zeros)?,
                    kernel: vb.param("kernel", [3, 3], Init::Zeros)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            time_proj,
            points,
            config: config.clone(),
        })
    }

    /// A fresh (seeded) upsampler: untrained, φ_n(h) = nearest(h).
    pub fn init(config: &LightUpsamplerConfig, seed: u64, device: &B::Device) -> Result<Self> {
        Self::new(&Weights::random(seed).root(device), config)
    }

    /// Loads a safetensors file written by [`Self::save_safetensors`]. Strict: a missing, mis-shaped or
    /// unexpected tensor is an error naming it.
    pub fn load_safetensors(
        path: &Path,
        config: &LightUpsamplerConfig,
        device: &B::Device,
    ) -> Result<Self> {
        Self::load_store(TensorStore::open(&[path.to_path_buf()])?, config, device)
    }

    /// Loads the upsampler from an opened store (e.g. bytes embedded with
    /// [`TensorStore::from_static`]), strictly as [`Self::load_safetensors`].
    pub fn load_store(
        store: TensorStore,
        config: &LightUpsamplerConfig,
        device: &B::Device,
    ) -> Result<Self> {
        build_strict(store, device, |vb| Self::new(vb, config))
    }

    /// Every parameter under its checkpoint name (`time_proj.weight` as `[2, D]`).
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = vec![NamedTensor::of(
            format!("{PREFIX}.time_proj.weight"),
            self.time_proj.weight.val().transpose(),
        )];
        if let Some(b) = &self.time_proj.bias {
            out.push(NamedTensor::of(format!("{PREFIX}.time_proj.bias"), b.val()));
        }
        for (n, p) in self.points.iter().enumerate() {
            let name = |k: &str| format!("{PREFIX}.feature_upsampler{n}.{k}");
            out.push(NamedTensor::of(name("gain"), p.gain.val()));
            out.push(NamedTensor::of(name("shift"), p.shift.val()));
            out.push(NamedTensor::of(name("kernel"), p.kernel.val()));
        }
        out
    }

    /// Writes the parameters as float32 safetensors with the config in the metadata.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        save_with_config(path, &self.named_tensors(), FORMAT, &self.config)
    }

    /// The sizes the upsampler was built with.
    pub fn config(&self) -> &LightUpsamplerConfig {
        &self.config
    }
}

impl<B: Backend> FeatureUpsampler<B> for LightUpsampler<B> {
    fn num_points(&self) -> usize {
        self.config.channels.len()
    }

    fn trainable_parameters(&self) -> usize {
        burn::module::Module::num_params(self)
    }

    fn channels(&self, n: usize) -> usize {
        self.config.channels.get(n).copied().unwrap_or(0)
    }

    fn upsample(
        &self,
        n: usize,
        pivot_features: Tensor<B, 4>,
        temb: Tensor<B, 2>,
        size: (usize, usize),
    ) -> selfcascade_core::Result<Tensor<B, 4>> {
        let cfg = &self.config;
        check_call(
            "LightUpsampler",
            &cfg.channels,
            cfg.time_embed_dim,
            n,
            &pivot_features,
            &temb,
            size,
        )?;
        let point = self.points.get(n).ok_or_else(|| {
            selfcascade_core::Error::Model(format!("LightUpsampler: no parameters for point {n}"))
        })?;
        let [b, c, _, _] = pivot_features.dims();
        let (h, w) = size;
        let y = resize_nearest(pivot_features, size);
        let k = point.kernel.val().reshape([1, 1, 3, 3]);
        let dy = kernels::conv2d(y.clone().reshape([b * c, 1, h, w]), k, None, 1, 1, 1);
        let z = y.add(dy.reshape([b, c, h, w]));
        let s = self.time_proj.forward(kernels::silu(temb));
        let gate = |i: usize, v: &Param<Tensor<B, 1>>| {
            s.clone()
                .narrow(1, i, 1)
                .mul(v.val().reshape([1, c]))
                .reshape([b, c, 1, 1])
        };
        let gain = gate(0, &point.gain);
        let shift = gate(1, &point.shift);
        Ok(z.clone().add(z.mul(gain)).add(shift))
    }
}

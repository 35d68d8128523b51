//! The released feature upsamplers: per injection point n, `feature_upsampler{n}` =
//! [ResBlock(C, up = True), ResBlock(C)], latent-diffusion style.

use super::{build_strict, check_call, save_with_config, NamedTensor};
use crate::error::{Error, Result};
use crate::load::{write_pth_state_dict, Init, TensorStore, Vb, Weights};
use crate::nn::{kernels, Conv2d, GroupNorm, Linear};
use crate::unet::{resize_nearest, UNet2DConditionModel};
use burn::module::Module;
use burn::tensor::{backend::Backend, Tensor};
use selfcascade_core::FeatureUpsampler;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Value of the `format` metadata key of safetensors files written by [`ResBlockUpsampler`].
pub const FORMAT: &str = "selfcascade-resblock-upsampler/1";

/// Where the released checkpoint keeps the modules: `unet.feature_upsampler{n}.{0,1}.…`.
const PREFIX: &str = "unet";

/// The sizes of a [`ResBlockUpsampler`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResBlockUpsamplerConfig {
    /// Channels C at each injection point (SD 2.1 and SDXL: `[320, 640, 1280, 1280]`).
    pub channels: Vec<usize>,
    /// Width of the UNet's time embedding (1280 for SD 2.1 and SDXL).
    pub time_embed_dim: usize,
    /// GroupNorm groups (the release: 32, latent diffusion's `normalization(C)`).
    pub groups: usize,
    /// GroupNorm ε (the release: PyTorch's default, 1e-5).
    pub eps: f64,
}

impl ResBlockUpsamplerConfig {
    /// The release's GroupNorm groups.
    pub const RELEASED_GROUPS: usize = 32;
    /// The release's GroupNorm ε.
    pub const RELEASED_EPS: f64 = 1e-5;

    /// The upsamplers for `unet`: its [`UNet2DConditionModel::injection_channels`] and time embedding
    /// width, GroupNorm over the UNet's `norm_num_groups` (32 for SD and SDXL, as the release; the tiny
    /// test UNets use fewer, which 32 would not divide) and ε = 1e-5.
    pub fn for_unet<B: Backend>(unet: &UNet2DConditionModel<B>) -> Self {
        Self {
            channels: unet.injection_channels(),
            time_embed_dim: unet.time_embed_dim(),
            groups: unet.arch().groups,
            eps: Self::RELEASED_EPS,
        }
    }

    /// SD 2.1 base's (and SDXL's) sizes: channels `[320, 640, 1280, 1280]`, time embedding 1280.
    pub fn sd21() -> Self {
        Self {
            channels: vec![320, 640, 1280, 1280],
            time_embed_dim: 1280,
            groups: Self::RELEASED_GROUPS,
            eps: Self::RELEASED_EPS,
        }
    }

    /// Trainable parameters: per point of C channels two ResBlocks of 18·C² + (time_embed_dim + 7)·C
    /// (two 3×3 convolutions 9C² + C, the time projection (D + 1)·C, two GroupNorms 2C each).
    /// SD 2.1 / SDXL: 145,457,280.
    pub fn num_params(&self) -> usize {
        self.channels
            .iter()
            .map(|&c| 2 * (18 * c * c + (self.time_embed_dim + 7) * c))
            .sum()
    }

    fn validate(&self) -> Result<()> {
        if self.channels.is_empty() || self.time_embed_dim == 0 || self.groups == 0 {
            return Err(Error::Input(format!(
                "feature upsampler config {self:?}: needs at least one injection point, a time embedding \
                 width and a group count"
            )));
        }
        if let Some(c) = self
            .channels
            .iter()
            .find(|c| **c == 0 || !c.is_multiple_of(self.groups))
        {
            return Err(Error::Input(format!(
                "feature upsampler config: {c} channels cannot be split into {} GroupNorm groups",
                self.groups
            )));
        }
        Ok(())
    }
}

/// Latent diffusion's `ResBlock(C, emb_channels = D, out_channels = C)` with `use_scale_shift_norm =
/// False` and an identity skip, as the release builds it:
///
/// ```text
/// h = SiLU(GroupNorm(x))                        in_layers.0, in_layers.1
/// if up: h, x = nearest(h), nearest(x)          h_upd, x_upd (between the activation and the conv)
/// h = Conv3×3(h)                                in_layers.2
/// h = h + Linear(SiLU(emb))[:, :, None, None]   emb_layers.1
/// h = Conv3×3(Dropout(SiLU(GroupNorm(h))))      out_layers.0, out_layers.3 (zero-initialised)
/// return x + h
/// ```
///
/// Field names follow the PyTorch keys (`in_layers_0` holds `in_layers.0.weight` / `.bias`). Dropout is
/// the identity at inference.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    /// `in_layers.0`: GroupNorm(groups, C).
    pub in_layers_0: GroupNorm<B>,
    /// `in_layers.2`: 3×3 convolution C → C, padding 1.
    pub in_layers_2: Conv2d<B>,
    /// `emb_layers.1`: Linear(time_embed_dim, C), applied to SiLU(emb).
    pub emb_layers_1: Linear<B>,
    /// `out_layers.0`: GroupNorm(groups, C).
    pub out_layers_0: GroupNorm<B>,
    /// `out_layers.3`: 3×3 convolution C → C, padding 1, zero-initialised.
    pub out_layers_3: Conv2d<B>,
    /// Whether the block upsamples (`up = True`: `h_upd` and `x_upd`).
    pub up: bool,
}

impl<B: Backend> ResBlock<B> {
    /// Loads (or initialises, with a zero output convolution) the block at `vb`.
    pub fn new(
        vb: &Vb<B>,
        channels: usize,
        time_embed_dim: usize,
        groups: usize,
        eps: f64,
        up: bool,
    ) -> Result<Self> {
        let c = channels;
        let out = vb.pp("out_layers").pp(3);
        Ok(Self {
            in_layers_0: GroupNorm::new(&vb.pp("in_layers").pp(0), groups, c, eps)?,
            in_layers_2: Conv2d::new(&vb.pp("in_layers").pp(2), c, c, 3, 1, 1)?,
            emb_layers_1: Linear::new(&vb.pp("emb_layers").pp(1), time_embed_dim, c, true)?,
            out_layers_0: GroupNorm::new(&vb.pp("out_layers").pp(0), groups, c, eps)?,
            out_layers_3: Conv2d {
                weight: out.param("weight", [c, c, 3, 3], Init::Zeros)?,
                bias: Some(out.param("bias", [c], Init::Zeros)?),
                stride: 1,
                padding: 1,
            },
            up,
        })
    }

    /// The block on `x` `[B, C, h, w]` with `emb_act` = SiLU(emb) `[B, D]`. An upsampling block resizes
    /// to `size` by nearest neighbour (PyTorch's `F.interpolate(mode="nearest", size=size)`, which is
    /// the release's `scale_factor=2` whenever `size` = 2·(h, w)); a plain block keeps the size.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        emb_act: Tensor<B, 2>,
        size: (usize, usize),
    ) -> Tensor<B, 4> {
        let h = self.in_layers_0.forward_silu(x.clone());
        let (h, x) = if self.up {
            (resize_nearest(h, size), resize_nearest(x, size))
        } else {
            (h, x)
        };
        let h = self.in_layers_2.forward(h);
        let [b, c] = [emb_act.dims()[0], self.out_layers_3.out_channels()];
        let h = h.add(self.emb_layers_1.forward(emb_act).reshape([b, c, 1, 1]));
        let h = self.out_layers_3.forward(self.out_layers_0.forward_silu(h));
        x.add(h)
    }

    fn named_tensors(&self, prefix: &str, out: &mut Vec<NamedTensor>) {
        let norm = |name: &str, n: &GroupNorm<B>, out: &mut Vec<NamedTensor>| {
            out.push(NamedTensor::of(
                format!("{prefix}.{name}.weight"),
                n.weight.val(),
            ));
            out.push(NamedTensor::of(
                format!("{prefix}.{name}.bias"),
                n.bias.val(),
            ));
        };
        let conv = |name: &str, c: &Conv2d<B>, out: &mut Vec<NamedTensor>| {
            out.push(NamedTensor::of(
                format!("{prefix}.{name}.weight"),
                c.weight.val(),
            ));
            if let Some(b) = &c.bias {
                out.push(NamedTensor::of(format!("{prefix}.{name}.bias"), b.val()));
            }
        };
        norm("in_layers.0", &self.in_layers_0, out);
        conv("in_layers.2", &self.in_layers_2, out);
        // Linear weights are [in, out] in memory and [out, in] on disk.
        out.push(NamedTensor::of(
            format!("{prefix}.emb_layers.1.weight"),
            self.emb_layers_1.weight.val().transpose(),
        ));
        if let Some(b) = &self.emb_layers_1.bias {
            out.push(NamedTensor::of(
                format!("{prefix}.emb_layers.1.bias"),
                b.val(),
            ));
        }
        norm("out_layers.0", &self.out_layers_0, out);
        conv("out_layers.3", &self.out_layers_3, out);
    }
}

/// The released time-aware feature upsamplers (Guo et al.'s code, SDXL): for each injection point n,
/// `feature_upsampler{n}` = [ResBlock(C_n, up = True), ResBlock(C_n)] (see [`ResBlock`]), and
/// φ_n(h, emb) = ResBlock₁(ResBlock₀(h, emb), emb) with `emb` the UNet's time embedding (after
/// `time_embedding`, before any activation; SDXL's includes the `text_time` addition).
///
/// Output size: the release upsamples by exactly ×2 (`F.interpolate(scale_factor=2)`). Here the
/// upsampling block resizes by nearest neighbour to the size of the high-resolution features the UNet
/// asks for, which is the same ×2 whenever the pivot features are exactly half that size; at odd sizes
/// (a 5-row feature map whose pivot has 3 rows) it is PyTorch's `F.interpolate(size=…, mode="nearest")`
/// of the block's input instead of a ×2 that would not fit.
///
/// `feature_upsamplers[n][i]` holds `unet.feature_upsampler{n}.{i}`: the checkpoint names of the
/// release (`upsampler_only.pth`, keys under `state_dict`), also used for safetensors.
#[derive(Module, Debug)]
pub struct ResBlockUpsampler<B: Backend> {
    /// `unet.feature_upsampler{n}`: `[ResBlock(up), ResBlock]` per injection point.
    pub feature_upsamplers: Vec<Vec<ResBlock<B>>>,
    #[module(skip)]
    config: ResBlockUpsamplerConfig,
}

impl<B: Backend> ResBlockUpsampler<B> {
    /// Builds the upsamplers of `config` from `vb` at the checkpoint root (tensors named
    /// `unet.feature_upsampler{n}.{0,1}.…`), loaded or freshly initialised (PyTorch's default
    /// initialisation, output convolutions zero).
    pub fn new(vb: &Vb<B>, config: &ResBlockUpsamplerConfig) -> Result<Self> {
        config.validate()?;
        let root = vb.pp(PREFIX);
        let feature_upsamplers = config
            .channels
            .iter()
            .enumerate()
            .map(|(n, &c)| {
                let vb = root.pp(format!("feature_upsampler{n}"));
                let block = |i: usize| {
                    ResBlock::new(
                        &vb.pp(i),
                        c,
                        config.time_embed_dim,
                        config.groups,
                        config.eps,
                        i == 0,
                    )
                };
                Ok(vec![block(0)?, block(1)?])
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            feature_upsamplers,
            config: config.clone(),
        })
    }

    /// Fresh upsamplers (seeded), as the release initialises them: untrained, φ_n(h) = nearest(h).
    pub fn init(config: &ResBlockUpsamplerConfig, seed: u64, device: &B::Device) -> Result<Self> {
        Self::new(&Weights::random(seed).root(device), config)
    }

    /// Loads the release's PyTorch checkpoint (`upsampler_only.pth`: a dictionary whose `state_dict`
    /// holds `unet.feature_upsampler{n}.{0,1}.{in_layers.0, in_layers.2, emb_layers.1, out_layers.0,
    /// out_layers.3}.{weight, bias}`). Strict: a missing, mis-shaped (e.g. sized for another UNet) or
    /// unexpected tensor is an error naming it.
    pub fn load_pth(
        path: &Path,
        config: &ResBlockUpsamplerConfig,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_store(
            TensorStore::open_pth(path, Some("state_dict"))?,
            config,
            device,
        )
    }

    /// Loads a safetensors file with the same tensor names as [`Self::load_pth`] (strict likewise).
    pub fn load_safetensors(
        path: &Path,
        config: &ResBlockUpsamplerConfig,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_store(TensorStore::open(&[path.to_path_buf()])?, config, device)
    }

    fn from_store(
        store: TensorStore,
        config: &ResBlockUpsamplerConfig,
        device: &B::Device,
    ) -> Result<Self> {
        build_strict(store, device, |vb| Self::new(vb, config))
    }

    /// Every parameter under its checkpoint name, in PyTorch's layout.
    pub fn named_tensors(&self) -> Vec<NamedTensor> {
        let mut out = Vec::new();
        for (n, blocks) in self.feature_upsamplers.iter().enumerate() {
            for (i, block) in blocks.iter().enumerate() {
                block.named_tensors(&format!("{PREFIX}.feature_upsampler{n}.{i}"), &mut out);
            }
        }
        out
    }

    /// Writes the parameters as float32 safetensors under the checkpoint names (readable by
    /// [`Self::load_safetensors`]), with the config in the metadata.
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        save_with_config(path, &self.named_tensors(), FORMAT, &self.config)
    }

    /// Writes the parameters as a PyTorch checkpoint in the release's `upsampler_only.pth` layout:
    /// `torch.load(path, weights_only=True)` gives `{"state_dict": OrderedDict(...)}` with every
    /// parameter as a contiguous float32 tensor under its checkpoint name and PyTorch shape (the
    /// authors' code and [`Self::load_pth`] read it). Written atomically; the config is not stored
    /// (the release's file has none), so loading needs it again.
    pub fn save_pth(&self, path: &Path) -> Result<()> {
        write_pth_state_dict(path, &self.named_tensors())
    }

    /// The sizes the upsamplers were built with.
    pub fn config(&self) -> &ResBlockUpsamplerConfig {
        &self.config
    }
}

impl<B: Backend> FeatureUpsampler<B> for ResBlockUpsampler<B> {
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
            "ResBlockUpsampler",
            &cfg.channels,
            cfg.time_embed_dim,
            n,
            &pivot_features,
            &temb,
            size,
        )?;
        let blocks = self.feature_upsamplers.get(n).ok_or_else(|| {
            selfcascade_core::Error::Model(format!("ResBlockUpsampler: no blocks for point {n}"))
        })?;
        let emb_act = kernels::silu(temb);
        let mut x = pivot_features;
        for block in blocks {
            x = block.forward(x, emb_act.clone(), size);
        }
        Ok(x)
    }
}

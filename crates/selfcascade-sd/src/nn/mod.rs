//! Layers shared by every model, with PyTorch parameter names and layouts on disk.

#[cfg(feature = "flex")]
pub mod cpu;
pub mod kernels;

use crate::error::{Error, Result};
use crate::load::{Init, Vb};
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{backend::Backend, FloatDType, Int, Tensor};

/// `module` with every float parameter cast to `dtype`, e.g. a model loaded in float32 run in f16, or
/// a VAE kept in float32 on a half backend. Computation follows the parameters' dtype; the inputs
/// must be cast to match.
pub fn cast_params<B: Backend, M: Module<B>>(module: M, dtype: FloatDType) -> M {
    struct Cast(FloatDType);
    impl<B: Backend> ModuleMapper<B> for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, tensor, mapper) = param.consume();
            Param::from_mapped_value(id, tensor.cast(self.0), mapper)
        }
    }
    module.map(&mut Cast(dtype))
}

/// `torch.nn.Conv2d` (square kernel, symmetric padding).
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    /// `[out, in, k, k]`.
    pub weight: Param<Tensor<B, 4>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
}

impl<B: Backend> Conv2d<B> {
    /// Loads (or initialises) `weight` and `bias` under `vb`.
    pub fn new(
        vb: &Vb<B>,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let bound = 1.0 / ((in_channels * kernel * kernel) as f64).sqrt();
        Ok(Self {
            weight: vb.param(
                "weight",
                [out_channels, in_channels, kernel, kernel],
                Init::Uniform(bound),
            )?,
            bias: Some(vb.param("bias", [out_channels], Init::Uniform(bound))?),
            stride,
            padding,
        })
    }

    /// Kernel size.
    pub fn kernel_size(&self) -> usize {
        self.weight.dims()[2]
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The convolution.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_dilated(x, 1)
    }

    /// The convolution with dilation `d` (padding scaled by `d`, so the output size is unchanged):
    /// ScaleCrafter's re-dilation.
    pub fn forward_dilated(&self, x: Tensor<B, 4>, dilation: usize) -> Tensor<B, 4> {
        kernels::conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            self.stride,
            self.padding * dilation,
            dilation,
        )
    }
}

/// `torch.nn.Linear`. The weight is stored `[in, out]` in memory (burn's layout) and `[out, in]` on disk.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[in, out]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// A low-rank adapter added to the output (LoRA; `None` for every loaded model).
    pub lora: Option<LoraAdapter<B>>,
}

/// LoRA (Hu et al. 2021): `x·A·B · (alpha / rank)` added to a linear layer's output, with A `[in, r]`
/// random and B `[r, out]` zero, so a fresh adapter changes nothing.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// A, `[in, r]` (`lora_down`).
    pub down: Param<Tensor<B, 2>>,
    /// B, `[r, out]` (`lora_up`), zero-initialised.
    pub up: Param<Tensor<B, 2>>,
    /// alpha / rank.
    pub scale: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// The low-rank update x·A·B·scale.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = burn::tensor::module::linear(x, self.down.val(), None);
        burn::tensor::module::linear(h, self.up.val(), None).mul_scalar(self.scale)
    }

    /// Number of trainable parameters (r·(in + out)).
    pub fn num_params(&self) -> usize {
        let [i, r] = self.down.dims();
        let [_, o] = self.up.dims();
        r * (i + o)
    }
}

impl<B: Backend> Linear<B> {
    /// Loads (or initialises) `weight` `[out, in]` (transposed on load) and, when `bias`, `bias`.
    pub fn new(vb: &Vb<B>, in_features: usize, out_features: usize, bias: bool) -> Result<Self> {
        let bound = 1.0 / (in_features as f64).sqrt();
        let w = vb.tensor("weight", [out_features, in_features], Init::Uniform(bound))?;
        Ok(Self {
            weight: Param::from_tensor(w.transpose()),
            bias: if bias {
                Some(vb.param("bias", [out_features], Init::Uniform(bound))?)
            } else {
                None
            },
            lora: None,
        })
    }

    /// This layer with a fresh LoRA adapter of `rank` (A: PyTorch's Kaiming-uniform bound 1/sqrt(in)
    /// from `seed`, B: zero; scale alpha / rank). Replaces an existing adapter. A rank of 0 or a
    /// non-finite alpha is an error.
    pub fn with_lora(self, rank: usize, alpha: f64, seed: u64) -> Result<Self> {
        if rank == 0 || !alpha.is_finite() {
            return Err(Error::Input(format!(
                "LoRA rank {rank}, alpha {alpha}: the rank must be at least 1 and alpha finite"
            )));
        }
        let device = self.weight.device();
        let [inp, out] = self.weight.dims();
        let bound = 1.0 / (inp as f64).sqrt();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
        let a: Vec<f32> = (0..inp * rank)
            .map(|_| rand::Rng::random_range(&mut rng, -bound..bound) as f32)
            .collect();
        let down = Tensor::from_data(burn::tensor::TensorData::new(a, [inp, rank]), &device);
        Ok(Self {
            lora: Some(LoraAdapter {
                down: Param::from_tensor(down),
                up: Param::from_tensor(Tensor::zeros([rank, out], &device)),
                scale: alpha / rank as f64,
            }),
            ..self
        })
    }

    /// This layer with its adapter folded into the weight (W + A·B·scale) and removed.
    pub fn merge_lora(self) -> Self {
        match self.lora {
            None => self,
            Some(l) => {
                let delta = l.down.val().matmul(l.up.val()).mul_scalar(l.scale);
                let id = self.weight.id;
                Self {
                    weight: Param::initialized(id, self.weight.val().add(delta)),
                    bias: self.bias,
                    lora: None,
                }
            }
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// x·Wᵀ + b over the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        match &self.lora {
            None => kernels::linear(x, self.weight.val(), bias),
            Some(l) => kernels::linear(x.clone(), self.weight.val(), bias).add(l.forward(x)),
        }
    }
}

/// `torch.nn.GroupNorm` (affine).
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// γ, `[C]`.
    pub weight: Param<Tensor<B, 1>>,
    /// β, `[C]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Number of groups.
    pub num_groups: usize,
    /// ε.
    pub eps: f64,
}

impl<B: Backend> GroupNorm<B> {
    /// Loads `weight`/`bias` of `channels`; errors if `channels` is not divisible by `num_groups`.
    pub fn new(vb: &Vb<B>, num_groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if num_groups == 0 || !channels.is_multiple_of(num_groups) {
            return Err(Error::Model(format!(
                "{}: {channels} channels cannot be split into {num_groups} groups (norm_num_groups must divide every channel count)",
                vb.path("")
            )));
        }
        Ok(Self {
            weight: vb.param("weight", [channels], Init::Ones)?,
            bias: vb.param("bias", [channels], Init::Zeros)?,
            num_groups,
            eps,
        })
    }

    /// GroupNorm(x).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        kernels::group_norm(
            x,
            self.weight.val(),
            self.bias.val(),
            self.num_groups,
            self.eps,
            false,
        )
    }

    /// SiLU(GroupNorm(x)), fused where a kernel allows.
    pub fn forward_silu<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        kernels::group_norm(
            x,
            self.weight.val(),
            self.bias.val(),
            self.num_groups,
            self.eps,
            true,
        )
    }
}

/// `torch.nn.LayerNorm` over the last dimension.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// γ.
    pub weight: Param<Tensor<B, 1>>,
    /// β.
    pub bias: Param<Tensor<B, 1>>,
    /// ε.
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    /// Loads `weight`/`bias` of `dim`.
    pub fn new(vb: &Vb<B>, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.param("weight", [dim], Init::Ones)?,
            bias: vb.param("bias", [dim], Init::Zeros)?,
            eps,
        })
    }

    /// LayerNorm(x).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        kernels::layer_norm(x, self.weight.val(), self.bias.val(), self.eps)
    }
}

/// `torch.nn.Embedding`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    /// `[num, dim]`.
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    /// Loads `weight` `[num, dim]`.
    pub fn new(vb: &Vb<B>, num: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: vb.param("weight", [num, dim], Init::Normal(0.02))?,
        })
    }

    /// Rows of the table for `ids` `[B, N]` → `[B, N, dim]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        burn::tensor::module::embedding(self.weight.val(), ids)
    }
}

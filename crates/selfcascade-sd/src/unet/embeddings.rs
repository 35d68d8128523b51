//! Timestep embeddings: diffusers' `get_timestep_embedding` and `TimestepEmbedding`.

use crate::error::{Error, Result};
use crate::load::Vb;
use crate::nn::{kernels, Linear};
use burn::module::Module;
use burn::tensor::{backend::Backend, DType, Tensor, TensorData};

/// The frequencies `exp(−ln(max_period)·i / (half − shift))`, `i < half`, computed in float32 exactly as
/// diffusers does (float32 arange times the float32-rounded constant, then divided, then `exp`).
fn frequencies(half: usize, shift: f64) -> Vec<f32> {
    let log_period = -(10000f64.ln()) as f32;
    let denom = (half as f64 - shift) as f32;
    (0..half)
        .map(|i| ((log_period * i as f32) / denom).exp())
        .collect()
}

/// diffusers' `get_timestep_embedding` (max_period 10000, scale 1) for `t` `[N]` → `[N, dim]`:
/// `[sin(t·f), cos(t·f)]`, or `[cos, sin]` with `flip_sin_to_cos`, zero-padded when `dim` is odd.
/// Computed in float32 whatever `t`'s dtype and returned in float32, as diffusers does (in f16,
/// t·f near 999 has a spacing of 0.5 and its sine is noise); give `t` in float32 for fractional steps.
pub fn timestep_embedding<B: Backend>(
    t: Tensor<B, 1>,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Tensor<B, 2> {
    let n = t.dims()[0];
    let half = dim / 2;
    let device = t.device();
    let freqs = Tensor::<B, 1>::from_data(
        TensorData::new(frequencies(half, freq_shift), [half]),
        (&device, DType::F32),
    );
    let args = t
        .cast(DType::F32)
        .reshape([n, 1])
        .mul(freqs.reshape([1, half]));
    let (sin, cos) = (args.clone().sin(), args.cos());
    let mut parts = if flip_sin_to_cos {
        vec![cos, sin]
    } else {
        vec![sin, cos]
    };
    if dim % 2 == 1 {
        parts.push(Tensor::zeros([n, 1], (&device, DType::F32)));
    }
    Tensor::cat(parts, 1)
}

/// `timesteps` as a float32 tensor `[batch]`: one value for every row, or one per row. Errors on an
/// empty batch, a count that is neither, or a non-finite timestep.
pub(crate) fn timestep_tensor<B: Backend>(
    batch: usize,
    timesteps: &[f64],
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    if batch == 0 {
        return Err(Error::Input("empty batch".into()));
    }
    let t: Vec<f32> = match timesteps.len() {
        1 => vec![timesteps[0] as f32; batch],
        l if l == batch => timesteps.iter().map(|t| *t as f32).collect(),
        l => {
            return Err(Error::Input(format!(
                "{l} timesteps for a batch of {batch}: give one timestep, or one per row"
            )))
        }
    };
    if let Some(bad) = timesteps.iter().find(|t| !t.is_finite()) {
        return Err(Error::Input(format!("timestep {bad} is not finite")));
    }
    Ok(Tensor::from_data(
        TensorData::new(t, [batch]),
        (device, DType::F32),
    ))
}

/// diffusers' `TimestepEmbedding`: `linear_2(silu(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    /// `linear_1`.
    pub linear_1: Linear<B>,
    /// `linear_2`.
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    /// Loads `linear_1` (`in_dim → dim`) and `linear_2` (`dim → dim`) under `vb`.
    pub fn new(vb: &Vb<B>, in_dim: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(&vb.pp("linear_1"), in_dim, dim, true)?,
            linear_2: Linear::new(&vb.pp("linear_2"), dim, dim, true)?,
        })
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.linear_1.weight.dims()[0]
    }

    /// The embedding of `x` `[B, in_dim]` (cast to the weights' dtype first: the sinusoidal input is
    /// float32).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = x.cast(self.linear_1.weight.val().dtype());
        self.linear_2
            .forward(kernels::silu(self.linear_1.forward(x)))
    }
}

//! The hot paths of every model, behind narrow functions: convolution, normalisation (+ activation),
//! attention and activations. Model code calls only these, so a faster kernel for one backend can
//! replace an implementation here without touching the models.
//!
//! Half precision (f16/bf16 tensors, e.g. `Cuda<f16>` or a burn-flex device whose default float type is
//! f16): normalisation and attention run in float32 and cast their result back, as PyTorch does for
//! half models (it accumulates norm statistics and softmax in float32). In the half type the sum of
//! squares of a normalisation overflows (f16 ends at 65,504) on activations a real UNet produces, and the
//! generation stops with non-finite latents.

use burn::tensor::{
    activation,
    backend::Backend,
    module::{attention as fused_attention, conv2d as burn_conv2d},
    ops::{AttentionModuleOptions, ConvOptions},
    DType, Tensor,
};

/// Whether `dtype` is a half type (f16 or bf16).
pub fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::BF16)
}

/// `x` as float32.
fn to_f32<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.cast(DType::F32)
}

/// 2-D convolution, PyTorch semantics (`weight` `[out, in, k, k]`, symmetric zero padding).
pub fn conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if let Some(y) = super::cpu::conv2d(&x, &weight, bias.as_ref(), stride, padding, dilation) {
        return y;
    }
    burn_conv2d(
        x,
        weight,
        bias,
        ConvOptions::new(
            [stride, stride],
            [padding, padding],
            [dilation, dilation],
            1,
        ),
    )
}

/// The temporal convolution of the video UNet: a `Conv3d` (3, 1, 1) with padding (1, 0, 0) on `x`
/// `[B, C, T, N]`, `weight` `[O, C, 3, 1]` (burn's `conv2d` with a 3×1 kernel; an owned kernel on the CPU).
pub fn temporal_conv<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 4> {
    #[cfg(feature = "flex")]
    if let Some(y) = super::cpu::temporal_conv(&x, &weight, bias.as_ref()) {
        return y;
    }
    burn_conv2d(x, weight, bias, ConvOptions::new([1, 1], [1, 0], [1, 1], 1))
}

/// `x·W + b` over the last dimension, `weight` `[in, out]` (any layout).
pub fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if let Some(y) = super::cpu::linear(&x, &weight, bias.as_ref()) {
        return y;
    }
    burn::tensor::module::linear(x, weight, bias)
}

/// Group normalisation over dims 1.. of `x` `[B, C, ...]` with `groups` groups, then the per-channel
/// affine map, then SiLU when `silu` is set (the fused "norm + act" of every ResNet block).
pub fn group_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    if is_half(dtype) {
        return group_norm(to_f32(x), to_f32(gamma), to_f32(beta), groups, eps, silu).cast(dtype);
    }
    #[cfg(feature = "flex")]
    if let Some(y) = super::cpu::group_norm(&x, &gamma, &beta, groups, eps, silu) {
        return y;
    }
    let dims = x.dims();
    let (b, c) = (dims[0], dims[1]);
    let rest: usize = dims[2..].iter().product();
    let g = x.reshape([b, groups, (c / groups) * rest]);
    let mean = g.clone().mean_dim(2);
    let centered = g.sub(mean);
    let var = centered.clone().square().mean_dim(2);
    let normed = centered
        .div(var.add_scalar(eps).sqrt())
        .reshape([b, c, rest]);
    // The per-channel affine is applied with gamma/beta materialised per batch row ([b, c, 1]): a
    // [1, c, 1] operand broadcast over b > 1 falls off burn-flex's SIMD broadcast paths onto a scalar
    // strided loop (about 10× slower in training, where this op dominated the profile).
    let affine = |p: Tensor<B, 1>| {
        let p = p.reshape([1, c, 1]);
        if b > 1 {
            p.repeat_dim(0, b)
        } else {
            p
        }
    };
    let y = normed.mul(affine(gamma)).add(affine(beta));
    let y = if silu { activation::silu(y) } else { y };
    y.reshape(dims)
}

/// Layer normalisation over the last dimension.
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    if is_half(dtype) {
        return layer_norm(to_f32(x), to_f32(gamma), to_f32(beta), eps).cast(dtype);
    }
    let mean = x.clone().mean_dim(D - 1);
    let centered = x.sub(mean);
    let var = centered.clone().square().mean_dim(D - 1);
    let normed = centered.div(var.add_scalar(eps).sqrt());
    let n = gamma.dims()[0];
    let mut shape = [1usize; D];
    shape[D - 1] = n;
    normed.mul(gamma.reshape(shape)).add(beta.reshape(shape))
}

/// Upper bound on attention scores held at once (per call), in elements.
pub const ATTENTION_SCORE_BUDGET: usize = 1 << 26;

/// softmax(q·kᵀ·scale)·v for `q` `[B, H, N, d]`, `k`/`v` `[B, H, M, d]`. On burn-flex (float32) the owned,
/// threaded kernel of [`super::cpu::attention`] runs; elsewhere burn's fused op, with queries processed in
/// chunks so no more than [`ATTENTION_SCORE_BUDGET`] scores exist at once, whatever N.
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    scale: f64,
    causal: bool,
) -> Tensor<B, 4> {
    let dtype = q.dtype();
    if is_half(dtype) {
        return attention(to_f32(q), to_f32(k), to_f32(v), scale, causal).cast(dtype);
    }
    #[cfg(feature = "flex")]
    if let Some(out) = super::cpu::attention(&q, &k, &v, scale, causal) {
        return out;
    }
    let [b, h, n, _] = q.dims();
    let m = k.dims()[2];
    let options = AttentionModuleOptions {
        scale: Some(scale),
        softcap: None,
        is_causal: causal,
    };
    let per_query = (b * h * m).max(1);
    let chunk = (ATTENTION_SCORE_BUDGET / per_query).max(1);
    if causal || n <= chunk {
        return fused_attention(q, k, v, None, None, options);
    }
    let outs: Vec<Tensor<B, 4>> = (0..n)
        .step_by(chunk)
        .map(|s| {
            let len = chunk.min(n - s);
            fused_attention(
                q.clone().narrow(2, s, len),
                k.clone(),
                v.clone(),
                None,
                None,
                options,
            )
        })
        .collect();
    Tensor::cat(outs, 2)
}

/// SiLU, x·σ(x).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::silu(x)
}

/// GELU with the exact erf form (PyTorch's default).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::gelu(x)
}

/// GEGLU's activation: `a · gelu(g)` for the halves `[a, g]` of the last dimension of `y`.
pub fn geglu<B: Backend, const D: usize>(y: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    if let Some(out) = super::cpu::geglu(&y) {
        return out;
    }
    let half = y.dims()[D - 1] / 2;
    let a = y.clone().narrow(D - 1, 0, half);
    a.mul(gelu(y.narrow(D - 1, half, half)))
}

/// OpenAI CLIP's quick GELU, x·σ(1.702·x).
pub fn quick_gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().mul(activation::sigmoid(x.mul_scalar(1.702)))
}

/// Nearest-neighbour ×2 upsampling of `x` `[B, C, H, W]` → `[B, C, 2H, 2W]`, equal to PyTorch's
/// `F.interpolate(x, scale_factor=2.0, mode="nearest")` (every value is copied, so the result is exact).
pub fn upsample_nearest2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    x.reshape([b, c, h, 1, w, 1])
        .expand([b, c, h, 2, w, 2])
        .reshape([b, c, 2 * h, 2 * w])
}

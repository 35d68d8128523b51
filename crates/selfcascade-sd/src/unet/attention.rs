//! diffusers' `Transformer2DModel` (continuous input), `BasicTransformerBlock`, `Attention` and the
//! GEGLU feed-forward, as SD 1.x / 2.x / SDXL use them.

use super::hooks::UNetHooks;
use crate::error::{Error, Result};
use crate::load::{Init, Vb};
use crate::nn::{kernels, GroupNorm, LayerNorm, Linear};
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

/// Multi-head attention (`Attention` with `AttnProcessor2_0`): `to_q`/`to_k`/`to_v` without bias,
/// `to_out.0` with bias (`to_out.1` is dropout, kept as its probability).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// `to_q`.
    pub to_q: Linear<B>,
    /// `to_k`.
    pub to_k: Linear<B>,
    /// `to_v`.
    pub to_v: Linear<B>,
    /// `to_out.0` (linear) and `to_out.1` (dropout probability, not applied).
    pub to_out: (Linear<B>, f64),
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> Attention<B> {
    /// Loads the layer at `vb`: queries from `query_dim`, keys/values from `context_dim`.
    pub fn new(
        vb: &Vb<B>,
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: Linear::new(&vb.pp("to_q"), query_dim, inner, false)?,
            to_k: Linear::new(&vb.pp("to_k"), context_dim, inner, false)?,
            to_v: Linear::new(&vb.pp("to_v"), context_dim, inner, false)?,
            to_out: (
                Linear::new(&vb.pp("to_out").pp(0), inner, query_dim, true)?,
                0.0,
            ),
            heads,
        })
    }

    /// Attention of `x` `[B, N, C]` over `context` `[B, M, D]` (itself when `None`), with the logit
    /// scale `scale_factor / sqrt(d_head)`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Option<&Tensor<B, 3>>,
        scale_factor: f64,
    ) -> Tensor<B, 3> {
        let [b, n, _] = x.dims();
        let q = self.to_q.forward(x.clone());
        let (k, v) = match context {
            Some(c) => (self.to_k.forward(c.clone()), self.to_v.forward(c.clone())),
            None => (self.to_k.forward(x.clone()), self.to_v.forward(x)),
        };
        let inner = q.dims()[2];
        let m = k.dims()[1];
        let h = self.heads;
        let d = inner / h;
        let split = |t: Tensor<B, 3>, len: usize| t.reshape([b, len, h, d]).swap_dims(1, 2);
        let out = kernels::attention(
            split(q, n),
            split(k, m),
            split(v, m),
            scale_factor / (d as f64).sqrt(),
            false,
        );
        let out = out.swap_dims(1, 2).reshape([b, n, inner]);
        self.to_out.0.forward(out)
    }
}

/// GEGLU: `proj` to twice the width, then `a · gelu(g)` for the halves `[a, g]`.
#[derive(Module, Debug)]
pub struct GeGlu<B: Backend> {
    /// `proj`.
    pub proj: Linear<B>,
}

impl<B: Backend> GeGlu<B> {
    /// GEGLU(x) over the last dimension.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        kernels::geglu(self.proj.forward(x))
    }
}

/// Elements of the GEGLU intermediate [`FeedForward::forward`] holds at once (128 MB in f32).
const FF_CHUNK_ELEMENTS: usize = 1 << 25;

/// `FeedForward` with GEGLU: `net.0` (GEGLU), `net.1` (dropout probability), `net.2` (linear).
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    /// `net`.
    pub net: (GeGlu<B>, f64, Linear<B>),
}

impl<B: Backend> FeedForward<B> {
    /// Loads `net.0.proj` (`dim → 2·4·dim`) and `net.2` (`4·dim → dim`).
    pub fn new(vb: &Vb<B>, dim: usize) -> Result<Self> {
        let inner = 4 * dim;
        let net = vb.pp("net");
        Ok(Self {
            net: (
                GeGlu {
                    proj: Linear::new(&net.pp(0).pp("proj"), dim, 2 * inner, true)?,
                },
                0.0,
                Linear::new(&net.pp(2), inner, dim, true)?,
            ),
        })
    }

    /// The feed-forward of `x` `[B, N, dim]`. Every token is independent, so long sequences go
    /// through in chunks of tokens: the GEGLU intermediate (`B × N × 8·dim`) is otherwise the largest
    /// activation of a UNet at high resolution (1.3 GB at 2048² with CFG for SD 2.1).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, _, dim] = x.dims();
        let rows = (FF_CHUNK_ELEMENTS / (b * 8 * dim).max(1)).max(1);
        self.forward_in_chunks(x, rows)
    }

    /// The feed-forward of `x` `[B, N, dim]`, `rows` tokens at a time.
    fn forward_in_chunks(&self, x: Tensor<B, 3>, rows: usize) -> Tensor<B, 3> {
        let n = x.dims()[1];
        let ff = |t: Tensor<B, 3>| self.net.2.forward(self.net.0.forward(t));
        if n <= rows {
            return ff(x);
        }
        let chunks = (0..n)
            .step_by(rows)
            .map(|start| ff(x.clone().narrow(1, start, rows.min(n - start))))
            .collect();
        Tensor::cat(chunks, 1)
    }
}

/// `BasicTransformerBlock` (layer norms, self-attention, cross-attention, GEGLU feed-forward).
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    /// `norm1`.
    pub norm1: LayerNorm<B>,
    /// `attn1` (self-attention).
    pub attn1: Attention<B>,
    /// `norm2`.
    pub norm2: LayerNorm<B>,
    /// `attn2`: cross-attention to the text, or a second self-attention (`double_self_attention`, the
    /// video UNet's temporal blocks).
    pub attn2: Attention<B>,
    /// `norm3`.
    pub norm3: LayerNorm<B>,
    /// `ff`.
    pub ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    /// Loads the block at `vb`; `attn2` attends to a context of width `context_dim`, or to the block's
    /// own tokens when `None`.
    pub fn new(
        vb: &Vb<B>,
        dim: usize,
        heads: usize,
        head_dim: usize,
        context_dim: Option<usize>,
    ) -> Result<Self> {
        let context_dim = context_dim.unwrap_or(dim);
        Ok(Self {
            norm1: LayerNorm::new(&vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::new(&vb.pp("attn1"), dim, dim, heads, head_dim)?,
            norm2: LayerNorm::new(&vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::new(&vb.pp("attn2"), dim, context_dim, heads, head_dim)?,
            norm3: LayerNorm::new(&vb.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::new(&vb.pp("ff"), dim)?,
        })
    }

    /// The block on tokens `x` `[B, N, dim]` with text `context` `[B, M, D]` (`None`: `attn2` is a
    /// second self-attention); `self_scale` multiplies the self-attention logit scale.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        context: Option<&Tensor<B, 3>>,
        self_scale: f64,
    ) -> Tensor<B, 3> {
        let x = self
            .attn1
            .forward(self.norm1.forward(x.clone()), None, self_scale)
            .add(x);
        let x = self
            .attn2
            .forward(self.norm2.forward(x.clone()), context, 1.0)
            .add(x);
        self.ff.forward(self.norm3.forward(x.clone())).add(x)
    }
}

/// A linear layer holding a 1×1 convolution's weights (`[out, in, 1, 1]` on disk): on tokens
/// `[B, HW, C]` it computes exactly what the convolution computes on `[B, C, H, W]`.
fn linear_from_conv1x1<B: Backend>(vb: &Vb<B>, in_dim: usize, out_dim: usize) -> Result<Linear<B>> {
    let bound = 1.0 / (in_dim as f64).sqrt();
    let w = vb.tensor("weight", [out_dim, in_dim, 1, 1], Init::Uniform(bound))?;
    Ok(Linear {
        weight: Param::from_tensor(w.reshape([out_dim, in_dim]).transpose()),
        bias: Some(vb.param("bias", [out_dim], Init::Uniform(bound))?),
        lora: None,
    })
}

/// `Transformer2DModel` on continuous input: GroupNorm (ε 1e-6), `proj_in`, transformer blocks,
/// `proj_out`, plus the input. `proj_in`/`proj_out` are linear layers (`use_linear_projection`) or
/// 1×1 convolutions, both held as [`Linear`] applied to the tokens.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    /// `norm`.
    pub norm: GroupNorm<B>,
    /// `proj_in`.
    pub proj_in: Linear<B>,
    /// `transformer_blocks`.
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    /// `proj_out`.
    pub proj_out: Linear<B>,
}

impl<B: Backend> Transformer2DModel<B> {
    /// Loads the model at `vb` (e.g. `down_blocks.0.attentions.1`) over `channels` channels with
    /// `heads` heads of width `channels / heads`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vb: &Vb<B>,
        channels: usize,
        heads: usize,
        layers: usize,
        context_dim: usize,
        groups: usize,
        linear_projection: bool,
    ) -> Result<Self> {
        if heads == 0 || !channels.is_multiple_of(heads) {
            return Err(Error::Model(format!(
                "{}: {channels} channels cannot be split into {heads} attention heads",
                vb.path("")
            )));
        }
        let head_dim = channels / heads;
        let inner = heads * head_dim;
        let (proj_in, proj_out) = if linear_projection {
            (
                Linear::new(&vb.pp("proj_in"), channels, inner, true)?,
                Linear::new(&vb.pp("proj_out"), inner, channels, true)?,
            )
        } else {
            (
                linear_from_conv1x1(&vb.pp("proj_in"), channels, inner)?,
                linear_from_conv1x1(&vb.pp("proj_out"), inner, channels)?,
            )
        };
        let blocks = vb.pp("transformer_blocks");
        Ok(Self {
            norm: GroupNorm::new(&vb.pp("norm"), groups, channels, 1e-6)?,
            proj_in,
            transformer_blocks: (0..layers)
                .map(|i| {
                    BasicTransformerBlock::new(
                        &blocks.pp(i),
                        inner,
                        heads,
                        head_dim,
                        Some(context_dim),
                    )
                })
                .collect::<Result<_>>()?,
            proj_out,
        })
    }

    /// The model on `x` `[B, C, H, W]` with text `context` `[B, M, D]`.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        context: &Tensor<B, 3>,
        hooks: &UNetHooks<'_, B>,
    ) -> Result<Tensor<B, 4>> {
        let [b, c, h, w] = x.dims();
        let n = h * w;
        let self_scale = hooks.attention_scale(n)?;
        let tokens = self
            .norm
            .forward(x.clone())
            .reshape([b, c, n])
            .swap_dims(1, 2);
        let mut t = self.proj_in.forward(tokens);
        for block in &self.transformer_blocks {
            t = block.forward(t, Some(context), self_scale);
        }
        let out = self
            .proj_out
            .forward(t)
            .swap_dims(1, 2)
            .reshape([b, c, h, w]);
        Ok(out.add(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Weights;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    #[test]
    fn feed_forward_in_chunks_equals_one_pass() {
        type B = Flex;
        let device = Default::default();
        let weights = Weights::random(3);
        let ff = FeedForward::<B>::new(&weights.root(&device), 8).unwrap();
        let x = Tensor::<B, 3>::random([2, 11, 8], Distribution::Normal(0.0, 1.0), &device);
        let whole = ff.forward_in_chunks(x.clone(), 11);
        for rows in [1, 3, 4, 10] {
            let chunked = ff.forward_in_chunks(x.clone(), rows);
            assert_eq!(chunked.dims(), [2, 11, 8]);
            let diff = (chunked - whole.clone()).abs().max().into_scalar();
            assert!(diff < 1e-6, "rows {rows}: max difference {diff}");
        }
    }
}

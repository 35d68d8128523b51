//! LVDM's layers (docs/lvdm.md §2–4), with the original latent-diffusion parameter names: `ResBlock`,
//! `Downsample`, `Upsample`, `SpatialTemporalTransformer` with `BasicTransformerBlockST`, and the temporal
//! attention with relative positions. Activations are kept frames-folded, `[B·T, C, H, W]`; every
//! (1, 3, 3) convolution is a 2-D convolution of each frame, and every GroupNorm takes its statistics over
//! all frames of a video together.

use crate::error::{Error, Result};
use crate::load::{Init, Vb};
use crate::nn::{Conv2d, GroupNorm, LayerNorm, Linear};
use crate::unet::{from_video_layout, resize_nearest, to_video_layout, Attention, FeedForward};
use burn::module::{Module, Param};
use burn::tensor::activation::softmax;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// A `Conv3d` with kernel (1, k, k) (`[out, in, 1, k, k]` on disk) as the per-frame 2-D convolution.
pub(crate) fn conv_1kk<B: Backend>(
    vb: &Vb<B>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d<B>> {
    let bound = 1.0 / ((cin * k * k) as f64).sqrt();
    let w = vb.tensor("weight", [cout, cin, 1, k, k], Init::Uniform(bound))?;
    Ok(Conv2d {
        weight: Param::from_tensor(w.reshape([cout, cin, k, k])),
        bias: Some(vb.param("bias", [cout], Init::Uniform(bound))?),
        stride,
        padding,
    })
}

/// A 1×1×1 `Conv3d` (`[out, in, 1, 1, 1]` on disk) as a linear layer on tokens.
fn linear_111<B: Backend>(vb: &Vb<B>, cin: usize, cout: usize) -> Result<Linear<B>> {
    let bound = 1.0 / (cin as f64).sqrt();
    let w = vb.tensor("weight", [cout, cin, 1, 1, 1], Init::Uniform(bound))?;
    Ok(Linear {
        weight: Param::from_tensor(w.reshape([cout, cin]).transpose()),
        bias: Some(vb.param("bias", [cout], Init::Uniform(bound))?),
        lora: None,
    })
}

/// GroupNorm (+ SiLU) of `x` `[B·T, C, H, W]` with statistics over all `frames` frames of each video.
fn norm_over_frames<B: Backend>(
    norm: &GroupNorm<B>,
    x: Tensor<B, 4>,
    frames: usize,
    silu: bool,
) -> Result<Tensor<B, 4>> {
    let [_, _, h, w] = x.dims();
    let v = to_video_layout(x, frames)?;
    let y = if silu {
        norm.forward_silu(v)
    } else {
        norm.forward(v)
    };
    Ok(from_video_layout(y, h, w))
}

/// `ResBlock` (no scale-shift norm): `in_layers` (GroupNorm, SiLU, conv), + `emb_layers` (SiLU, linear)
/// of the time embedding, `out_layers` (GroupNorm, SiLU, dropout, conv), plus the (1×1×1-projected) input.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    /// `in_layers.0`, `in_layers.2`.
    pub in_layers: (GroupNorm<B>, Conv2d<B>),
    /// `emb_layers.1`.
    pub emb_layers: Linear<B>,
    /// `out_layers.0`, `out_layers.3`.
    pub out_layers: (GroupNorm<B>, Conv2d<B>),
    /// `skip_connection` (1×1×1) when the channels change.
    pub skip_connection: Option<Conv2d<B>>,
}

impl<B: Backend> ResBlock<B> {
    pub(crate) fn new(
        vb: &Vb<B>,
        cin: usize,
        cout: usize,
        temb: usize,
        groups: usize,
    ) -> Result<Self> {
        let (i, o) = (vb.pp("in_layers"), vb.pp("out_layers"));
        Ok(Self {
            in_layers: (
                GroupNorm::new(&i.pp(0), groups, cin, 1e-5)?,
                conv_1kk(&i.pp(2), cin, cout, 3, 1, 1)?,
            ),
            emb_layers: Linear::new(&vb.pp("emb_layers").pp(1), temb, cout, true)?,
            out_layers: (
                GroupNorm::new(&o.pp(0), groups, cout, 1e-5)?,
                conv_1kk(&o.pp(3), cout, cout, 3, 1, 1)?,
            ),
            skip_connection: if cin != cout {
                Some(conv_1kk(&vb.pp("skip_connection"), cin, cout, 1, 1, 0)?)
            } else {
                None
            },
        })
    }

    /// The block on `x` `[B·T, C, H, W]`; `emb_act` is SiLU(time embedding), one row per frame.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        emb_act: &Tensor<B, 2>,
        frames: usize,
    ) -> Result<Tensor<B, 4>> {
        let h = norm_over_frames(&self.in_layers.0, x.clone(), frames, true)?;
        let h = self.in_layers.1.forward(h);
        let [n, c, _, _] = h.dims();
        let e = self
            .emb_layers
            .forward(emb_act.clone())
            .reshape([n, c, 1, 1]);
        let h = norm_over_frames(&self.out_layers.0, h.add(e), frames, true)?;
        let h = self.out_layers.1.forward(h);
        let x = match &self.skip_connection {
            Some(conv) => conv.forward(x),
            None => x,
        };
        Ok(x.add(h))
    }
}

/// `Downsample`: the (1, 3, 3) convolution `op`, stride (1, 2, 2); the frame count is kept.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// `op`.
    pub op: Conv2d<B>,
}

/// `Upsample`: nearest ×2 over height and width, then the (1, 3, 3) convolution `conv`.
#[derive(Module, Debug)]
pub struct Upsample<B: Backend> {
    /// `conv`.
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample<B> {
    pub(crate) fn new(vb: &Vb<B>, ch: usize) -> Result<Self> {
        Ok(Self {
            op: conv_1kk(&vb.pp("op"), ch, ch, 3, 2, 1)?,
        })
    }
}

impl<B: Backend> Upsample<B> {
    pub(crate) fn new(vb: &Vb<B>, ch: usize) -> Result<Self> {
        Ok(Self {
            conv: conv_1kk(&vb.pp("conv"), ch, ch, 3, 1, 1)?,
        })
    }

    /// `[N, C, H, W]` → `[N, C, 2H, 2W]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        self.conv.forward(resize_nearest(x, (2 * h, 2 * w)))
    }
}

/// `RelativePosition`: a table of `2·max_distance + 1` rows of width d_head, row
/// `clamp(j − i, −m, m) + m` for query frame i and key frame j.
#[derive(Module, Debug)]
pub struct RelativePosition<B: Backend> {
    /// `embeddings_table`, `[2m + 1, d]`.
    pub embeddings_table: Param<Tensor<B, 2>>,
}

impl<B: Backend> RelativePosition<B> {
    /// The rows for every (i, j) of `t` frames: `[t, t, d]`.
    fn rows(&self, t: usize) -> Tensor<B, 3> {
        let table = self.embeddings_table.val();
        let [rows, d] = table.dims();
        let m = (rows / 2) as i64;
        let idx: Vec<i64> = (0..t as i64)
            .flat_map(|i| (0..t as i64).map(move |j| (j - i).clamp(-m, m) + m))
            .collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [t * t]), &table.device());
        table.select(0, idx).reshape([t, t, d])
    }
}

/// `TemporalCrossAttention` as LVDM's temporal self-attention: attention across the frames of each pixel
/// with relative positions on keys and values (docs/lvdm.md §4.3):
/// `logits = s·(q_i·k_j + q_i·RK[i, j])`, `o_i = Σ_j A_ij (v_j + RV[i, j])`, s = 1/sqrt(d_head).
#[derive(Module, Debug)]
pub struct TemporalAttention<B: Backend> {
    /// `to_q`.
    pub to_q: Linear<B>,
    /// `to_k`.
    pub to_k: Linear<B>,
    /// `to_v`.
    pub to_v: Linear<B>,
    /// `to_out.0` (and the dropout probability of `to_out.1`).
    pub to_out: (Linear<B>, f64),
    /// `relative_position_k`.
    pub relative_position_k: RelativePosition<B>,
    /// `relative_position_v`.
    pub relative_position_v: RelativePosition<B>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> TemporalAttention<B> {
    pub(crate) fn new(vb: &Vb<B>, dim: usize, heads: usize, max_distance: usize) -> Result<Self> {
        let d = dim / heads;
        let table = |name: &str| -> Result<RelativePosition<B>> {
            let bound = (6.0 / ((2 * max_distance + 1 + d) as f64)).sqrt();
            Ok(RelativePosition {
                embeddings_table: vb.pp(name).param(
                    "embeddings_table",
                    [2 * max_distance + 1, d],
                    Init::Uniform(bound),
                )?,
            })
        };
        Ok(Self {
            to_q: Linear::new(&vb.pp("to_q"), dim, dim, false)?,
            to_k: Linear::new(&vb.pp("to_k"), dim, dim, false)?,
            to_v: Linear::new(&vb.pp("to_v"), dim, dim, false)?,
            to_out: (Linear::new(&vb.pp("to_out").pp(0), dim, dim, true)?, 0.0),
            relative_position_k: table("relative_position_k")?,
            relative_position_v: table("relative_position_v")?,
            heads,
        })
    }

    /// Attention over `x` `[N, T, C]` (N sequences of T frames).
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [n, t, c] = x.dims();
        let h = self.heads;
        let d = c / h;
        let s = 1.0 / (d as f64).sqrt();
        let split = |y: Tensor<B, 3>| y.reshape([n, t, h, d]).swap_dims(1, 2);
        let q = split(self.to_q.forward(x.clone()));
        let k = split(self.to_k.forward(x.clone()));
        let v = split(self.to_v.forward(x));
        let rk = self.relative_position_k.rows(t);
        let rv = self.relative_position_v.rows(t);
        // q·RK[i, j]: per query frame i, [N·h, d] × [d, T].
        let q_by_frame = q.clone().reshape([n * h, t, d]).swap_dims(0, 1);
        let rel = q_by_frame
            .matmul(rk.swap_dims(1, 2))
            .swap_dims(0, 1)
            .reshape([n, h, t, t]);
        let logits = q.matmul(k.swap_dims(2, 3)).add(rel).mul_scalar(s);
        let a = softmax(logits, 3);
        // Σ_j A_ij RV[i, j]: per query frame i, [N·h, T] × [T, d].
        let a_by_frame = a.clone().reshape([n * h, t, t]).swap_dims(0, 1);
        let o_rel = a_by_frame.matmul(rv).swap_dims(0, 1).reshape([n, h, t, d]);
        let o = a.matmul(v).add(o_rel).swap_dims(1, 2).reshape([n, t, c]);
        self.to_out.0.forward(o)
    }
}

/// `BasicTransformerBlockST`: spatial self-attention (`attn1`, `norm1`), temporal attention #1
/// (`attn1_tmp`, `norm4`), cross-attention to the text (`attn2`, `norm2`), temporal attention #2
/// (`attn2_tmp`, `norm5`), GEGLU feed-forward (`ff`, `norm3`), each pre-norm and residual.
#[derive(Module, Debug)]
pub struct BasicTransformerBlockST<B: Backend> {
    /// `attn1`.
    pub attn1: Attention<B>,
    /// `attn1_tmp`.
    pub attn1_tmp: TemporalAttention<B>,
    /// `attn2`.
    pub attn2: Attention<B>,
    /// `attn2_tmp`.
    pub attn2_tmp: TemporalAttention<B>,
    /// `ff`.
    pub ff: FeedForward<B>,
    /// `norm1` … `norm5`.
    pub norms: Vec<LayerNorm<B>>,
}

impl<B: Backend> BasicTransformerBlockST<B> {
    fn new(
        vb: &Vb<B>,
        dim: usize,
        heads: usize,
        context_dim: usize,
        max_distance: usize,
    ) -> Result<Self> {
        let d = dim / heads;
        Ok(Self {
            attn1: Attention::new(&vb.pp("attn1"), dim, dim, heads, d)?,
            attn1_tmp: TemporalAttention::new(&vb.pp("attn1_tmp"), dim, heads, max_distance)?,
            attn2: Attention::new(&vb.pp("attn2"), dim, context_dim, heads, d)?,
            attn2_tmp: TemporalAttention::new(&vb.pp("attn2_tmp"), dim, heads, max_distance)?,
            ff: FeedForward::new(&vb.pp("ff"), dim)?,
            norms: (1..=5)
                .map(|i| LayerNorm::new(&vb.pp(format!("norm{i}")), dim, 1e-5))
                .collect::<Result<_>>()?,
        })
    }

    /// The block on spatial tokens `x` `[B·T, H·W, C]` with the text `context` repeated per frame.
    fn forward(&self, x: Tensor<B, 3>, context: &Tensor<B, 3>, frames: usize) -> Tensor<B, 3> {
        let [bt, hw, c] = x.dims();
        let b = bt / frames;
        // [B·T, HW, C] ↔ [B·HW, T, C]
        let temporal = |y: Tensor<B, 3>| {
            y.reshape([b, frames, hw, c])
                .swap_dims(1, 2)
                .reshape([b * hw, frames, c])
        };
        let spatial = |y: Tensor<B, 3>| {
            y.reshape([b, hw, frames, c])
                .swap_dims(1, 2)
                .reshape([bt, hw, c])
        };
        let n = &self.norms;
        let x = self
            .attn1
            .forward(n[0].forward(x.clone()), None, 1.0)
            .add(x);
        let x = temporal(x);
        let x = self.attn1_tmp.forward(n[3].forward(x.clone())).add(x);
        let x = spatial(x);
        let x = self
            .attn2
            .forward(n[1].forward(x.clone()), Some(context), 1.0)
            .add(x);
        let x = temporal(x);
        let x = self.attn2_tmp.forward(n[4].forward(x.clone())).add(x);
        let x = self.ff.forward(n[2].forward(x.clone())).add(x);
        spatial(x)
    }
}

/// `SpatialTemporalTransformer`: GroupNorm (ε 1e-6, over all frames), `proj_in` (1×1×1), one
/// [`BasicTransformerBlockST`], `proj_out` (1×1×1), plus the input.
#[derive(Module, Debug)]
pub struct SpatialTemporalTransformer<B: Backend> {
    /// `norm`.
    pub norm: GroupNorm<B>,
    /// `proj_in`.
    pub proj_in: Linear<B>,
    /// `transformer_blocks`.
    pub transformer_blocks: Vec<BasicTransformerBlockST<B>>,
    /// `proj_out`.
    pub proj_out: Linear<B>,
}

impl<B: Backend> SpatialTemporalTransformer<B> {
    pub(crate) fn new(
        vb: &Vb<B>,
        ch: usize,
        heads: usize,
        context_dim: usize,
        max_distance: usize,
        groups: usize,
    ) -> Result<Self> {
        if heads == 0 || !ch.is_multiple_of(heads) {
            return Err(Error::Model(format!(
                "{}: {ch} channels cannot be split into {heads} heads",
                vb.path("")
            )));
        }
        Ok(Self {
            norm: GroupNorm::new(&vb.pp("norm"), groups, ch, 1e-6)?,
            proj_in: linear_111(&vb.pp("proj_in"), ch, ch)?,
            transformer_blocks: vec![BasicTransformerBlockST::new(
                &vb.pp("transformer_blocks").pp(0),
                ch,
                heads,
                context_dim,
                max_distance,
            )?],
            proj_out: linear_111(&vb.pp("proj_out"), ch, ch)?,
        })
    }

    /// The transformer on `x` `[B·T, C, H, W]` with `context` repeated per frame `[B·T, M, D]`.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        context: &Tensor<B, 3>,
        frames: usize,
    ) -> Result<Tensor<B, 4>> {
        let [bt, c, h, w] = x.dims();
        let y = norm_over_frames(&self.norm, x.clone(), frames, false)?;
        let mut t = self
            .proj_in
            .forward(y.reshape([bt, c, h * w]).swap_dims(1, 2));
        for block in &self.transformer_blocks {
            t = block.forward(t, context, frames);
        }
        let y = self
            .proj_out
            .forward(t)
            .swap_dims(1, 2)
            .reshape([bt, c, h, w]);
        Ok(y.add(x))
    }
}

/// One entry of `input_blocks` / `output_blocks`: a ResBlock with an optional transformer and
/// upsampler, or a downsampler alone.
#[derive(Module, Debug)]
pub struct LvdmBlock<B: Backend> {
    /// `.0` (absent in a downsampling block).
    pub res: Option<ResBlock<B>>,
    /// `.1` when the level has attention.
    pub attn: Option<SpatialTemporalTransformer<B>>,
    /// `.0.op` of a downsampling block.
    pub down: Option<Downsample<B>>,
    /// The last entry of an output block that upsamples.
    pub up: Option<Upsample<B>>,
}

impl<B: Backend> LvdmBlock<B> {
    /// The block on `x` `[B·T, C, H, W]`.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        emb_act: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        frames: usize,
    ) -> Result<Tensor<B, 4>> {
        let mut x = x;
        if let Some(res) = &self.res {
            x = res.forward(x, emb_act, frames)?;
        }
        if let Some(attn) = &self.attn {
            x = attn.forward(x, context, frames)?;
        }
        if let Some(down) = &self.down {
            x = down.op.forward(x);
        }
        if let Some(up) = &self.up {
            x = up.forward(x);
        }
        Ok(x)
    }
}

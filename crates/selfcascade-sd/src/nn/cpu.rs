//! Owned CPU kernels for the burn-flex backend (float32), used by [`super::kernels`] in place of burn's
//! ops where those are slow. Every kernel is checked against burn's op (tests below) and, through the
//! models, against the PyTorch fixtures.
//!
//! Each public function takes burn tensors of any backend and returns `None` unless the backend is
//! exactly `burn::backend::Flex` with float32 data (not the autodiff wrapper: training keeps burn's
//! differentiable ops), so callers fall back to burn's implementation everywhere else.

use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use rayon::prelude::*;
use std::any::Any;

mod conv;
mod winograd;
pub use conv::conv2d;

/// A burn-flex float32 tensor's values, read in place (row-major; a strided view is made contiguous
/// first). Reading the weights without a copy matters: a 1280-channel 3×3 kernel is 59 MB.
struct HostF32(FlexTensor);

impl std::ops::Deref for HostF32 {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // Contiguous float32 by construction (`host_f32`).
        self.0.as_slice::<f32>().unwrap_or(&[])
    }
}

/// `t` as burn-flex's own tensor, if `B` is exactly burn-flex (not the autodiff wrapper) and `t` holds
/// float32.
fn flex_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<FlexTensor> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let any: Box<dyn Any> = Box::new(t.clone());
    Some(
        any.downcast::<Tensor<Flex, D>>()
            .ok()?
            .into_primitive()
            .tensor(),
    )
}

/// A float32 tensor of `data` on `device`, whatever the device's default float type (a half default
/// would convert the kernel's output).
fn f32_tensor<B: Backend, const D: usize>(
    data: Vec<f32>,
    dims: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(data, dims), (device, DType::F32))
}

/// The float32 values of `t` in row-major order (see [`flex_f32`]).
fn host_f32<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<HostF32> {
    let flex = flex_f32(t)?;
    let flex = if flex.as_slice::<f32>().is_some() {
        flex
    } else {
        flex.to_contiguous()
    };
    let n = flex.layout().num_elements();
    (flex.as_slice::<f32>()?.len() == n).then_some(HostF32(flex))
}

/// Runs `f` on this thread's reusable buffers in `key`, or on fresh ones when they are already in use
/// (a kernel re-entered on the same thread, e.g. by rayon work-stealing while two models run at once).
fn with_scratch<const N: usize, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<[Vec<f32>; N]>>,
    f: impl FnOnce(&mut [Vec<f32>; N]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => f(&mut buffers),
        Err(_) => f(&mut std::array::from_fn(|_| Vec::new())),
    })
}

/// Where element (i, j) of a matrix lies in its slice: `i·rs + j·cs`.
#[derive(Debug, Clone, Copy)]
struct Strides {
    rs: usize,
    cs: usize,
}

impl Strides {
    /// Row-major with rows `rs` apart.
    fn rows(rs: usize) -> Self {
        Self { rs, cs: 1 }
    }

    /// Elements a `rows × cols` matrix with these strides spans.
    fn extent(self, rows: usize, cols: usize) -> usize {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * self.rs + (cols - 1) * self.cs + 1
        }
    }
}

/// `dst = scale · lhs · rhs` (plus `dst` when `accumulate`) for an `m × n` product of depth `k` on the
/// `gemm` crate, each operand a slice with its [`Strides`]; threaded inside gemm when `parallel`. An
/// operand too short for its shape is a bug in the caller (checked, panics).
fn matmul(
    [m, n, k]: [usize; 3],
    (dst, ds): (&mut [f32], Strides),
    accumulate: bool,
    (lhs, ls): (&[f32], Strides),
    (rhs, rs): (&[f32], Strides),
    scale: f32,
    parallel: bool,
) {
    assert!(
        dst.len() >= ds.extent(m, n)
            && lhs.len() >= ls.extent(m, k)
            && rhs.len() >= rs.extent(k, n),
        "matmul: an operand is shorter than its {m}×{k}·{k}×{n} shape"
    );
    // SAFETY: every operand's extent under its strides was checked against its slice above.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            ds.cs as isize,
            ds.rs as isize,
            accumulate,
            lhs.as_ptr(),
            ls.cs as isize,
            ls.rs as isize,
            rhs.as_ptr(),
            rs.cs as isize,
            rs.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

/// `x·W + b` over the last dimension of `x` `[…, in]`, for `weight` `[in, out]` in any 2-D layout with
/// non-negative strides, read in place: the models hold PyTorch's `[out, in]` weight as a transposed
/// view, which burn's `linear` would copy on every call.
pub fn linear<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, D>> {
    let mut dims = x.dims();
    let inp = dims[D - 1];
    let [w_in, out] = weight.dims();
    let rows: usize = dims[..D - 1].iter().product();
    if w_in != inp || inp == 0 || out == 0 || rows == 0 || bias.is_some_and(|b| b.dims() != [out]) {
        return None;
    }
    let xd = host_f32(x)?;
    let w = flex_f32(weight)?;
    let weight = match w.layout().strides() {
        &[rs, cs] if rs >= 0 && cs >= 0 => Strides {
            rs: rs as usize,
            cs: cs as usize,
        },
        _ => return None,
    };
    let start = w.layout().start_offset();
    let storage = w.storage::<f32>();
    if start + weight.extent(inp, out) > storage.len() {
        return None;
    }
    let bd = match bias {
        Some(b) => Some(host_f32(b)?),
        None => None,
    };
    let mut o = vec![0f32; rows * out];
    if let Some(bd) = &bd {
        o.par_chunks_mut(out)
            .for_each(|row| row.copy_from_slice(bd));
    }
    let (product, depth) = ([rows, out, inp], Strides::rows(inp));
    let dst = (&mut o[..], Strides::rows(out));
    matmul(
        product,
        dst,
        bd.is_some(),
        (&xd, depth),
        (&storage[start..], weight),
        1.0,
        true,
    );
    dims[D - 1] = out;
    Some(f32_tensor(o, dims, &x.device()))
}

/// The video UNet's temporal convolution (`Conv3d` with kernel (3, 1, 1), padding (1, 0, 0)) on `x`
/// `[B, C, T, N]` (frames along dim 2, pixels along dim 3) with `weight` `[O, C, 3, 1]`:
/// `y[:, :, t] = W₀·x[:, :, t−1] + W₁·x[:, :, t] + W₂·x[:, :, t+1] + b`. Per video, x is a `[C, T·N]`
/// matrix and each tap one GEMM over a shifted range of its columns (frame t−1 of every output frame is
/// N columns to the left), read in place: no padded or shifted copies.
pub fn temporal_conv<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, 4>> {
    let [b, c, t, n] = x.dims();
    let [o, wc, taps, kw] = weight.dims();
    if wc != c
        || taps != 3
        || kw != 1
        || b * c * t * n * o == 0
        || bias.is_some_and(|v| v.dims() != [o])
    {
        return None;
    }
    let xd = host_f32(x)?;
    let wd = host_f32(weight)?;
    let bd = match bias {
        Some(v) => Some(host_f32(v)?),
        None => None,
    };
    let tn = t * n;
    let mut out = vec![0f32; b * o * tn];
    // Tap k of `[O, C, 3, 1]` row-major: W_k[o][c] at o·3C + 3c + k.
    let tap = |k: usize| (&wd[k..], Strides { rs: 3 * c, cs: 3 });
    for (video, y) in xd.chunks_exact(c * tn).zip(out.chunks_exact_mut(o * tn)) {
        if let Some(bd) = &bd {
            y.par_chunks_mut(tn)
                .zip(bd.par_iter())
                .for_each(|(row, &v)| row.fill(v));
        }
        let rows = Strides::rows(tn);
        // The centre tap over every frame.
        matmul(
            [o, tn, c],
            (&mut y[..], rows),
            bd.is_some(),
            tap(1),
            (video, rows),
            1.0,
            true,
        );
        if t > 1 {
            let shifted = (t - 1) * n;
            // Frames 1..T take frame t−1 (tap 0); frames 0..T−1 take frame t+1 (tap 2).
            matmul(
                [o, shifted, c],
                (&mut y[n..], rows),
                true,
                tap(0),
                (video, rows),
                1.0,
                true,
            );
            matmul(
                [o, shifted, c],
                (&mut y[..], rows),
                true,
                tap(2),
                (&video[n..], rows),
                1.0,
                true,
            );
        }
    }
    Some(f32_tensor(out, [b, o, t, n], &x.device()))
}

/// Queries handled together: each block is one task for the thread pool.
const QUERY_BLOCK: usize = 512;

/// softmax(q·kᵀ·scale)·v for `q` `[B, H, N, d]`, `k`/`v` `[B, H, M, d]` (causal: key j > query i is
/// masked). Query blocks run in parallel; each holds `QUERY_BLOCK` × `KEY_BLOCK` scores at a time.
pub fn attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    scale: f64,
    causal: bool,
) -> Option<Tensor<B, 4>> {
    let [b, h, n, d] = q.dims();
    let [_, _, m, dv] = v.dims();
    if k.dims() != [b, h, m, d] || v.dims()[..2] != [b, h] || n == 0 || m == 0 || d == 0 {
        return None;
    }
    let (qd, kd, vd) = (host_f32(q)?, host_f32(k)?, host_f32(v)?);
    let mut out = vec![0f32; b * h * n * dv];
    out.par_chunks_mut(n * dv)
        .enumerate()
        .for_each(|(bh, out_bh)| {
            let q_bh = &qd[bh * n * d..(bh + 1) * n * d];
            let k_bh = &kd[bh * m * d..(bh + 1) * m * d];
            let v_bh = &vd[bh * m * dv..(bh + 1) * m * dv];
            out_bh
                .par_chunks_mut(QUERY_BLOCK * dv)
                .enumerate()
                .for_each_init(Scratch::default, |scratch, (blk, out_blk)| {
                    let row0 = blk * QUERY_BLOCK;
                    let rows = out_blk.len() / dv;
                    let q_blk = &q_bh[row0 * d..(row0 + rows) * d];
                    attention_block(
                        q_blk,
                        k_bh,
                        v_bh,
                        out_blk,
                        scratch,
                        [rows, m, d, dv],
                        row0,
                        scale as f32,
                        causal,
                    );
                });
        });
    Some(f32_tensor(out, [b, h, n, dv], &q.device()))
}

/// Group normalisation of `x` `[B, C, …]` over `groups` channel groups, the per-channel affine map, then
/// SiLU when `silu` is set — one pass per group, groups in parallel. Statistics are accumulated in f64.
pub fn group_norm<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Option<Tensor<B, D>> {
    let dims = x.dims();
    let (c, rest) = (dims[1], dims[2..].iter().product::<usize>());
    if groups == 0 || !c.is_multiple_of(groups) || gamma.dims() != [c] || beta.dims() != [c] {
        return None;
    }
    let (xd, gd, bd) = (host_f32(x)?, host_f32(gamma)?, host_f32(beta)?);
    let per_group = c / groups;
    let len = per_group * rest;
    if len == 0 {
        return None;
    }
    let mut out = vec![0f32; xd.len()];
    out.par_chunks_mut(len)
        .zip(xd.par_chunks(len))
        .enumerate()
        .for_each(|(bg, (o, xs))| {
            let ch0 = (bg % groups) * per_group;
            let n = len as f64;
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + eps).sqrt();
            for (j, (oc, xc)) in o.chunks_mut(rest).zip(xs.chunks(rest)).enumerate() {
                // y = (x − mean)·(inv·γ) + β per channel.
                let a = (inv * gd[ch0 + j] as f64) as f32;
                affine_act(oc, xc, mean as f32, a, bd[ch0 + j], silu);
            }
        });
    Some(f32_tensor(out, dims, &x.device()))
}

/// GEGLU's activation on `y` `[…, 2·I]` (the projection's output): `a · gelu(g)` for the halves
/// `[a, g]` of the last dimension, in one pass, rows in parallel.
pub fn geglu<B: Backend, const D: usize>(y: &Tensor<B, D>) -> Option<Tensor<B, D>> {
    let mut dims = y.dims();
    let two_i = dims[D - 1];
    if two_i == 0 || !two_i.is_multiple_of(2) {
        return None;
    }
    let yd = host_f32(y)?;
    let i = two_i / 2;
    dims[D - 1] = i;
    let mut out = vec![0f32; yd.len() / 2];
    const ROWS: usize = 16;
    out.par_chunks_mut(ROWS * i)
        .zip(yd.par_chunks(ROWS * two_i))
        .for_each(|(o, ys)| {
            for (o, y) in o.chunks_mut(i).zip(ys.chunks(two_i)) {
                let (a, g) = y.split_at(i);
                gated_gelu(o, a, g);
            }
        });
    Some(f32_tensor(out, dims, &y.device()))
}

/// Whether the CPU runs the `*_avx2` builds of the element-wise loops (AVX2 + FMA).
#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// `o = a · gelu(g)`.
fn gated_gelu(o: &mut [f32], a: &[f32], g: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { gated_gelu_avx2(o, a, g) };
    }
    gated_gelu_portable(o, a, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gated_gelu_avx2(o: &mut [f32], a: &[f32], g: &[f32]) {
    gated_gelu_portable(o, a, g)
}

#[inline(always)]
fn gated_gelu_portable(o: &mut [f32], a: &[f32], g: &[f32]) {
    for ((o, &a), &g) in o.iter_mut().zip(a).zip(g) {
        *o = a * gelu_erf(g);
    }
}

/// GELU, x·Φ(x) = x·(1 + erf(x/√2))/2, with erfc from Abramowitz & Stegun 7.1.26 (absolute error
/// ≤ 1.5e−7) on |x|/√2 and the vectorisable exponential: branch-free, so loops over it vectorise.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    // erfc(|x|/√2) / 2: Φ(x) is 1 minus it for x ≥ 0, it for x < 0.
    let half_erfc = 0.5 * poly * exp_nonpositive(-z * z);
    x * if x >= 0.0 { 1.0 - half_erfc } else { half_erfc }
}

/// `o = (x − m)·a + b`, then SiLU if `silu`.
fn affine_act(o: &mut [f32], x: &[f32], m: f32, a: f32, b: f32, silu: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { affine_act_avx2(o, x, m, a, b, silu) };
    }
    affine_act_portable(o, x, m, a, b, silu)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_act_avx2(o: &mut [f32], x: &[f32], m: f32, a: f32, b: f32, silu: bool) {
    affine_act_portable(o, x, m, a, b, silu)
}

#[inline(always)]
fn affine_act_portable(o: &mut [f32], x: &[f32], m: f32, a: f32, b: f32, silu: bool) {
    if silu {
        for (o, &x) in o.iter_mut().zip(x) {
            let y = (x - m) * a + b;
            *o = y / (1.0 + exp_poly(-y));
        }
    } else {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = (x - m) * a + b;
        }
    }
}

/// Keys handled together within a query block: the block's scores (`QUERY_BLOCK` × `KEY_BLOCK`) and the
/// key/value rows it reads stay in the L2 cache, whatever the sequence length.
const KEY_BLOCK: usize = 256;

/// Per-thread buffers reused across query blocks (a fresh allocation per block costs page faults and
/// zeroing comparable to the arithmetic).
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    max: Vec<f32>,
    sums: Vec<f32>,
}

/// One block of `rows` queries (starting at query `row0`) against all `m` keys, flash-style: keys in
/// blocks of [`KEY_BLOCK`], with each row's running maximum and sum, the output rescaled when the
/// maximum grows, and divided by the sum at the end.
#[allow(clippy::too_many_arguments)]
fn attention_block(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    scratch: &mut Scratch,
    [rows, m, d, dv]: [usize; 4],
    row0: usize,
    scale: f32,
    causal: bool,
) {
    scratch.scores.resize(rows * KEY_BLOCK, 0.0);
    scratch.max.clear();
    scratch.max.resize(rows, f32::NEG_INFINITY);
    scratch.sums.clear();
    scratch.sums.resize(rows, 0.0);
    out.iter_mut().for_each(|x| *x = 0.0);
    // Causal: query row0 + i sees keys 0..=row0 + i, so no block beyond the last row's keys is needed.
    let m_seen = if causal { m.min(row0 + rows) } else { m };
    for kb in (0..m_seen).step_by(KEY_BLOCK) {
        let kl = KEY_BLOCK.min(m_seen - kb);
        let s = &mut scratch.scores[..rows * kl];
        // S = scale · Q K_blockᵀ (Q rows × d row-major; Kᵀ read from K row-major: row stride 1, column
        // stride d).
        let kt = Strides { rs: 1, cs: d };
        let scores = (&mut s[..], Strides::rows(kl));
        matmul(
            [rows, kl, d],
            scores,
            false,
            (q, Strides::rows(d)),
            (&k[kb * d..], kt),
            scale,
            false,
        );
        let visible = |i: usize| {
            if causal {
                (row0 + i + 1).saturating_sub(kb).min(kl)
            } else {
                kl
            }
        };
        let state = scratch.max.iter_mut().zip(scratch.sums.iter_mut());
        for (i, ((row, (max, sum)), o)) in s
            .chunks_mut(kl)
            .zip(state)
            .zip(out.chunks_mut(dv))
            .enumerate()
        {
            let correction = softmax_block_row(row, visible(i), max, sum);
            if correction != 1.0 {
                o.iter_mut().for_each(|x| *x *= correction);
            }
        }
        // O += P V_block.
        let (p, vb) = (
            (&s[..], Strides::rows(kl)),
            (&v[kb * dv..], Strides::rows(dv)),
        );
        matmul(
            [rows, dv, kl],
            (&mut out[..], Strides::rows(dv)),
            true,
            p,
            vb,
            1.0,
            false,
        );
    }
    for (row, sum) in out.chunks_mut(dv).zip(scratch.sums.iter()) {
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

/// One row of a score block: the first `live` entries become exp(s − new max), the rest 0; the running
/// `max` and `sum` are updated. Returns the factor exp(old max − new max) by which the row's output so far
/// must be rescaled.
fn softmax_block_row(row: &mut [f32], live: usize, max: &mut f32, sum: &mut f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { softmax_block_row_avx2(row, live, max, sum) };
    }
    softmax_block_row_portable(row, live, max, sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_block_row_avx2(
    row: &mut [f32],
    live: usize,
    max: &mut f32,
    sum: &mut f32,
) -> f32 {
    softmax_block_row_portable(row, live, max, sum)
}

#[inline(always)]
fn softmax_block_row_portable(row: &mut [f32], live: usize, max: &mut f32, sum: &mut f32) -> f32 {
    let (live, masked) = row.split_at_mut(live);
    masked.iter_mut().for_each(|x| *x = 0.0);
    let new_max = lanes(live, *max, f32::max);
    if live.is_empty() || new_max == f32::NEG_INFINITY {
        return 1.0;
    }
    live.iter_mut()
        .for_each(|x| *x = exp_nonpositive(*x - new_max));
    let correction = exp_nonpositive(*max - new_max);
    *sum = *sum * correction + lanes(live, 0.0, |a, b| a + b);
    *max = new_max;
    correction
}

/// Folds `xs` with `f` over 16 independent lanes (so the compiler can vectorise the reduction, which a
/// single sequential accumulator forbids for floats), then folds the lanes.
#[inline(always)]
fn lanes(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    const L: usize = 16;
    let mut acc = [init; L];
    let chunks = xs.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = f(*a, x);
        }
    }
    let mut r = tail.iter().fold(init, |a, &x| f(a, x));
    for a in acc {
        r = f(r, a);
    }
    r
}

/// e^x for x ≤ 0 (Cephes' single-precision polynomial after reduction by ln 2; ≤ 2 ulp), written so the
/// compiler vectorises it. Inputs below −87.3 give e^−87.3 ≈ 1.2e−38 instead of subnormals or zero.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    exp_poly(x.min(0.0))
}

/// e^x for any x (same polynomial): below −87.3 as e^−87.3, above 88.7 +∞.
#[inline(always)]
fn exp_poly(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.3, 88.8);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from its exponent bits; n = 128 (x near 88.8) gives the bits of +∞.
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::module::attention as burn_attention;
    use burn::tensor::ops::AttentionModuleOptions;
    use burn::tensor::Distribution;

    #[test]
    fn exp_matches_std_within_two_ulp() {
        let mut worst = 0f32;
        for i in 0..200_000 {
            let x = -(i as f32) * 87.0 / 200_000.0;
            let (got, want) = (exp_nonpositive(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1e30) > 0.0 && exp_nonpositive(f32::NEG_INFINITY) < 1.3e-38);
    }

    fn check(b: usize, h: usize, n: usize, m: usize, d: usize, dv: usize, causal: bool) {
        let dev = Default::default();
        let q = Tensor::<Flex, 4>::random([b, h, n, d], Distribution::Normal(0.0, 1.0), &dev);
        let k = Tensor::<Flex, 4>::random([b, h, m, d], Distribution::Normal(0.0, 1.0), &dev);
        let v = Tensor::<Flex, 4>::random([b, h, m, dv], Distribution::Normal(0.0, 1.0), &dev);
        let scale = 1.0 / (d as f64).sqrt();
        let got = attention(&q, &k, &v, scale, causal).expect("flex f32 takes the owned kernel");
        let options = AttentionModuleOptions {
            scale: Some(scale),
            softcap: None,
            is_causal: causal,
        };
        let want = burn_attention(q, k, v, None, None, options);
        let err = max_abs_diff(got, want);
        assert!(
            err < 2e-5,
            "{b}x{h}x{n}x{m}x{d}x{dv} causal={causal}: max error {err}"
        );
    }

    #[test]
    fn temporal_conv_matches_burns_conv2d() {
        use burn::tensor::module::conv2d;
        use burn::tensor::ops::ConvOptions;
        let dev = Default::default();
        for (b, c, o, t, n, bias) in [
            (2, 5, 7, 4, 9, true),
            (1, 3, 3, 1, 6, false),
            (1, 4, 2, 2, 1, true),
        ] {
            let x = Tensor::<Flex, 4>::random([b, c, t, n], Distribution::Normal(0.0, 1.0), &dev);
            let w = Tensor::<Flex, 4>::random([o, c, 3, 1], Distribution::Normal(0.0, 1.0), &dev);
            let bv =
                bias.then(|| Tensor::<Flex, 1>::random([o], Distribution::Normal(0.0, 1.0), &dev));
            let got = temporal_conv(&x, &w, bv.as_ref()).expect("flex f32 takes the owned kernel");
            let options = ConvOptions::new([1, 1], [1, 0], [1, 1], 1);
            let want = conv2d(x, w, bv, options);
            let err = max_abs_diff(got, want);
            assert!(err < 1e-5, "{b}x{c}x{t}x{n} → {o}: max error {err}");
        }
    }

    pub(super) fn max_abs_diff<const D: usize>(got: Tensor<Flex, D>, want: Tensor<Flex, D>) -> f32 {
        let (got, want) = (
            got.into_data().into_vec::<f32>().unwrap(),
            want.into_data().into_vec::<f32>().unwrap(),
        );
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn attention_equals_burns_op() {
        check(1, 1, 1, 1, 1, 1, false);
        check(2, 3, 70, 70, 8, 8, false); // a partial query block
        check(1, 2, 130, 77, 16, 16, false); // cross-attention, M ≠ N
        check(2, 2, 77, 77, 64, 64, true); // CLIP's causal self-attention
        check(1, 5, 256, 300, 64, 64, false);
        check(1, 1, 520, 520, 4, 4, true); // causal across a query-block boundary
        check(1, 2, 100, 1100, 16, 8, false); // several key blocks (running max and sum), d ≠ dv
        check(1, 1, 1030, 1030, 8, 8, true); // causal over several key and query blocks
    }

    #[test]
    fn exp_poly_covers_both_signs() {
        for i in 0..100_000 {
            let x = -87.0 + (i as f32) * 175.0 / 100_000.0;
            let (got, want) = (exp_poly(x), x.exp());
            assert!(((got - want) / want).abs() < 3e-7, "{x}: {got} vs {want}");
        }
        assert_eq!(exp_poly(1000.0), f32::INFINITY);
    }

    fn group_norm_case(dims: [usize; 4], groups: usize, silu: bool, offset: f32, std: f64) {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::random(dims, Distribution::Normal(0.0, std), &dev)
            .add_scalar(offset);
        let c = dims[1];
        let gamma = Tensor::<Flex, 1>::random([c], Distribution::Normal(1.0, 0.3), &dev);
        let beta = Tensor::<Flex, 1>::random([c], Distribution::Normal(0.0, 0.3), &dev);
        let got = group_norm(&x, &gamma, &beta, groups, 1e-5, silu).expect("flex f32");
        // burn's ops: kernels::group_norm's own composition, which every backend but plain burn-flex runs.
        type A = burn::backend::Autodiff<Flex>;
        let want = crate::nn::kernels::group_norm(
            Tensor::<A, 4>::from_inner(x),
            Tensor::<A, 1>::from_inner(gamma),
            Tensor::<A, 1>::from_inner(beta),
            groups,
            1e-5,
            silu,
        )
        .inner();
        let err = max_abs_diff(got, want);
        assert!(
            err < 2e-5,
            "{dims:?} groups {groups} silu {silu}: max error {err}"
        );
    }

    #[test]
    fn group_norm_equals_burns_ops() {
        group_norm_case([2, 64, 9, 7], 32, true, 0.0, 3.0);
        group_norm_case([1, 32, 16, 16], 8, false, 0.0, 3.0);
        group_norm_case([3, 6, 5, 5], 3, true, 20.0, 3.0); // a large mean: the variance must not cancel
                                                           // One value per group: variance 0, the output is β.
        group_norm_case([1, 4, 1, 1], 4, true, 0.0, 3.0);
        // Variance 1e-5, the size of ε: a wrong ε (1e-6 for 1e-5) moves the output by ~30%.
        group_norm_case([2, 8, 6, 6], 4, false, 0.0, 3.2e-3);
    }

    #[test]
    fn geglu_equals_burns_ops() {
        let dev = Default::default();
        let y = Tensor::<Flex, 3>::random([2, 37, 2 * 24], Distribution::Normal(0.0, 3.0), &dev);
        let got = geglu(&y).expect("flex f32");
        let want = y
            .clone()
            .narrow(2, 0, 24)
            .mul(burn::tensor::activation::gelu(y.narrow(2, 24, 24)));
        // |a| ≈ 3σ at most ~12, erf's error 1.5e−7 times |a·x|/2: well under 1e−5; a swapped gate and
        // value, or tanh's GELU instead of erf's (difference up to 5e−4·|x|), fail it.
        let err = max_abs_diff(got, want);
        assert!(err < 1e-5, "max error {err}");
    }

    #[test]
    fn gelu_matches_the_erf_form_everywhere() {
        let mut worst = 0f64;
        for i in 0..200_001 {
            let x = -20.0 + (i as f64) * 40.0 / 200_000.0;
            let want = 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2));
            let got = gelu_erf(x as f32) as f64;
            worst = worst.max((got - want).abs() / x.abs().max(1.0));
        }
        assert!(worst < 2e-7, "worst scaled error {worst}");
        assert_eq!(gelu_erf(0.0), 0.0);
        assert_eq!(gelu_erf(-1e30), 0.0);
        assert_eq!(gelu_erf(1e30), 1e30);
    }

    /// erf in f64 by its Maclaurin series (|x| ≤ 3) and continued fraction for erfc (|x| > 3): a
    /// reference independent of the approximation under test.
    fn erf(x: f64) -> f64 {
        let a = x.abs();
        let v = if a <= 3.0 {
            let (mut term, mut sum, mut k) = (a, a, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                k += 1.0;
                term *= -a * a / k;
                sum += term / (2.0 * k + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = e^{−a²}/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + …)))).
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
        };
        v.copysign(x)
    }

    #[test]
    fn linear_equals_burns_op_for_stored_and_transposed_weights() {
        let dev = Default::default();
        let x = Tensor::<Flex, 3>::random([2, 5, 7], Distribution::Normal(0.0, 1.0), &dev);
        let w_stored = Tensor::<Flex, 2>::random([9, 7], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<Flex, 1>::random([9], Distribution::Normal(0.0, 1.0), &dev);
        // The models' layout: PyTorch's [out, in] seen through a transpose; and a contiguous [in, out].
        for w in [
            w_stored.clone().transpose(),
            Tensor::from_data(w_stored.clone().transpose().into_data(), &dev),
        ] {
            for bias in [Some(&b), None] {
                let got = linear(&x, &w, bias).expect("flex f32");
                let want = burn::tensor::module::linear(x.clone(), w.clone(), bias.cloned());
                let err = max_abs_diff(got, want);
                assert!(err < 1e-5, "bias {}: {err}", bias.is_some());
            }
        }
        // A narrowed view of a larger weight (non-zero start offset).
        let big = Tensor::<Flex, 2>::random([12, 7], Distribution::Normal(0.0, 1.0), &dev);
        let w = big.narrow(0, 3, 9).transpose();
        let got = linear(&x, &w, Some(&b)).expect("flex f32");
        let want = burn::tensor::module::linear(x, w, Some(b));
        assert!(max_abs_diff(got, want) < 1e-5);
    }

    #[test]
    fn other_backends_and_dtypes_fall_back() {
        type A = burn::backend::Autodiff<Flex>;
        let dev = Default::default();
        let t = Tensor::<A, 4>::zeros([1, 1, 2, 2], &dev);
        assert!(attention(&t, &t, &t, 1.0, false).is_none());
        let half = Tensor::<Flex, 4>::zeros([1, 1, 2, 2], &dev).cast(burn::tensor::FloatDType::F16);
        assert!(attention(&half, &half, &half, 1.0, false).is_none());
    }
}

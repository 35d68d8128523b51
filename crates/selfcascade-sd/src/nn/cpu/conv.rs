//! 2-D convolution as im2col + one matrix product per tile of output rows, in the NCHW layout the
//! models use (no layout conversions): `out[b] = W · cols + bias`, with `W` the weight as an
//! `[out, in·kh·kw]` matrix and `cols` the `[in·kh·kw, pixels]` patches of the tile.

use super::{f32_tensor, host_f32, matmul, winograd, with_scratch, Strides};
use burn::tensor::{backend::Backend, Tensor};
use rayon::prelude::*;
use std::cell::RefCell;

/// 3×3 stride-1 convolutions with at least this many 2×2 output tiles (32×32 outputs) use Winograd's
/// F(2×2, 3×3) ([`winograd`]); smaller ones, where transforming the weights on every call would cost
/// more than it saves, use im2col.
const WINOGRAD_MIN_TILES: usize = 256;

/// Input channels below which im2col wins: the 16 products of a Winograd convolution over few channels are
/// too shallow (measured at 64²: 4 channels 4.8 ms by Winograd against 1.3 ms by im2col, 64 channels 3.7
/// against 3.2 ms; from 128 channels Winograd wins, 23 against 31 ms at 128²).
const WINOGRAD_MIN_CHANNELS: usize = 128;

/// Elements of the patch matrix (or Winograd's transformed input) built at once (16M floats, 64 MB): a
/// tile of output rows is as tall as fits, so small images are one tile and a 2048² image's first layers
/// a few.
const IM2COL_BUDGET: usize = 1 << 24;

thread_local! {
    /// The patch matrix, reused across calls (a fresh 64 MB allocation per convolution costs page
    /// faults comparable to a tenth of the arithmetic).
    static COLS: RefCell<[Vec<f32>; 1]> = const { RefCell::new([Vec::new()]) };
}

/// Convolution geometry (square kernel steps, PyTorch semantics).
#[derive(Debug, Clone, Copy)]
struct Geometry {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    ho: usize,
    wo: usize,
}

/// `conv2d(x, weight, bias)` for `x` `[B, C, H, W]` and `weight` `[O, C, kh, kw]`, with the same stride,
/// zero padding and dilation on both axes; `None` unless burn-flex float32 (see [`super`]).
pub fn conv2d<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Option<Tensor<B, 4>> {
    conv2d_tiled(
        x,
        weight,
        bias,
        [stride, padding, dilation],
        IM2COL_BUDGET,
        [WINOGRAD_MIN_TILES, WINOGRAD_MIN_CHANNELS],
    )
}

fn conv2d_tiled<B: Backend>(
    x: &Tensor<B, 4>,
    weight: &Tensor<B, 4>,
    bias: Option<&Tensor<B, 1>>,
    [stride, padding, dilation]: [usize; 3],
    budget: usize,
    [winograd_min_tiles, winograd_min_channels]: [usize; 2],
) -> Option<Tensor<B, 4>> {
    let [b, c, h, w] = x.dims();
    let [o, ci, kh, kw] = weight.dims();
    let span = |k: usize| dilation * (k.max(1) - 1) + 1;
    if ci != c || stride == 0 || dilation == 0 || kh == 0 || kw == 0 || o == 0 || b == 0 {
        return None;
    }
    if h + 2 * padding < span(kh) || w + 2 * padding < span(kw) {
        return None;
    }
    if bias.is_some_and(|t| t.dims() != [o]) {
        return None;
    }
    let g = Geometry {
        h,
        w,
        kh,
        kw,
        stride,
        padding,
        dilation,
        ho: (h + 2 * padding - span(kh)) / stride + 1,
        wo: (w + 2 * padding - span(kw)) / stride + 1,
    };
    let xd = host_f32(x)?;
    let wd = host_f32(weight)?;
    let bd = match bias {
        Some(t) => Some(host_f32(t)?),
        None => None,
    };
    let plane = g.ho * g.wo;
    let mut out = vec![0f32; b * o * plane];
    let tiles = g.ho.div_ceil(2) * g.wo.div_ceil(2);
    let winograd = kh == 3 && kw == 3 && stride == 1 && dilation == 1;
    if winograd && tiles >= winograd_min_tiles && c >= winograd_min_channels {
        let shape = [b, c, h, w];
        winograd::conv3x3(&xd, &wd, bd.as_deref(), shape, o, padding, &mut out, budget);
        return Some(f32_tensor(out, [b, o, g.ho, g.wo], &x.device()));
    }
    if let Some(bd) = &bd {
        out.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(i, p)| p.fill(bd[i % o]));
    }
    let kdim = c * kh * kw;
    let pointwise = kh == 1 && kw == 1 && stride == 1 && padding == 0;
    let tile_rows = if pointwise {
        g.ho
    } else {
        (budget / (kdim * g.wo).max(1)).clamp(1, g.ho)
    };
    with_scratch(&COLS, |[cols]| {
        for (xb, ob) in xd.chunks(c * h * w).zip(out.chunks_mut(o * plane)) {
            for oy0 in (0..g.ho).step_by(tile_rows) {
                let rows = tile_rows.min(g.ho - oy0);
                let n = rows * g.wo;
                // The right-hand side: the input itself for a pointwise convolution (row stride H·W),
                // else the tile's patches (row stride n).
                let (rhs, rhs_rs) = if pointwise {
                    (&xb[oy0 * g.wo..], plane)
                } else {
                    if cols.len() < kdim * n {
                        cols.resize(kdim * n, 0.0);
                    }
                    im2col(xb, &mut cols[..kdim * n], &g, oy0, rows);
                    (&cols[..kdim * n], n)
                };
                // out[b][:, tile] (+)= W · patches, threaded inside gemm (measured faster than
                // splitting the output channels across tasks, small images included).
                let dst = (&mut ob[oy0 * g.wo..], Strides::rows(plane));
                let (w, p) = (Strides::rows(kdim), Strides::rows(rhs_rs));
                matmul(
                    [o, n, kdim],
                    dst,
                    bd.is_some(),
                    (&wd, w),
                    (rhs, p),
                    1.0,
                    true,
                );
            }
        }
    });
    Some(f32_tensor(out, [b, o, g.ho, g.wo], &x.device()))
}

/// Fills `cols` (`[C·kh·kw, rows·wo]`) with the patches of output rows `oy0..oy0 + rows` of one image
/// `xb` (`[C, H, W]`): row `(ci·kh + ky)·kw + kx` holds, per output pixel, the input value under that
/// kernel tap, or 0 in the padding. Rows fill in parallel.
fn im2col(xb: &[f32], cols: &mut [f32], g: &Geometry, oy0: usize, rows: usize) {
    let n = rows * g.wo;
    cols.par_chunks_mut(n)
        .with_min_len(8)
        .enumerate()
        .for_each(|(r, dst)| {
            let (ci, tap) = (r / (g.kh * g.kw), r % (g.kh * g.kw));
            let (ky, kx) = (tap / g.kw, tap % g.kw);
            let src = &xb[ci * g.h * g.w..(ci + 1) * g.h * g.w];
            // Input column of output column ox: ox·stride + kx·dilation − padding.
            let dx = (kx * g.dilation) as isize - g.padding as isize;
            // Output columns whose input column lies inside [0, W).
            let lo = ((-dx).max(0) as usize).div_ceil(g.stride).min(g.wo);
            let hi = if (g.w as isize - dx) <= 0 {
                0
            } else {
                ((g.w as isize - dx) as usize)
                    .div_ceil(g.stride)
                    .clamp(lo, g.wo)
            };
            for (i, line) in dst.chunks_mut(g.wo).enumerate() {
                let iy = ((oy0 + i) * g.stride + ky * g.dilation) as isize - g.padding as isize;
                if iy < 0 || iy >= g.h as isize {
                    line.fill(0.0);
                    continue;
                }
                let row = &src[iy as usize * g.w..(iy as usize + 1) * g.w];
                line[..lo].fill(0.0);
                line[hi..].fill(0.0);
                if hi == lo {
                    continue;
                }
                if g.stride == 1 {
                    let start = (lo as isize + dx) as usize;
                    line[lo..hi].copy_from_slice(&row[start..start + (hi - lo)]);
                } else {
                    for (ox, v) in (lo..hi).zip(&mut line[lo..hi]) {
                        *v = row[(ox as isize * g.stride as isize + dx) as usize];
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::module::conv2d as burn_conv2d;
    use burn::tensor::ops::ConvOptions;
    use burn::tensor::Distribution;

    /// The owned convolution against burn's, at a budget of `budget` patch elements (small budgets force
    /// several tiles of output rows).
    fn case(x: [usize; 4], o: usize, k: usize, spd: [usize; 3], bias: bool, budget: usize) {
        for winograd_from in [[usize::MAX; 2], [1, 1]] {
            case_with(x, o, k, spd, bias, budget, winograd_from);
        }
    }

    /// One case, with Winograd's transform for 3×3 stride-1 convolutions of at least `winograd_from`
    /// tiles and input channels.
    fn case_with(
        x: [usize; 4],
        o: usize,
        k: usize,
        spd: [usize; 3],
        bias: bool,
        budget: usize,
        winograd_from: [usize; 2],
    ) {
        let dev = Default::default();
        let [stride, padding, dilation] = spd;
        let xt = Tensor::<Flex, 4>::random(x, Distribution::Normal(0.0, 1.0), &dev);
        let wt = Tensor::<Flex, 4>::random([o, x[1], k, k], Distribution::Normal(0.0, 0.2), &dev);
        let bt = bias.then(|| Tensor::<Flex, 1>::random([o], Distribution::Normal(0.0, 1.0), &dev));
        let got =
            conv2d_tiled(&xt, &wt, bt.as_ref(), spd, budget, winograd_from).expect("flex f32");
        let options = ConvOptions::new([stride; 2], [padding; 2], [dilation; 2], 1);
        let want = burn_conv2d(xt, wt, bt, options);
        assert_eq!(got.dims(), want.dims(), "{x:?} k{k} {spd:?}");
        let err = super::super::tests::max_abs_diff(got, want);
        assert!(
            err < 1e-4,
            "{x:?} o{o} k{k} {spd:?} bias {bias} budget {budget} winograd from {winograd_from:?}: {err}"
        );
    }

    #[test]
    fn conv2d_equals_burns_op() {
        let big = IM2COL_BUDGET;
        case([2, 5, 9, 7], 6, 3, [1, 1, 1], true, big); // the UNet's 3×3 convolutions
        case([1, 4, 8, 8], 7, 3, [1, 1, 1], false, big); // conv_in-like, no bias
        case([2, 6, 9, 8], 4, 3, [2, 1, 1], true, big); // a downsampler: stride 2, odd height
        case([2, 6, 5, 6], 3, 1, [1, 0, 1], true, big); // pointwise (a shortcut)
        case([1, 3, 12, 10], 5, 3, [1, 2, 2], true, big); // ScaleCrafter's re-dilation, padding = dilation
        case([1, 3, 13, 11], 4, 3, [1, 3, 4], false, big); // dilation > padding: the output shrinks
        case([1, 3, 7, 7], 2, 3, [1, 0, 1], true, big); // no padding
        case([1, 2, 6, 6], 2, 5, [1, 4, 3], true, big); // taps entirely in the padding for edge pixels
        case([1, 2, 9, 9], 3, 3, [3, 1, 2], true, big); // stride and dilation together
        case([2, 5, 11, 9], 6, 3, [1, 1, 1], true, 5 * 9 * 9 * 2); // two output rows per tile
        case([1, 4, 10, 6], 3, 3, [2, 1, 1], true, 1); // one output row per tile

        // The production thresholds: 289 tiles, 128 channels take Winograd; 4 channels take im2col.
        let from = [WINOGRAD_MIN_TILES, WINOGRAD_MIN_CHANNELS];
        case_with([1, 128, 34, 34], 8, 3, [1, 1, 1], true, big, from);
        case_with([1, 4, 34, 34], 8, 3, [1, 1, 1], true, big, from);
    }

    #[test]
    fn conv2d_works_while_its_buffers_are_in_use_on_this_thread() {
        // As when rayon runs a second model's convolution on a thread that is inside one already.
        COLS.with_borrow_mut(|_| {
            winograd::BUFFERS.with_borrow_mut(|_| {
                case_with(
                    [1, 128, 34, 34],
                    4,
                    3,
                    [1, 1, 1],
                    true,
                    IM2COL_BUDGET,
                    [1, 1],
                );
                case_with(
                    [1, 3, 9, 9],
                    4,
                    3,
                    [1, 1, 1],
                    true,
                    IM2COL_BUDGET,
                    [usize::MAX; 2],
                );
            })
        });
    }

    #[test]
    fn conv2d_refuses_what_it_does_not_cover() {
        let dev = Default::default();
        let x = Tensor::<Flex, 4>::zeros([1, 2, 4, 4], &dev);
        let w = Tensor::<Flex, 4>::zeros([3, 1, 3, 3], &dev); // grouped (in 1 ≠ 2)
        assert!(conv2d(&x, &w, None, 1, 1, 1).is_none());
        let w = Tensor::<Flex, 4>::zeros([3, 2, 7, 7], &dev); // kernel larger than the padded input
        assert!(conv2d(&x, &w, None, 1, 1, 1).is_none());
    }
}

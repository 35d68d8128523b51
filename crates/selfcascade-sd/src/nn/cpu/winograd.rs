//! 3×3 stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms
//! for Convolutional Neural Networks", 2016): each 2×2 output tile comes from a 4×4 input tile with 16
//! multiplications per channel pair instead of 36, computed as 16 matrix products over the channels:
//!
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`, summed over input channels, with
//! `Bᵀ = [[1,0,−1,0],[0,1,1,0],[0,−1,1,0],[0,1,0,−1]]`, `G = [[1,0,0],[½,½,½],[½,−½,½],[0,0,1]]`,
//! `Aᵀ = [[1,1,1,0],[0,1,−1,−1]]`.
//!
//! Layouts: transformed weights `U[o][ξ][c]`, transformed input `V[c][ξ][t]` and products `M[o][ξ][t]`
//! for the 16 positions ξ of a 4×4 tile and tiles t of a band of tile rows, so every transform works on
//! one contiguous block per channel and the products read them with row strides.

use super::{matmul, with_scratch, Strides};
use rayon::prelude::*;
use std::cell::RefCell;

/// `out` (`[B, O, H + 2p − 2, W + 2p − 2]`) = conv3x3(`x` `[B, C, H, W]`, `weight` `[O, C, 3, 3]`, stride
/// 1, zero padding `p`) + bias, in bands of tile rows whose transformed input (and products) hold at
/// most about `budget` elements.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv3x3(
    x: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    [_, c, h, w]: [usize; 4],
    o: usize,
    padding: usize,
    out: &mut [f32],
    budget: usize,
) {
    let (ho, wo) = (h + 2 * padding - 2, w + 2 * padding - 2);
    let (th, tw) = (ho.div_ceil(2), wo.div_ceil(2));
    let band_rows = (budget / (16 * c.max(o) * tw).max(1)).clamp(1, th);
    with_scratch(&BUFFERS, |[u, v, m]| {
        grow(u, o * 16 * c);
        grow(v, c * 16 * band_rows * tw);
        grow(m, o * 16 * band_rows * tw);
        transform_weights(weight, &mut u[..o * 16 * c], c);
        for (xb, ob) in x.chunks(c * h * w).zip(out.chunks_mut(o * ho * wo)) {
            for ty0 in (0..th).step_by(band_rows) {
                let rows = band_rows.min(th - ty0);
                let n = rows * tw;
                let geo = Band {
                    h,
                    w,
                    padding,
                    ty0,
                    rows,
                    tw,
                };
                v[..c * 16 * n]
                    .par_chunks_mut(16 * n)
                    .zip(xb.par_chunks(h * w))
                    .for_each(|(vc, xc)| transform_input(xc, vc, &geo));
                for xi in 0..16 {
                    // M_ξ [O, n] = U_ξ [O, C] · V_ξ [C, n], each a strided slice of its buffer.
                    let dst = (&mut m[xi * n..o * 16 * n], Strides::rows(16 * n));
                    let lhs = (&u[xi * c..], Strides::rows(16 * c));
                    let rhs = (&v[xi * n..c * 16 * n], Strides::rows(16 * n));
                    matmul([o, n, c], dst, false, lhs, rhs, 1.0, true);
                }
                ob.par_chunks_mut(ho * wo)
                    .zip(m[..o * 16 * n].par_chunks(16 * n))
                    .enumerate()
                    .for_each(|(oc, (plane, mo))| {
                        let bias = bias.map_or(0.0, |b| b[oc]);
                        transform_output(mo, plane, bias, [ho, wo], &geo);
                    });
            }
        }
    });
}

thread_local! {
    /// Transformed weights, transformed input and products, reused across calls: fresh buffers per
    /// call (page faults on megabytes) cost as much as the arithmetic for small images.
    pub(super) static BUFFERS: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Makes `buf` at least `len` long (its contents are overwritten before they are read).
fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

/// A band of tile rows `ty0..ty0 + rows` (tiles `tw` per row) of an `h × w` input with zero padding.
struct Band {
    h: usize,
    w: usize,
    padding: usize,
    ty0: usize,
    rows: usize,
    tw: usize,
}

/// `U[o][ξ][c] = (G g Gᵀ)[ξ]` for each 3×3 kernel `g = weight[o][c]`.
#[allow(clippy::needless_range_loop)] // the transforms read as their matrices, index by index
fn transform_weights(weight: &[f32], u: &mut [f32], c: usize) {
    u.par_chunks_mut(16 * c)
        .zip(weight.par_chunks(c * 9))
        .for_each(|(uo, wo)| {
            for (ci, g) in wo.chunks(9).enumerate() {
                // G g: 4 rows of 3.
                let mut t = [[0f32; 3]; 4];
                for j in 0..3 {
                    let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
                    t[0][j] = g0;
                    t[1][j] = 0.5 * (g0 + g1 + g2);
                    t[2][j] = 0.5 * (g0 - g1 + g2);
                    t[3][j] = g2;
                }
                // (G g) Gᵀ: each row [a, b, c] → [a, (a+b+c)/2, (a−b+c)/2, c].
                for (i, [a, b, cc]) in t.into_iter().enumerate() {
                    let row = [a, 0.5 * (a + b + cc), 0.5 * (a - b + cc), cc];
                    for (j, val) in row.into_iter().enumerate() {
                        uo[(4 * i + j) * c + ci] = val;
                    }
                }
            }
        });
}

/// `V[ξ][t] = (Bᵀ d B)[ξ]` for the 4×4 input tiles `d` of one channel `xc` (`h × w`) in the band.
#[allow(clippy::needless_range_loop)] // the transforms read as their matrices, index by index
fn transform_input(xc: &[f32], vc: &mut [f32], g: &Band) {
    let n = g.rows * g.tw;
    // Four zero-padded input rows under a tile row: tile tx reads columns 2tx .. 2tx + 4.
    let width = 2 * g.tw + 2;
    let mut lines = vec![0f32; 4 * width];
    for r in 0..g.rows {
        let ty = g.ty0 + r;
        for (k, line) in lines.chunks_mut(width).enumerate() {
            line.fill(0.0);
            let iy = (2 * ty + k) as isize - g.padding as isize;
            if iy < 0 || iy >= g.h as isize {
                continue;
            }
            let src = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
            // Padded column j holds input column j − p.
            let start = g.padding.min(width);
            let len = g.w.min(width - start);
            line[start..start + len].copy_from_slice(&src[..len]);
        }
        let (l0, rest) = lines.split_at(width);
        let (l1, rest) = rest.split_at(width);
        let (l2, l3) = rest.split_at(width);
        for tx in 0..g.tw {
            let col = 2 * tx;
            // Bᵀ d: rows d0 − d2, d1 + d2, d2 − d1, d1 − d3 (4 columns each).
            let mut t = [[0f32; 4]; 4];
            for j in 0..4 {
                let (d0, d1, d2, d3) = (l0[col + j], l1[col + j], l2[col + j], l3[col + j]);
                t[0][j] = d0 - d2;
                t[1][j] = d1 + d2;
                t[2][j] = d2 - d1;
                t[3][j] = d1 - d3;
            }
            let idx = r * g.tw + tx;
            // (Bᵀ d) B: each row [a, b, c, d] → [a − c, b + c, c − b, b − d].
            for (i, [a, b, cc, d]) in t.into_iter().enumerate() {
                let row = [a - cc, b + cc, cc - b, b - d];
                for (j, val) in row.into_iter().enumerate() {
                    vc[(4 * i + j) * n + idx] = val;
                }
            }
        }
    }
}

/// Output rows of the band for one output channel: `Aᵀ M A` per tile (2×2 values), plus `bias`,
/// clipped at the plane's edge (`ho × wo`).
#[allow(clippy::needless_range_loop)] // the transforms read as their matrices, index by index
fn transform_output(mo: &[f32], plane: &mut [f32], bias: f32, [ho, wo]: [usize; 2], g: &Band) {
    let n = g.rows * g.tw;
    for r in 0..g.rows {
        let oy = 2 * (g.ty0 + r);
        for tx in 0..g.tw {
            let idx = r * g.tw + tx;
            let mv = |xi: usize| mo[xi * n + idx];
            // Aᵀ M: rows m0 + m1 + m2 and m1 − m2 − m3.
            let mut t = [[0f32; 4]; 2];
            for j in 0..4 {
                let (m0, m1, m2, m3) = (mv(j), mv(4 + j), mv(8 + j), mv(12 + j));
                t[0][j] = m0 + m1 + m2;
                t[1][j] = m1 - m2 - m3;
            }
            let ox = 2 * tx;
            for (i, [a, b, cc, d]) in t.into_iter().enumerate() {
                if oy + i >= ho {
                    break;
                }
                let row = &mut plane[(oy + i) * wo..(oy + i + 1) * wo];
                row[ox] = a + b + cc + bias;
                if ox + 1 < wo {
                    row[ox + 1] = b - cc - d + bias;
                }
            }
        }
    }
}

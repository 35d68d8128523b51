//! Tiled encoding and decoding, equal to diffusers' `AutoencoderKL` with `enable_tiling()`
//! (`_tiled_encode` / `tiled_decode`): overlapping tiles, each encoded or decoded on its own, blended
//! with linear ramps (`blend_v` then `blend_h`) and cropped. Memory stays bounded by one tile's
//! activations plus two rows of finished tiles, whatever the image size.

use crate::error::{Error, Result};
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// Tile geometry. The defaults ([`Tiling::new`] with diffusers' overlap 0.25) reproduce diffusers'
/// `tile_sample_min_size = sample_size`, `tile_latent_min_size = int(sample_size / 2^(levels−1))`,
/// `tile_overlap_factor = 0.25`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiling {
    /// Tile edge in image pixels (`tile_sample_min_size`).
    pub sample_tile: usize,
    /// Tile edge in latent pixels (`tile_latent_min_size`).
    pub latent_tile: usize,
    /// Fraction of a tile shared with its neighbour (`tile_overlap_factor`).
    pub overlap: f64,
}

impl Tiling {
    /// Tiles of `sample_tile` image pixels for a VAE that down-samples by `downsample_factor`
    /// (8 for SD), with diffusers' overlap of 0.25.
    pub fn new(sample_tile: usize, downsample_factor: usize) -> Self {
        Self {
            sample_tile,
            latent_tile: (sample_tile as f64 / downsample_factor.max(1) as f64) as usize,
            overlap: 0.25,
        }
    }

    /// The same tiles with another overlap fraction (in `[0, 1)`).
    pub fn with_overlap(self, overlap: f64) -> Self {
        Self { overlap, ..self }
    }

    /// Checks the geometry for a VAE that down-samples by `factor`: tiles must advance, and the
    /// stride in one space must equal the kept part of a tile in the other, so the tiles cover the
    /// output exactly. (diffusers does not check this: with e.g. 24-pixel tiles on SD's factor 8 its
    /// tiled decode returns an image of the wrong size. The defaults of every SD VAE pass.)
    pub fn validate(&self, factor: usize) -> Result<()> {
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(Error::Input(format!(
                "tile overlap must be in [0, 1), got {}",
                self.overlap
            )));
        }
        let (s, l, o) = (self.sample_tile, self.latent_tile, self.overlap);
        let bad = |why: String| {
            Err(Error::Input(format!(
                "tiles of {s} image / {l} latent pixels with overlap {o}: {why}; use an image tile that is a multiple of {} (4 × the VAE's factor {factor})",
                factor.saturating_mul(4)
            )))
        };
        if l == 0 || stride(l, o) == 0 || stride(s, o) == 0 {
            return bad("the tiles would not advance".into());
        }
        if l.checked_mul(factor) != Some(s) {
            return bad(format!("the latent tile × {factor} is not the image tile"));
        }
        let keep_s = s - blend_extent(s, o);
        let keep_l = l - blend_extent(l, o);
        if stride(l, o).checked_mul(factor) != Some(keep_s)
            || keep_l.checked_mul(factor) != Some(stride(s, o))
        {
            return bad("the tile stride and the kept part of a tile differ, so the output would have the wrong size".into());
        }
        Ok(())
    }
}

/// Python's `int(tile * overlap)`.
fn blend_extent(tile: usize, overlap: f64) -> usize {
    (tile as f64 * overlap) as usize
}

/// Python's `int(tile * (1 - overlap))`.
fn stride(tile: usize, overlap: f64) -> usize {
    (tile as f64 * (1.0 - overlap)) as usize
}

/// Which direction a blend runs in.
#[derive(Clone, Copy)]
enum Axis {
    /// `blend_v`: along height (dim 2).
    V,
    /// `blend_h`: along width (dim 3).
    H,
}

/// diffusers' `blend_v`/`blend_h`: the first `extent` rows (columns) of `b` become
/// `a_tail·(1 − y/extent) + b·(y/extent)`, where `a_tail` are the last `extent` rows (columns) of `a`.
fn blend<B: Backend>(a: &Tensor<B, 4>, b: Tensor<B, 4>, extent: usize, axis: Axis) -> Tensor<B, 4> {
    let dim = match axis {
        Axis::V => 2,
        Axis::H => 3,
    };
    let la = a.dims()[dim];
    let lb = b.dims()[dim];
    let e = extent.min(la).min(lb);
    if e == 0 {
        return b;
    }
    // PyTorch multiplies float32 tensors by the Python scalars rounded to float32.
    let wa: Vec<f32> = (0..e).map(|y| (1.0 - y as f64 / e as f64) as f32).collect();
    let wb: Vec<f32> = (0..e).map(|y| (y as f64 / e as f64) as f32).collect();
    let shape = match axis {
        Axis::V => [1, 1, e, 1],
        Axis::H => [1, 1, 1, e],
    };
    let device = b.device();
    let wa = Tensor::<B, 4>::from_data(TensorData::new(wa, shape), &device);
    let wb = Tensor::<B, 4>::from_data(TensorData::new(wb, shape), &device);
    let tail = a.clone().narrow(dim, la - e, e);
    let head = b.clone().narrow(dim, 0, e);
    let mixed = tail.mul(wa).add(head.mul(wb));
    if e == lb {
        mixed
    } else {
        Tensor::cat(vec![mixed, b.narrow(dim, e, lb - e)], dim)
    }
}

/// Runs `f` on overlapping tiles of `x` (`in_tile` input pixels, advancing by
/// `int(in_tile·(1 − overlap))`), blends neighbouring outputs over `int(out_tile·overlap)` pixels and
/// keeps the first `out_tile − blend` pixels of each: diffusers' tiling loop. Tiles are blended in
/// row-major order against their already blended upper and left neighbours, as diffusers' in-place
/// blending does.
pub(crate) fn tiled<B: Backend>(
    x: Tensor<B, 4>,
    in_tile: usize,
    out_tile: usize,
    overlap: f64,
    f: impl Fn(Tensor<B, 4>) -> Result<Tensor<B, 4>>,
) -> Result<Tensor<B, 4>> {
    let [_, _, h, w] = x.dims();
    let step = stride(in_tile, overlap);
    if step == 0 || in_tile == 0 {
        return Err(Error::Input(format!(
            "tile of {in_tile} pixels with overlap {overlap} does not advance"
        )));
    }
    let blend_extent = blend_extent(out_tile, overlap);
    let row_limit = out_tile.saturating_sub(blend_extent);
    let mut prev_row: Vec<Tensor<B, 4>> = Vec::new();
    let mut out_rows = Vec::new();
    for i in (0..h).step_by(step) {
        let mut cur_row: Vec<Tensor<B, 4>> = Vec::new();
        let mut cropped = Vec::new();
        for (j, jj) in (0..w).step_by(step).enumerate() {
            let th = in_tile.min(h - i);
            let tw = in_tile.min(w - jj);
            let mut tile = f(x.clone().narrow(2, i, th).narrow(3, jj, tw))?;
            if let Some(up) = prev_row.get(j) {
                tile = blend(up, tile, blend_extent, Axis::V);
            }
            if let Some(left) = cur_row.last() {
                tile = blend(left, tile, blend_extent, Axis::H);
            }
            let [_, _, oh, ow] = tile.dims();
            cropped.push(tile.clone().narrow(2, 0, row_limit.min(oh)).narrow(
                3,
                0,
                row_limit.min(ow),
            ));
            cur_row.push(tile);
        }
        out_rows.push(Tensor::cat(cropped, 3));
        prev_row = cur_row;
    }
    Ok(Tensor::cat(out_rows, 2))
}

//! Training batches rendered on the fly from seeded scenes.

use crate::error::Result;
use selfcascade_shapes::{render_chw, Scene, SceneLabel};

/// SplitMix64 finaliser: a well-mixed 64-bit hash, used to derive independent seeds.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from a run seed and two indices (step, row), independent across all three.
pub fn derive_seed(seed: u64, a: u64, b: u64) -> u64 {
    mix64(mix64(mix64(seed) ^ a) ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// A batch of rendered scenes: images `[batch, 3, size, size]` (row-major) in `[-1, 1]` and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    /// Pixels, `batch · 3 · size · size` values.
    pub images: Vec<f32>,
    /// The label of every image.
    pub labels: Vec<SceneLabel>,
    /// Side of the square images.
    pub size: usize,
}

impl ImageBatch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Renders `batch` random scenes at `size`×`size` for training step `step` of run `seed`. The scene of
/// row `i` is `Scene::sample(derive_seed(seed, step, i))`, so a batch depends only on its arguments.
pub fn render_batch(seed: u64, step: u64, batch: usize, size: u32) -> Result<ImageBatch> {
    let mut images = Vec::with_capacity(batch * 3 * (size as usize).pow(2));
    let mut labels = Vec::with_capacity(batch);
    for i in 0..batch {
        let scene = Scene::sample(derive_seed(seed, step, i as u64));
        images.extend(render_chw(&scene, size, size)?);
        labels.push(scene.label());
    }
    Ok(ImageBatch {
        images,
        labels,
        size: size as usize,
    })
}

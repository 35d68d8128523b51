//! Noise sources: a seeded generator that gives the same numbers on every backend, and injected noise.

use crate::error::{Error, Result};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Supplies the Gaussian noise of a self-cascade run.
pub trait NoiseSource<B: Backend, const D: usize = 4> {
    /// The noise that starts stage `stage`: z_T at stage 0, the re-noising ε of z_K^r at later stages.
    fn stage_noise(
        &mut self,
        stage: usize,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>>;
    /// Fresh noise for a stochastic scheduler step (DDPM, DDIM with η > 0).
    fn step_noise(
        &mut self,
        stage: usize,
        step: usize,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>>;
}

/// `n` standard-normal float32 values from stream `stream` of seed `seed` (ChaCha8, host side, so the
/// numbers are the same on every backend and platform).
pub fn gaussian(seed: u64, stream: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
}

/// Seeded noise. Each stage draws its starting noise from its own stream, and its step noise from
/// another, so changing the number of steps of one stage does not change another stage's noise.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    seed: u64,
    step_rngs: Vec<ChaCha8Rng>,
}

impl SeededNoise {
    /// A noise source for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            step_rngs: Vec::new(),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }
}

fn to_tensor<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

impl<B: Backend, const D: usize> NoiseSource<B, D> for SeededNoise {
    fn stage_noise(
        &mut self,
        stage: usize,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let n = shape.iter().product();
        Ok(to_tensor(
            gaussian(self.seed, 2 * stage as u64, n),
            shape,
            device,
        ))
    }

    fn step_noise(
        &mut self,
        stage: usize,
        _step: usize,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        while self.step_rngs.len() <= stage {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(2 * self.step_rngs.len() as u64 + 1);
            self.step_rngs.push(rng);
        }
        let rng = &mut self.step_rngs[stage];
        let values = (0..shape.iter().product())
            .map(|_| StandardNormal.sample(&mut *rng))
            .collect();
        Ok(to_tensor(values, shape, device))
    }
}

/// One [`SeededNoise`] per batch row: row i of every noise tensor is what `SeededNoise::new(seeds[i])`
/// gives for a batch of one, so a sample does not depend on which other samples share its batch
/// (evaluations compare methods on the same seeds, batched however is fastest).
#[derive(Debug, Clone)]
pub struct PerRowNoise {
    rows: Vec<SeededNoise>,
}

impl PerRowNoise {
    /// A source whose row i is seeded by `seeds[i]`.
    pub fn new(seeds: &[u64]) -> Self {
        Self {
            rows: seeds.iter().map(|s| SeededNoise::new(*s)).collect(),
        }
    }

    fn rows_for<const D: usize>(&self, shape: [usize; D]) -> Result<[usize; D]> {
        if D == 0 || shape[0] != self.rows.len() {
            return Err(Error::Noise(format!(
                "noise of shape {shape:?} asked from a source of {} seeded rows",
                self.rows.len()
            )));
        }
        let mut row = shape;
        row[0] = 1;
        Ok(row)
    }
}

impl<B: Backend, const D: usize> NoiseSource<B, D> for PerRowNoise {
    fn stage_noise(
        &mut self,
        stage: usize,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let row = self.rows_for(shape)?;
        let parts = self
            .rows
            .iter_mut()
            .map(|r| NoiseSource::<B, D>::stage_noise(r, stage, row, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(parts, 0))
    }

    fn step_noise(
        &mut self,
        stage: usize,
        step: usize,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let row = self.rows_for(shape)?;
        let parts = self
            .rows
            .iter_mut()
            .map(|r| NoiseSource::<B, D>::step_noise(r, stage, step, row, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(parts, 0))
    }
}

/// Stage noise given by the caller (e.g. read from a file, tensors `stage0`, `stage1`, …); step noise
/// comes from a seeded source.
#[derive(Debug, Clone)]
pub struct InjectedNoise<B: Backend, const D: usize = 4> {
    stages: Vec<Tensor<B, D>>,
    steps: SeededNoise,
}

impl<B: Backend, const D: usize> InjectedNoise<B, D> {
    /// Uses `stages[r]` as the starting noise of stage r, and `seed` for step noise.
    pub fn new(stages: Vec<Tensor<B, D>>, seed: u64) -> Self {
        Self {
            stages,
            steps: SeededNoise::new(seed),
        }
    }
}

impl<B: Backend, const D: usize> NoiseSource<B, D> for InjectedNoise<B, D> {
    fn stage_noise(
        &mut self,
        stage: usize,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let t = self.stages.get(stage).ok_or_else(|| {
            Error::Noise(format!(
                "no injected noise for stage {stage} (tensor `stage{stage}` of shape {shape:?}); {} given",
                self.stages.len()
            ))
        })?;
        if t.dims() != shape {
            return Err(Error::Noise(format!(
                "injected noise `stage{stage}` has shape {:?}, expected {shape:?}",
                t.dims()
            )));
        }
        Ok(t.clone().to_device(device))
    }

    fn step_noise(
        &mut self,
        stage: usize,
        step: usize,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        NoiseSource::<B, D>::step_noise(&mut self.steps, stage, step, shape, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_is_reproducible_and_standard() {
        let a = gaussian(7, 0, 20000);
        assert_eq!(a, gaussian(7, 0, 20000));
        assert_ne!(a[..10], gaussian(7, 1, 10)[..]);
        let mean = a.iter().map(|v| *v as f64).sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / a.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
    }

    #[test]
    fn per_row_noise_equals_single_seeded_rows() {
        type B = burn::backend::Flex;
        let dev = Default::default();
        let mut rows = PerRowNoise::new(&[3, 9]);
        let both: Tensor<B, 4> = rows.stage_noise(1, [2, 2, 3, 3], &dev).unwrap();
        let step: Tensor<B, 4> = rows.step_noise(1, 0, [2, 2, 3, 3], &dev).unwrap();
        for (i, seed) in [3u64, 9].into_iter().enumerate() {
            let mut one = SeededNoise::new(seed);
            let a: Tensor<B, 4> = one.stage_noise(1, [1, 2, 3, 3], &dev).unwrap();
            let b: Tensor<B, 4> = one.step_noise(1, 0, [1, 2, 3, 3], &dev).unwrap();
            assert_eq!(both.clone().narrow(0, i, 1).into_data(), a.into_data());
            assert_eq!(step.clone().narrow(0, i, 1).into_data(), b.into_data());
        }
        let wrong: Result<Tensor<B, 4>> = rows.stage_noise(0, [3, 2, 3, 3], &dev);
        assert!(wrong.is_err());
    }
}

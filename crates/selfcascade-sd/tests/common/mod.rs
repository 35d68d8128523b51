//! Helpers shared by the UNet and video tests.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use selfcascade_sd::load::TensorStore;

type B = Flex;

/// Tensor `name` of `store`.
#[allow(dead_code)] // not every suite uses every helper
pub fn read<const D: usize>(store: &TensorStore, name: &str) -> Tensor<B, D> {
    let t = store.read(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let shape: [usize; D] = t.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(t.data, shape), &Default::default())
}

/// φ_n(h, temb, size) = c_n · nearest(h, size) + k · mean(temb), the oracles' trivial upsampler
/// (`c = [0.5, −0.25, 0.75, 0.3]`, `k = 0.01` in tools/oracle/unet_hooks.py, unet3d.py and lvdm.py).
pub struct Trivial {
    /// Channels per injection point.
    pub channels: Vec<usize>,
    /// c_n.
    pub c: Vec<f64>,
    /// k.
    pub k: f64,
}

impl Trivial {
    /// The oracles' upsampler for injection points of `channels`.
    #[allow(dead_code)] // not every suite uses every helper
    pub fn oracle(channels: Vec<usize>) -> Self {
        Self {
            channels,
            c: vec![0.5, -0.25, 0.75, 0.3],
            k: 0.01,
        }
    }
}

impl selfcascade_core::FeatureUpsampler<B> for Trivial {
    fn num_points(&self) -> usize {
        self.channels.len()
    }
    fn trainable_parameters(&self) -> usize {
        0
    }
    fn channels(&self, n: usize) -> usize {
        self.channels[n]
    }
    fn upsample(
        &self,
        n: usize,
        features: Tensor<B, 4>,
        temb: Tensor<B, 2>,
        size: (usize, usize),
    ) -> selfcascade_core::Result<Tensor<B, 4>> {
        let rows = temb.dims()[0];
        assert_eq!(rows, features.dims()[0], "one time embedding row per frame");
        let up = selfcascade_sd::unet::resize_nearest(features, size).mul_scalar(self.c[n]);
        Ok(up.add(temb.mean_dim(1).mul_scalar(self.k).reshape([rows, 1, 1, 1])))
    }
}

pub mod byte_tokenizer;

//! A small classifier of the shapes world whose penultimate features stand in for the Inception's in
//! FID/KID (issue 6): the Inception was trained on photographs, this network on the world's own renders.
//!
//! Four 3×3 convolutions (3 → 32 → 64 → 64 → 64 channels, the last three of stride 2, ReLU) on a 32×32
//! input, global average pooling to a 64-d feature, and a linear layer to the 45 scene labels (shape ×
//! object colour × background). Trained on renders of random scenes at 32², 64² and 128² brought to 32²
//! by the same Pillow-exact bicubic resize that prepares the images it scores, so features do not depend
//! on the resolution an image was made at, only on what it shows. Images of several objects, or of an
//! object at the wrong scale, fall outside what it saw in training, which is what FID then measures.

use crate::data::derive_seed;
use crate::error::Result;
use crate::train::pytorch_adamw;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{
    activation::relu, backend::AutodiffBackend, backend::Backend, ElementConversion, Int, Tensor,
    TensorData,
};
use selfcascade_eval::features::FeatureNet;
use selfcascade_eval::resize::Preprocess;
use selfcascade_sd::load::{TensorStore, Vb, Weights};
use selfcascade_sd::nn::{Conv2d, Linear};
use selfcascade_shapes::{render, RgbImage, Scene, SceneLabel};
use std::path::Path;

/// Side of the classifier's square input.
pub const CLASSIFIER_SIZE: usize = 32;
/// Length of its feature vector.
pub const CLASSIFIER_DIM: usize = 64;
/// Number of classes (scene labels).
pub const CLASSIFIER_CLASSES: usize = 45;

/// How the embedded classifier is named in feature caches and messages.
pub const DEFAULT_CLASSIFIER_NAME: &str = "embedded:shapes-classifier";
/// The embedded classifier's weights (`train_shapes_classifier` example).
pub static DEFAULT_CLASSIFIER_BYTES: &[u8] =
    include_bytes!("../assets/shapes-classifier.safetensors");

/// The classifier (parameter names `conv_in`, `down.{0,1,2}`, `head`).
#[derive(Module, Debug)]
pub struct ShapesClassifier<B: Backend> {
    conv_in: Conv2d<B>,
    down: Vec<Conv2d<B>>,
    head: Linear<B>,
}

impl<B: Backend> ShapesClassifier<B> {
    /// Builds the network from `vb` (loaded, or seeded random initialisation).
    pub fn new(vb: &Vb<B>) -> Result<Self> {
        let down = [(32, 64), (64, 64), (64, CLASSIFIER_DIM)]
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout))| Conv2d::new(&vb.pp(format!("down.{i}")), cin, cout, 3, 2, 1))
            .collect::<selfcascade_sd::Result<Vec<_>>>()?;
        Ok(Self {
            conv_in: Conv2d::new(&vb.pp("conv_in"), 3, 32, 3, 1, 1)?,
            down,
            head: Linear::new(&vb.pp("head"), CLASSIFIER_DIM, CLASSIFIER_CLASSES, true)?,
        })
    }

    /// A freshly initialised network.
    pub fn random(seed: u64, device: &B::Device) -> Result<Self> {
        Self::new(&Weights::random(seed).root(device))
    }

    /// The embedded trained classifier.
    pub fn embedded(device: &B::Device) -> Result<Self> {
        let store = TensorStore::from_static(DEFAULT_CLASSIFIER_NAME, DEFAULT_CLASSIFIER_BYTES)?;
        let weights = Weights::from_store(store);
        let net = Self::new(&weights.root(device))?;
        weights.finish()?;
        Ok(net)
    }

    /// Features `[N, 64]` of images `[N, 3, 32, 32]` in [−1, 1].
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = relu(self.conv_in.forward(x));
        let x = self.down.iter().fold(x, |x, c| relu(c.forward(x)));
        let [n, c, _, _] = x.dims();
        x.mean_dim(3).mean_dim(2).reshape([n, c])
    }

    /// Class logits `[N, 45]` (index = [`SceneLabel::index`]).
    pub fn logits(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.head.forward(self.features(x))
    }

    /// Writes the weights as safetensors (PyTorch layouts: conv `[out, in, k, k]`, linear `[out, in]`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors = crate::checkpoint::named_parameters(self);
        let metadata = [(
            "format".to_string(),
            "selfcascade-shapes-classifier".to_string(),
        )]
        .into();
        crate::checkpoint::write_tensors(path, tensors, metadata, crate::Precision::F32)
    }
}

/// An image as the classifier's input: resized to 32×32 (clean-fid's bicubic), values in [−1, 1].
pub fn classifier_input(img: &RgbImage) -> Vec<f32> {
    Preprocess::Clean
        .apply(img, CLASSIFIER_SIZE)
        .into_iter()
        .map(|v| v / 127.5 - 1.0)
        .collect()
}

/// Seed stream of the classifier's training scenes.
const STREAM: u64 = 0xC1A5_51F1;

/// A training batch: scenes of step `step` rendered at 32², 64² or 128² and resized to the input.
pub fn classifier_batch(seed: u64, step: usize, batch: usize) -> Result<(Vec<f32>, Vec<usize>)> {
    let mut pixels = Vec::with_capacity(batch * 3 * CLASSIFIER_SIZE * CLASSIFIER_SIZE);
    let mut labels = Vec::with_capacity(batch);
    for i in 0..batch {
        let s = derive_seed(seed ^ STREAM, step as u64, i as u64);
        let scene = Scene::sample(s);
        let side = [32u32, 64, 128][(s % 3) as usize];
        let img = render(&scene, side, side)?;
        pixels.extend(classifier_input(&img));
        labels.push(scene.label().index());
    }
    Ok((pixels, labels))
}

/// Training settings of the classifier.
#[derive(Debug, Clone, Copy)]
pub struct ClassifierTrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Scenes per step.
    pub batch_size: usize,
    /// AdamW learning rate (no weight decay).
    pub learning_rate: f64,
    /// Seed of the initialisation and the scenes.
    pub seed: u64,
}

impl Default for ClassifierTrainConfig {
    fn default() -> Self {
        Self {
            steps: 1500,
            batch_size: 32,
            learning_rate: 3e-3,
            seed: 0,
        }
    }
}

/// Trains a classifier from scratch; `progress(step, loss, batch accuracy)` after every step.
pub fn train_classifier<B: AutodiffBackend>(
    config: &ClassifierTrainConfig,
    device: &B::Device,
    progress: &mut dyn FnMut(usize, f32, f32),
) -> Result<ShapesClassifier<B>> {
    let mut model = ShapesClassifier::<B>::random(config.seed, device)?;
    let mut optim = pytorch_adamw(0.0).init::<B, ShapesClassifier<B>>();
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let s = CLASSIFIER_SIZE;
    for step in 0..config.steps {
        let (pixels, labels) = classifier_batch(config.seed, step, config.batch_size)?;
        let n = labels.len();
        let x = Tensor::<B, 4>::from_data(TensorData::new(pixels, [n, 3, s, s]), device);
        let targets = Tensor::<B, 1, Int>::from_data(
            TensorData::new(labels.iter().map(|&l| l as i64).collect::<Vec<_>>(), [n]),
            device,
        );
        let logits = model.logits(x);
        let predicted = logits.clone().argmax(1).reshape([n]);
        let correct = predicted
            .equal(targets.clone())
            .int()
            .sum()
            .into_scalar()
            .elem::<i64>();
        let loss = loss_fn.forward(logits, targets);
        let value = loss.clone().into_scalar().elem::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        // Cosine decay to a tenth keeps the last steps from undoing the fit.
        let t = step as f64 / config.steps.max(1) as f64;
        let lr = config.learning_rate * (0.55 + 0.45 * (std::f64::consts::PI * t).cos());
        model = optim.step(lr, model, grads);
        progress(step + 1, value, correct as f32 / n as f32);
    }
    Ok(model)
}

/// Accuracy of `model` on `n` fresh renders at `side` (seeds disjoint from training's).
pub fn classifier_accuracy<B: Backend>(
    model: &ShapesClassifier<B>,
    side: u32,
    n: usize,
    device: &B::Device,
) -> Result<f64> {
    let mut correct = 0;
    for i in 0..n {
        let scene = Scene::sample(derive_seed(STREAM, u64::MAX, i as u64));
        let img = render(&scene, side, side)?;
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(
                classifier_input(&img),
                [1, 3, CLASSIFIER_SIZE, CLASSIFIER_SIZE],
            ),
            device,
        );
        let p = model.logits(x).argmax(1).into_scalar().elem::<i64>() as usize;
        correct += usize::from(SceneLabel::from_index(p) == Some(scene.label()));
    }
    Ok(correct as f64 / n.max(1) as f64)
}

/// The classifier as a [`FeatureNet`] for `selfcascade-eval`'s FID/KID.
pub struct ClassifierFeatures<B: Backend> {
    net: ShapesClassifier<B>,
    device: B::Device,
    id: String,
}

impl<B: Backend> ClassifierFeatures<B> {
    /// Wraps `net`; `id` names its weights in feature caches.
    pub fn new(net: ShapesClassifier<B>, device: &B::Device, id: &str) -> Self {
        Self {
            net,
            device: device.clone(),
            id: id.to_string(),
        }
    }

    /// The embedded classifier.
    pub fn embedded(device: &B::Device) -> Result<Self> {
        Ok(Self::new(
            ShapesClassifier::embedded(device)?,
            device,
            DEFAULT_CLASSIFIER_NAME,
        ))
    }
}

impl<B: Backend> FeatureNet for ClassifierFeatures<B> {
    fn id(&self) -> String {
        format!("shapes-classifier:{}", self.id)
    }

    fn input_size(&self) -> usize {
        CLASSIFIER_SIZE
    }

    fn dim(&self) -> usize {
        CLASSIFIER_DIM
    }

    fn features(&self, pixels: Vec<f32>, n: usize) -> selfcascade_eval::Result<Vec<f32>> {
        let s = CLASSIFIER_SIZE;
        let x: Vec<f32> = pixels.into_iter().map(|v| v / 127.5 - 1.0).collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(x, [n, 3, s, s]), &self.device);
        self.net
            .features(x)
            .into_data()
            .to_vec::<f32>()
            .map_err(|e| selfcascade_eval::Error::Numeric(format!("classifier features: {e:?}")))
    }
}

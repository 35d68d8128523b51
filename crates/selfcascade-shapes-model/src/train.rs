//! Training the shapes model: DDPM ε-prediction with AdamW, warm-up, label dropout and EMA.

use crate::checkpoint::save_checkpoint;
use crate::config::ShapesModelConfig;
use crate::data::{derive_seed, render_batch, ImageBatch};
use crate::ema::Ema;
use crate::error::{Error, Result};
use crate::model::ShapesModel;
use crate::schedule::NoiseSchedule;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use selfcascade_shapes::SceneLabel;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Hyper-parameters of a training run. The defaults are the reference run of issue 6.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Seed of everything random: initial weights, scenes, timesteps, noise, label dropout.
    pub seed: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Steps of linear warm-up from `learning_rate / warmup_steps` to `learning_rate` (then constant).
    pub warmup_steps: u64,
    /// AdamW decoupled weight decay (PyTorch's default 0.01).
    pub weight_decay: f64,
    /// Target EMA decay.
    pub ema_decay: f64,
    /// Probability of replacing a label by the null label (classifier-free guidance training).
    pub label_dropout: f64,
    /// Side of the rendered training images; `None`: the model's base `image_size`. A larger side
    /// fine-tunes the model at a higher resolution (the paper's full fine-tuning baseline).
    #[serde(default)]
    pub image_size: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            steps: 1500,
            batch_size: 32,
            learning_rate: 1e-3,
            warmup_steps: 100,
            weight_decay: 0.01,
            ema_decay: 0.999,
            label_dropout: 0.1,
            image_size: None,
        }
    }
}

impl TrainConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 {
            return bad("batch_size must be positive".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning_rate = {} must be positive",
                self.learning_rate
            ));
        }
        if !(0.0..=1.0).contains(&self.label_dropout) {
            return bad(format!(
                "label_dropout = {} must lie in [0, 1]",
                self.label_dropout
            ));
        }
        if !(0.0..=1.0).contains(&self.ema_decay) {
            return bad(format!("ema_decay = {} must lie in [0, 1]", self.ema_decay));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay = {} must be ≥ 0", self.weight_decay));
        }
        Ok(())
    }

    /// Learning rate of (0-based) step `step`: linear warm-up, then constant.
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        if self.warmup_steps == 0 || step >= self.warmup_steps {
            self.learning_rate
        } else {
            self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64
        }
    }
}

/// burn's AdamW configured with PyTorch's defaults (β = 0.9/0.999, ε = 1e-8) and `weight_decay`
/// (burn's own defaults are ε = 1e-5 and weight decay 1e-4).
pub fn pytorch_adamw(weight_decay: f64) -> AdamWConfig {
    AdamWConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.999)
        .with_epsilon(1e-8)
        .with_weight_decay(weight_decay as f32)
}

/// A noised training batch: network input, target noise, timesteps and (possibly dropped) labels.
#[derive(Debug, Clone)]
pub struct NoisedBatch<B: Backend> {
    /// x_t `[B, 3, H, W]`.
    pub noisy: Tensor<B, 4>,
    /// ε `[B, 3, H, W]`.
    pub noise: Tensor<B, 4>,
    /// t of every row.
    pub timesteps: Vec<usize>,
    /// Labels after dropout (`None` = null label).
    pub labels: Vec<Option<SceneLabel>>,
}

/// Noises `batch` with randomness from `rng`: t ~ U{0..T−1}, ε ~ N(0, I), label dropped with
/// probability `label_dropout`.
pub fn noise_batch<B: Backend>(
    batch: &ImageBatch,
    schedule: &NoiseSchedule,
    label_dropout: f64,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
) -> NoisedBatch<B> {
    let b = batch.len();
    let s = batch.size;
    let timesteps: Vec<usize> = (0..b)
        .map(|_| rng.random_range(0..schedule.len()))
        .collect();
    let labels: Vec<Option<SceneLabel>> = batch
        .labels
        .iter()
        .map(|l| (rng.random::<f64>() >= label_dropout).then_some(*l))
        .collect();
    let eps: Vec<f32> = (0..batch.images.len())
        .map(|_| StandardNormal.sample(&mut *rng))
        .collect();
    let x0 = Tensor::<B, 4>::from_data(TensorData::new(batch.images.clone(), [b, 3, s, s]), device);
    let noise = Tensor::<B, 4>::from_data(TensorData::new(eps, [b, 3, s, s]), device);
    let noisy = schedule.add_noise(x0, noise.clone(), &timesteps);
    NoisedBatch {
        noisy,
        noise,
        timesteps,
        labels,
    }
}

/// ε-prediction MSE of `model` on `batch`.
pub fn epsilon_loss<B: Backend>(
    model: &ShapesModel<B>,
    batch: &NoisedBatch<B>,
) -> Result<Tensor<B, 1>> {
    let t: Vec<f64> = batch.timesteps.iter().map(|t| *t as f64).collect();
    let pred = model.forward(batch.noisy.clone(), &t, &batch.labels)?;
    Ok(pred.sub(batch.noise.clone()).square().mean())
}

/// One step's record.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based count of steps taken after this one.
    pub step: u64,
    /// Training loss of the step's batch (before the update).
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Wall time of the step in seconds.
    pub seconds: f64,
}

/// The training state: model, optimizer, EMA, schedule and step counter. Deterministic given
/// [`TrainConfig::seed`]: step `k` renders `render_batch(seed, k, …)` and draws its timesteps, noise and
/// dropout from a generator seeded by `(seed, k)`.
pub struct Trainer<B: AutodiffBackend> {
    model: ShapesModel<B>,
    optim: OptimizerAdaptor<AdamW, ShapesModel<B>, B>,
    ema: Ema<ShapesModel<B::InnerBackend>>,
    schedule: NoiseSchedule,
    config: TrainConfig,
    step: u64,
    device: B::Device,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// A fresh run: weights initialised from `config.seed`.
    pub fn new(
        model_config: &ShapesModelConfig,
        config: TrainConfig,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        let model =
            ShapesModel::<B>::random(model_config, derive_seed(config.seed, u64::MAX, 0), device)?;
        Self::from_model(model, config, device)
    }

    /// Continues training `model` (optimizer state starts fresh, EMA starts at `model`).
    pub fn from_model(
        model: ShapesModel<B>,
        config: TrainConfig,
        device: &B::Device,
    ) -> Result<Self> {
        config.validate()?;
        let align = model.config().downsampling_factor();
        if let Some(side) = config.image_size.filter(|s| *s == 0 || s % align != 0) {
            return Err(Error::Config(format!(
                "image_size = {side}: the training side must be a positive multiple of {align}"
            )));
        }
        let ema = Ema::new(model.valid(), config.ema_decay);
        Ok(Self {
            optim: pytorch_adamw(config.weight_decay).init(),
            model,
            ema,
            schedule: NoiseSchedule::scaled_linear()?,
            config,
            step: 0,
            device: device.clone(),
        })
    }

    /// The model being trained.
    pub fn model(&self) -> &ShapesModel<B> {
        &self.model
    }

    /// The EMA of the weights (what should be shipped).
    pub fn ema(&self) -> &ShapesModel<B::InnerBackend> {
        self.ema.model()
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The run's configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The noise schedule.
    pub fn schedule(&self) -> &NoiseSchedule {
        &self.schedule
    }

    /// The noised batch of step `step` (rendering, timesteps, noise and dropout), as training uses it.
    pub fn batch_for_step<BB: Backend>(
        &self,
        step: u64,
        device: &BB::Device,
    ) -> Result<NoisedBatch<BB>> {
        let size = self
            .config
            .image_size
            .unwrap_or(self.model.config().image_size) as u32;
        let images = render_batch(self.config.seed, step, self.config.batch_size, size)?;
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.config.seed, step, u64::MAX));
        Ok(noise_batch(
            &images,
            &self.schedule,
            self.config.label_dropout,
            &mut rng,
            device,
        ))
    }

    /// Takes one optimizer step and returns its record.
    pub fn step(&mut self) -> Result<StepRecord> {
        let start = Instant::now();
        let batch = self.batch_for_step::<B>(self.step, &self.device)?;
        let loss = epsilon_loss(&self.model, &batch)?;
        let loss_value: f32 = loss.clone().into_scalar().elem();
        if !loss_value.is_finite() {
            return Err(Error::Config(format!(
                "the loss became {loss_value} at step {}; lower the learning rate",
                self.step
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let lr = self.config.learning_rate_at(self.step);
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.ema.update(&self.model.valid());
        self.step += 1;
        Ok(StepRecord {
            step: self.step,
            loss: loss_value,
            lr,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Saves the EMA weights (`ema = true`) or the raw weights to `path` (atomically).
    pub fn save(&self, path: &Path, ema: bool) -> Result<()> {
        let train = serde_json::to_string(&self.config)
            .map_err(|e| Error::Config(format!("cannot encode the training config: {e}")))?;
        let extra = [
            ("weights", if ema { "ema" } else { "raw" }.to_string()),
            ("train_config", train),
        ];
        if ema {
            save_checkpoint(path, self.ema.model(), self.step, &extra)
        } else {
            save_checkpoint(path, &self.model.valid(), self.step, &extra)
        }
    }
}

/// Options of [`train`].
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output folder: `model.safetensors` (EMA), `model-raw.safetensors`, `loss.csv`.
    pub out_dir: PathBuf,
    /// Write checkpoints every this many steps (0: only at the end).
    pub checkpoint_every: u64,
}

/// Runs a whole training: `config.steps` steps, appending `step,loss,lr,seconds` to `loss.csv` in
/// `out_dir` and saving checkpoints; `on_step` sees every record. Returns the trainer at the end.
pub fn train<B: AutodiffBackend>(
    model_config: &ShapesModelConfig,
    config: TrainConfig,
    options: &RunOptions,
    device: &B::Device,
    mut on_step: impl FnMut(&StepRecord),
) -> Result<Trainer<B>> {
    let dir = &options.out_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let log_path = dir.join("loss.csv");
    let mut log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    writeln!(log, "step,loss,lr,seconds").map_err(|e| Error::io(&log_path, e))?;
    let mut trainer = Trainer::<B>::new(model_config, config, device)?;
    let save = |t: &Trainer<B>| -> Result<()> {
        t.save(&dir.join("model.safetensors"), true)?;
        t.save(&dir.join("model-raw.safetensors"), false)
    };
    while trainer.step_count() < trainer.config().steps {
        let rec = trainer.step()?;
        writeln!(
            log,
            "{},{},{},{:.4}",
            rec.step, rec.loss, rec.lr, rec.seconds
        )
        .map_err(|e| Error::io(&log_path, e))?;
        on_step(&rec);
        if options.checkpoint_every > 0 && rec.step.is_multiple_of(options.checkpoint_every) {
            log.flush().map_err(|e| Error::io(&log_path, e))?;
            save(&trainer)?;
        }
    }
    log.flush().map_err(|e| Error::io(&log_path, e))?;
    save(&trainer)?;
    Ok(trainer)
}

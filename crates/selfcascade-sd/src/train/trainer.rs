//! The training step of Algorithm 1 and the run around it: checkpoints with exact resume, loss log.

use super::config::UpsamplerTrainConfig;
use super::data::TrainingSet;
use super::model::FrozenUNet;
use crate::error::{Error, Result};
use crate::unet::{PivotInjection, UNet2DConditionModel, UNetHooks};
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsParams, MultiGradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, DeviceOps};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use selfcascade_core::scheduler::{PredictionType, SchedulerConfig};
use selfcascade_core::FeatureUpsampler;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a trainable upsampler must offer besides being a burn module and a [`FeatureUpsampler`]:
/// saving its weights in the project's format (and, where the architecture has one, the release's).
pub trait UpsamplerFile {
    /// Saves the weights as safetensors (loadable by the type's `load_safetensors`).
    fn save_safetensors(&self, path: &Path) -> Result<()>;
    /// Saves the weights in the released code's format when the architecture has one (the ResBlock
    /// upsamplers' `upsampler_only.pth`); returns whether it wrote a file.
    fn save_release(&self, _path: &Path) -> Result<bool> {
        Ok(false)
    }
}

/// One completed optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// Steps completed, this one included (1 after the first step).
    pub step: u64,
    /// The ε-MSE loss of the step's batch (mean over every element).
    pub loss: f64,
    /// The learning rate used.
    pub learning_rate: f64,
    /// The timestep of each example.
    pub timesteps: Vec<usize>,
    /// Which examples were trained on the empty caption.
    pub dropped: Vec<bool>,
}

/// The draws of one step, a function of (seed, step) only: which examples, their timesteps, whether
/// their caption is dropped, and the noise ε.
#[derive(Debug, Clone, PartialEq)]
pub struct StepDraws {
    /// Indices into the training set.
    pub examples: Vec<usize>,
    /// t per example.
    pub timesteps: Vec<usize>,
    /// Caption dropped per example.
    pub dropped: Vec<bool>,
    /// ε, row-major `[batch·F, C, H, W]` (F frames per example).
    pub noise: Vec<f32>,
}

/// Trains the feature upsamplers Φ of the tuned self-cascade (Algorithm 1): the UNet is frozen
/// (its parameters require no gradient and are never given to the optimizer), only `U` learns.
///
/// Each step draws a batch, t ~ `config.timesteps`, ε ~ N(0, I), forms
/// z_t = sqrt(ᾱ_t)·z₀ʳ + sqrt(1 − ᾱ_t)·ε from the clean high-resolution latent z₀ʳ, runs the UNet with
/// the clean pivot z₀^{r−1} injected through Φ ([`PivotInjection`]) and minimises the MSE between its
/// output and the target of the scheduler's prediction type (ε; v for v-prediction models).
///
/// Everything random is drawn from a ChaCha8 stream selected by the step number, so the run is a
/// function of (seed, data, step) and a run resumed from a checkpoint continues exactly.
///
/// `M` is the frozen UNet: the image UNet by default, or a [`crate::pipeline::VideoUNet`], which trains
/// on clips (one timestep, caption and pivot clip per example; the upsamplers see every frame).
pub struct UpsamplerTrainer<
    A: AutodiffBackend,
    U: AutodiffModule<A>,
    M: FrozenUNet<A> = UNet2DConditionModel<A>,
> {
    unet: M,
    upsampler: U,
    optimizer: OptimizerAdaptor<AdamW, U, A>,
    alphas_cumprod: Vec<f64>,
    prediction: PredictionType,
    config: UpsamplerTrainConfig,
    step: u64,
    device: A::Device,
    /// Data-parallel replicas of the frozen UNet, one per device ([`Self::set_devices`]).
    replicas: Vec<(M, A::Device)>,
}

/// `state.json` of a checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    format: String,
    step: u64,
    config: UpsamplerTrainConfig,
}

const CHECKPOINT_FORMAT: &str = "selfcascade-upsampler-training/1";
type Rec = NamedMpkFileRecorder<FullPrecisionSettings>;

impl<A, U, M> UpsamplerTrainer<A, U, M>
where
    A: AutodiffBackend,
    U: AutodiffModule<A> + FeatureUpsampler<A> + UpsamplerFile,
    M: FrozenUNet<A>,
{
    /// A trainer at step 0. `unet` is frozen here (`no_grad`); `upsampler` must match its injection
    /// points; `scheduler` gives ᾱ and the prediction type.
    pub fn new(
        unet: M,
        upsampler: U,
        scheduler: &SchedulerConfig,
        config: UpsamplerTrainConfig,
        device: &A::Device,
    ) -> Result<Self> {
        config.validate()?;
        unet.check_feature_upsampler(&upsampler)?;
        let betas = scheduler.betas()?;
        config.timesteps.bounds(betas.len())?;
        let alphas_cumprod = selfcascade_core::scheduler::betas::alphas_cumprod(&betas)
            .into_iter()
            .map(f64::from)
            .collect();
        Ok(Self {
            unet: unet.frozen(),
            upsampler,
            optimizer: config.optimizer().init(),
            alphas_cumprod,
            prediction: scheduler.prediction(),
            config,
            step: 0,
            device: device.clone(),
            replicas: Vec::new(),
        })
    }

    /// Steps completed.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// The run's settings.
    pub fn config(&self) -> &UpsamplerTrainConfig {
        &self.config
    }

    /// The upsampler being trained.
    pub fn upsampler(&self) -> &U {
        &self.upsampler
    }

    /// The frozen UNet.
    pub fn unet(&self) -> &M {
        &self.unet
    }

    /// The trained upsampler, leaving the trainer.
    pub fn into_upsampler(self) -> U {
        self.upsampler
    }

    /// The draws of (0-based) step `step` for a set of `len` examples whose latents have `shape`
    /// `[F, C, H, W]` ([`TrainingSet::latent_shape`]): an epoch-wise permutation of the examples (a new
    /// one per epoch), then per example t, the caption dropout coin and ε.
    pub fn draws(&self, step: u64, len: usize, shape: [usize; 4]) -> Result<StepDraws> {
        let b = self.config.batch_size;
        if len == 0 {
            return Err(Error::Input("the training set has no examples".into()));
        }
        let (t_min, t_max) = self.config.timesteps.bounds(self.alphas_cumprod.len())?;
        let epoch_order = |epoch: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
            rng.set_stream(u64::MAX - epoch);
            let mut order: Vec<usize> = (0..len).collect();
            for i in (1..len).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            order
        };
        // A batch spans one epoch, or two at an epoch boundary: each permutation is made once.
        let mut order: Option<(u64, Vec<usize>)> = None;
        let examples = (0..b as u64)
            .map(|i| {
                let pos = step * b as u64 + i;
                let epoch = pos / len as u64;
                if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
                    order = Some((epoch, epoch_order(epoch)));
                }
                order
                    .as_ref()
                    .map_or(0, |(_, o)| o[(pos % len as u64) as usize])
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(step);
        let timesteps = (0..b).map(|_| rng.random_range(t_min..=t_max)).collect();
        let dropped = (0..b)
            .map(|_| rng.random::<f64>() < self.config.caption_dropout)
            .collect();
        let n = b * shape.iter().product::<usize>();
        let noise = (0..n)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect::<Vec<f32>>();
        Ok(StepDraws {
            examples,
            timesteps,
            dropped,
            noise,
        })
    }

    /// The loss of Algorithm 1 for `draws` on `data`, as a graph whose gradients reach Φ.
    pub fn loss(
        &self,
        data: &TrainingSet<A::InnerBackend>,
        draws: &StepDraws,
    ) -> Result<Tensor<A, 1>> {
        self.loss_on(&self.unet, &self.upsampler, &self.device, data, draws)
    }

    /// The loss with a given replica of the UNet and Φ on `device`.
    fn loss_on(
        &self,
        unet: &M,
        upsampler: &U,
        device: &A::Device,
        data: &TrainingSet<A::InnerBackend>,
        draws: &StepDraws,
    ) -> Result<Tensor<A, 1>> {
        self.check_draws(data, draws)?;
        let [f, c, h, w] = data.latent_shape()?;
        let b = draws.examples.len();
        let lift = |t: Tensor<A::InnerBackend, 4>| Tensor::<A, 4>::from_inner(t.to_device(device));
        let pick = |f: &dyn Fn(usize) -> Tensor<A::InnerBackend, 4>| {
            lift(Tensor::cat(
                draws.examples.iter().map(|&i| f(i)).collect(),
                0,
            ))
        };
        let x0 = pick(&|i| data.examples[i].latent.clone());
        let pivot = pick(&|i| data.examples[i].pivot.clone());
        let conditioning: Vec<_> = draws
            .examples
            .iter()
            .zip(&draws.dropped)
            .map(|(&i, &dropped)| data.conditioning(i, dropped))
            .collect::<Result<_>>()?;
        let context = Tensor::<A, 3>::from_inner(
            Tensor::cat(conditioning.iter().map(|c| c.context.clone()).collect(), 0)
                .to_device(device),
        );
        let added = conditioning
            .iter()
            .map(|c| c.added.clone())
            .collect::<Option<Vec<_>>>()
            .map(|rows| {
                let (texts, ids): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
                let lift2 = |v: Vec<Tensor<A::InnerBackend, 2>>| {
                    Tensor::<A, 2>::from_inner(Tensor::cat(v, 0).to_device(device))
                };
                (lift2(texts), lift2(ids))
            });
        let noise = Tensor::<A, 4>::from_data(
            TensorData::new(draws.noise.clone(), [b * f, c, h, w]),
            device,
        );
        // A per-example coefficient, repeated for each of the example's frames.
        let column = |g: &dyn Fn(f64) -> f64| {
            let v: Vec<f32> = draws
                .timesteps
                .iter()
                .flat_map(|&t| std::iter::repeat_n(g(self.alphas_cumprod[t]) as f32, f))
                .collect();
            Tensor::<A, 4>::from_data(TensorData::new(v, [b * f, 1, 1, 1]), device)
        };
        let sqrt_a = column(&|a| a.sqrt());
        let sqrt_1ma = column(&|a| (1.0 - a).sqrt());
        let noisy = x0.clone().mul(sqrt_a.clone()) + noise.clone().mul(sqrt_1ma.clone());
        let target = match self.prediction {
            PredictionType::Epsilon => noise,
            PredictionType::VPrediction => noise.mul(sqrt_a) - x0.mul(sqrt_1ma),
            PredictionType::Sample => x0,
        };
        let timesteps: Vec<f64> = draws.timesteps.iter().map(|&t| t as f64).collect();
        let hooks = UNetHooks {
            pivot: Some(PivotInjection {
                latent: pivot,
                upsampler,
            }),
            ..Default::default()
        };
        let prediction = unet.predict(noisy, f, &timesteps, context, added, &hooks)?;
        Ok((prediction - target).square().mean())
    }

    /// Errors unless `data` fits the UNet and `draws` fit `data`: examples in range, one timestep in
    /// the schedule and one dropout flag per example, ε of the batch's latent size.
    fn check_draws(&self, data: &TrainingSet<A::InnerBackend>, draws: &StepDraws) -> Result<()> {
        data.check(&self.unet)?;
        let b = draws.examples.len();
        let per_row: usize = data.latent_shape()?.iter().product();
        let k = self.alphas_cumprod.len();
        let bad = |m: String| Err(Error::Input(format!("step draws: {m}")));
        if b == 0 {
            return bad("no examples".into());
        }
        if let Some(i) = draws.examples.iter().find(|&&i| i >= data.examples.len()) {
            return bad(format!("example {i} of a set of {}", data.examples.len()));
        }
        if draws.timesteps.len() != b || draws.dropped.len() != b {
            return bad(format!(
                "{} timesteps and {} dropout flags for {b} examples",
                draws.timesteps.len(),
                draws.dropped.len()
            ));
        }
        if let Some(t) = draws.timesteps.iter().find(|&&t| t >= k) {
            return bad(format!("timestep {t} outside the schedule's 0..{k}"));
        }
        if draws.noise.len() != b * per_row {
            return bad(format!(
                "{} noise values; {b} examples of {per_row} need {}",
                draws.noise.len(),
                b * per_row
            ));
        }
        Ok(())
    }

    /// Trains data-parallel over `devices` (burn's multi-device optimizer step): each step's batch is
    /// split into contiguous shards, one per device; each device runs its own replica of the frozen
    /// UNet and of Φ on its shard, with the shard's loss weighted by its share of the batch, and the
    /// optimizer sums the gradients (= the gradient of the whole batch's mean loss). With one device,
    /// the UNet and Φ move there and train as usual. Call before the first step.
    pub fn set_devices(&mut self, devices: Vec<A::Device>) -> Result<()> {
        if devices.is_empty() {
            return Err(Error::Input(
                "data-parallel training needs at least one device".into(),
            ));
        }
        if devices.len() > self.config.batch_size {
            return Err(Error::Input(format!(
                "{} devices for a batch of {}: every device needs at least one example",
                devices.len(),
                self.config.batch_size
            )));
        }
        if let [device] = devices.as_slice() {
            self.unet = self.unet.clone().fork(device);
            self.upsampler = self.upsampler.clone().fork(device);
            self.device = device.clone();
            self.replicas.clear();
            return Ok(());
        }
        self.replicas = devices
            .into_iter()
            .map(|d| (self.unet.clone().fork(&d), d))
            .collect();
        Ok(())
    }

    /// Runs one optimizer step on `data` with the draws of the current step ([`Self::draws`]).
    pub fn step(&mut self, data: &TrainingSet<A::InnerBackend>) -> Result<StepReport> {
        let draws = self.draws(self.step, data.examples.len(), data.latent_shape()?)?;
        self.step_with(data, draws)
    }

    /// Runs one optimizer step on `data` with explicit `draws` (examples, timesteps, dropout, noise).
    pub fn step_with(
        &mut self,
        data: &TrainingSet<A::InnerBackend>,
        draws: StepDraws,
    ) -> Result<StepReport> {
        let lr = self.config.learning_rate;
        let check = |value: f64, step: u64| {
            if value.is_finite() {
                Ok(value)
            } else {
                Err(Error::Input(format!(
                    "the loss of step {step} is {value}; lower the learning rate or check the data"
                )))
            }
        };
        let value = if self.replicas.len() <= 1 {
            let loss = self.loss(data, &draws)?;
            let value = check(loss.clone().into_scalar().elem(), self.step + 1)?;
            let grads = GradientsParams::from_grads(loss.backward(), &self.upsampler);
            self.upsampler = self.optimizer.step(lr, self.upsampler.clone(), grads);
            value
        } else {
            self.check_draws(data, &draws)?;
            let b = draws.examples.len();
            let per_row = draws.noise.len() / b;
            let n = self.replicas.len();
            if b < n {
                return Err(Error::Input(format!(
                    "{b} examples for {n} devices: every device needs at least one"
                )));
            }
            let mut multi = MultiGradientsParams::default();
            let mut losses = Vec::with_capacity(n);
            for (k, (unet, device)) in self.replicas.iter().enumerate() {
                let (lo, hi) = (k * b / n, (k + 1) * b / n);
                let shard = StepDraws {
                    examples: draws.examples[lo..hi].to_vec(),
                    timesteps: draws.timesteps[lo..hi].to_vec(),
                    dropped: draws.dropped[lo..hi].to_vec(),
                    noise: draws.noise[lo * per_row..hi * per_row].to_vec(),
                };
                let phi = self.upsampler.clone().fork(device);
                let loss = self
                    .loss_on(unet, &phi, device, data, &shard)?
                    .mul_scalar((hi - lo) as f64 / b as f64);
                losses.push(loss.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &phi);
                multi.grads.push((grads, device.id()));
            }
            let value = losses
                .into_iter()
                .map(|l| l.into_scalar().elem::<f64>())
                .sum::<f64>();
            check(value, self.step + 1)?;
            self.upsampler = self.optimizer.step_multi(lr, self.upsampler.clone(), multi);
            value
        };
        self.step += 1;
        Ok(StepReport {
            step: self.step,
            loss: value,
            learning_rate: lr,
            timesteps: draws.timesteps,
            dropped: draws.dropped,
        })
    }

    /// Writes a checkpoint of the current state (upsampler, optimizer moments, step, settings) to
    /// `dir/step-NNNNNNNN`, atomically: it is written under a temporary name and renamed when complete,
    /// so a crash leaves either the whole checkpoint or none. Returns its path.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let name = format!("step-{:08}", self.step);
        let target = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let written = (|| {
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
            }
            std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let rec = Rec::new();
            let fail = |what: &str, e: burn::record::RecorderError| {
                Error::Weights(format!("{}: cannot write the {what}: {e}", tmp.display()))
            };
            Recorder::<A>::record(
                &rec,
                self.upsampler.clone().into_record(),
                tmp.join("upsampler"),
            )
            .map_err(|e| fail("upsampler", e))?;
            Recorder::<A>::record(&rec, self.optimizer.to_record(), tmp.join("optimizer"))
                .map_err(|e| fail("optimizer state", e))?;
            let state = CheckpointState {
                format: CHECKPOINT_FORMAT.into(),
                step: self.step,
                config: self.config.clone(),
            };
            let json = serde_json::to_vec_pretty(&state)
                .map_err(|e| Error::Weights(format!("cannot encode the checkpoint state: {e}")))?;
            let path = tmp.join("state.json");
            let mut f = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
            f.write_all(&json).map_err(|e| Error::io(&path, e))?;
            f.sync_all().map_err(|e| Error::io(&path, e))?;
            if target.exists() {
                std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
            }
            std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))
        })();
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        written.map(|()| target)
    }

    /// Continues from a checkpoint written by [`Self::save_checkpoint`]: the upsampler's weights,
    /// the optimizer's moments and the step. The checkpoint's settings must describe the same
    /// trajectory as this trainer's ([`UpsamplerTrainConfig::same_trajectory`]).
    pub fn resume(&mut self, checkpoint: &Path) -> Result<()> {
        let state_path = checkpoint.join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let state: CheckpointState = serde_json::from_str(&text).map_err(|e| {
            Error::Weights(format!(
                "{}: not a training checkpoint: {e}",
                state_path.display()
            ))
        })?;
        if state.format != CHECKPOINT_FORMAT {
            return Err(Error::Weights(format!(
                "{}: checkpoint format `{}`; this version reads `{CHECKPOINT_FORMAT}`",
                state_path.display(),
                state.format
            )));
        }
        if !self.config.same_trajectory(&state.config) {
            return Err(Error::Input(format!(
                "{}: the checkpoint was trained with {:?}; this run asks for {:?} (only steps and \
                 checkpointing may change on resume)",
                checkpoint.display(),
                state.config,
                self.config
            )));
        }
        let rec = Rec::new();
        let fail = |what: &str, e: burn::record::RecorderError| {
            Error::Weights(format!(
                "{}: cannot read the {what}: {e}",
                checkpoint.display()
            ))
        };
        let module = Recorder::<A>::load(&rec, checkpoint.join("upsampler"), &self.device)
            .map_err(|e| fail("upsampler", e))?;
        let optim = Recorder::<A>::load(&rec, checkpoint.join("optimizer"), &self.device)
            .map_err(|e| fail("optimizer state", e))?;
        self.upsampler = self.upsampler.clone().load_record(module);
        self.optimizer = std::mem::replace(&mut self.optimizer, self.config.optimizer().init())
            .load_record(optim);
        self.step = state.step;
        Ok(())
    }
}

/// The checkpoints under `dir` (`step-NNNNNNNN` folders), oldest first.
pub fn list_checkpoints(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if entry.path().join("state.json").is_file() {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Where a run keeps its files.
#[derive(Debug, Clone)]
pub struct RunDir {
    /// The run folder.
    pub root: PathBuf,
}

impl RunDir {
    /// The run at `root` (created when needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// `loss.csv`: `step,loss,learning_rate,timesteps,dropped`.
    pub fn loss_log(&self) -> PathBuf {
        self.root.join("loss.csv")
    }
    /// `upsampler.safetensors`: the trained weights.
    pub fn weights(&self) -> PathBuf {
        self.root.join("upsampler.safetensors")
    }
    /// `upsampler_only.pth`: the trained weights in the release's layout (ResBlock upsamplers only).
    pub fn release_weights(&self) -> PathBuf {
        self.root.join("upsampler_only.pth")
    }
}

const LOSS_HEADER: &str = "step,loss,learning_rate,timesteps,dropped";

/// Trains until `config.steps`, in `run`: resumes from the newest checkpoint there when `resume` is
/// set (the loss log is cut back to that step), writes a checkpoint every `checkpoint_every` steps
/// and at the end, appends each step to `loss.csv`, calls `on_step` after each step, and saves the
/// trained weights to `upsampler.safetensors` (and `upsampler_only.pth` for ResBlock upsamplers).
/// Returns the report of every step run by this call.
pub fn train<A, U, M>(
    trainer: &mut UpsamplerTrainer<A, U, M>,
    data: &TrainingSet<A::InnerBackend>,
    run: &RunDir,
    resume: bool,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<Vec<StepReport>>
where
    A: AutodiffBackend,
    U: AutodiffModule<A> + FeatureUpsampler<A> + UpsamplerFile,
    M: FrozenUNet<A>,
{
    data.check(trainer.unet())?;
    std::fs::create_dir_all(&run.root).map_err(|e| Error::io(&run.root, e))?;
    if resume {
        if let Some((_, latest)) = list_checkpoints(&run.checkpoints())?.pop() {
            trainer.resume(&latest)?;
        }
    }
    let log_path = run.loss_log();
    let kept = read_log(&log_path)?
        .into_iter()
        .filter(|(step, _)| *step <= trainer.steps_done())
        .map(|(_, line)| line);
    let mut text = String::from(LOSS_HEADER);
    text.push('\n');
    for line in kept {
        text.push_str(&line);
        text.push('\n');
    }
    crate::load::write_atomically(&log_path, |f| f.write_all(text.as_bytes()))?;
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let mut reports = Vec::new();
    let every = trainer.config().checkpoint_every;
    while trainer.steps_done() < trainer.config().steps {
        let report = trainer.step(data)?;
        let join = |v: Vec<String>| v.join(" ");
        writeln!(
            log,
            "{},{:.8e},{:e},{},{}",
            report.step,
            report.loss,
            report.learning_rate,
            join(report.timesteps.iter().map(|t| t.to_string()).collect()),
            join(
                report
                    .dropped
                    .iter()
                    .map(|d| u8::from(*d).to_string())
                    .collect()
            ),
        )
        .map_err(|e| Error::io(&log_path, e))?;
        on_step(&report);
        let last = report.step == trainer.config().steps;
        if last || (every > 0 && report.step % every == 0) {
            log.flush().map_err(|e| Error::io(&log_path, e))?;
            trainer.save_checkpoint(&run.checkpoints())?;
            prune_checkpoints(&run.checkpoints(), trainer.config().keep_checkpoints)?;
        }
        reports.push(report);
    }
    trainer.upsampler().save_safetensors(&run.weights())?;
    trainer.upsampler().save_release(&run.release_weights())?;
    Ok(reports)
}

fn prune_checkpoints(dir: &Path, keep: usize) -> Result<()> {
    let all = list_checkpoints(dir)?;
    let excess = all.len().saturating_sub(keep);
    for (_, path) in all.into_iter().take(excess) {
        std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// The rows of a loss log as (step, line); none when the file does not exist.
fn read_log(path: &Path) -> Result<Vec<(u64, String)>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let step = line.split(',').next()?.parse().ok()?;
            Some((step, line.to_string()))
        })
        .collect())
}

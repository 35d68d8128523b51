//! Algorithm 1 (training Φ with the UNet frozen) on the tiny SD 2.1 UNet of `fixtures/models/sd21`
//! with a `LightUpsampler` and a synthetic data set whose high-resolution latents are the nearest ×2
//! upsampling of their pivots plus detail: the loss on fixed draws goes down, the UNet is untouched
//! bit for bit, and a run resumed from a checkpoint ends exactly where an uninterrupted one does.
//!
//! Mutation check done by hand once: restoring the step counter and Φ but not the optimizer's
//! moments on resume makes `resumed_run_equals_uninterrupted_run` fail (the parameters differ from
//! the second decimal on).

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use selfcascade_core::scheduler::SchedulerConfig;
use selfcascade_sd::train::{
    list_checkpoints, train, Conditioning, RunDir, StepDraws, TimestepSampling, TrainingExample,
    TrainingSet, UpsamplerTrainConfig, UpsamplerTrainer,
};
use selfcascade_sd::unet::{resize_nearest, UNet2DConditionModel};
use selfcascade_sd::upsampler::{LightUpsampler, LightUpsamplerConfig};
use std::path::{Path, PathBuf};

type B = Flex;
type A = Autodiff<Flex>;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/sd21")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("selfcascade-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every float parameter of a module, in visiting order.
struct Collect(Vec<Vec<f32>>);
impl<BB: Backend> ModuleVisitor<BB> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<BB, D>>) {
        self.0
            .push(param.val().into_data().convert::<f32>().to_vec().unwrap());
    }
}
fn params<BB: Backend, M: Module<BB>>(m: &M) -> Vec<Vec<f32>> {
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

/// 6 examples of 16×16 latents (pivots 8×8) and 3 captions; latents are nearest(pivot) + small detail.
fn data() -> TrainingSet<B> {
    let device = Default::default();
    <B as Backend>::seed(&device, 7);
    let examples = (0..6)
        .map(|i| {
            let pivot =
                Tensor::<B, 4>::random([1, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
            let detail =
                Tensor::<B, 4>::random([1, 4, 16, 16], Distribution::Normal(0.0, 0.1), &device);
            TrainingExample {
                latent: resize_nearest(pivot.clone(), (16, 16)) + detail,
                pivot,
                caption: i % 3,
            }
        })
        .collect();
    let caption = || Conditioning {
        context: Tensor::random([1, 5, 32], Distribution::Normal(0.0, 1.0), &device),
        added: None,
    };
    TrainingSet {
        examples,
        captions: (0..3).map(|_| caption()).collect(),
        empty_caption: caption(),
    }
}

fn scheduler() -> SchedulerConfig {
    SchedulerConfig::from_file(model_dir().join("scheduler/scheduler_config.json")).unwrap()
}

fn config(steps: u64) -> UpsamplerTrainConfig {
    UpsamplerTrainConfig {
        seed: 3,
        steps,
        batch_size: 2,
        learning_rate: 1e-2,
        checkpoint_every: 2,
        keep_checkpoints: 10,
        ..Default::default()
    }
}

fn trainer(config: UpsamplerTrainConfig) -> UpsamplerTrainer<A, LightUpsampler<A>> {
    let device = Default::default();
    let unet = UNet2DConditionModel::<A>::load(&model_dir().join("unet"), None, &device).unwrap();
    let up =
        LightUpsampler::<A>::init(&LightUpsamplerConfig::for_unet(&unet), 11, &device).unwrap();
    UpsamplerTrainer::new(unet, up, &scheduler(), config, &device).unwrap()
}

/// The mean loss over the draws of steps 1000..1008 (never used in training).
fn held_out_loss(t: &UpsamplerTrainer<A, LightUpsampler<A>>, data: &TrainingSet<B>) -> f64 {
    let shape = data.latent_shape().unwrap();
    (1000..1008)
        .map(|s| {
            let draws = t.draws(s, data.examples.len(), shape).unwrap();
            t.loss(data, &draws).unwrap().into_scalar() as f64
        })
        .sum::<f64>()
        / 8.0
}

#[test]
fn loss_decreases_and_the_unet_stays_frozen() {
    let data = data();
    let mut t = trainer(UpsamplerTrainConfig {
        steps: 40,
        checkpoint_every: 0,
        ..config(40)
    });
    let unet_before = params(t.unet());
    let phi_before = params(t.upsampler());
    let before = held_out_loss(&t, &data);
    for _ in 0..40 {
        t.step(&data).unwrap();
    }
    let after = held_out_loss(&t, &data);
    assert!(
        after < 0.9 * before,
        "held-out loss {before:.5} → {after:.5}: expected a drop of at least 10%"
    );
    assert!(
        params(t.unet()) == unet_before,
        "a frozen UNet weight changed"
    );
    assert_ne!(params(t.upsampler()), phi_before, "Φ did not learn");
}

fn run(dir: &Path, steps: u64, resume: bool) -> (Vec<Vec<f32>>, String) {
    let data = data();
    let mut t = trainer(config(steps));
    train(&mut t, &data, &RunDir::new(dir), resume, &mut |_| {}).unwrap();
    let log = std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    (params(t.upsampler()), log)
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let straight = scratch("straight");
    let (full, full_log) = run(&straight, 6, false);
    assert_eq!(full_log.lines().count(), 7, "{full_log}");
    let steps: Vec<u64> = list_checkpoints(&straight.join("checkpoints"))
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(steps, vec![2, 4, 6]);

    // Interrupted after 3 steps (the last checkpoint is at step 2: step 3 is lost and redone).
    let resumed = scratch("resumed");
    run(&resumed, 3, false);
    let ckpts = list_checkpoints(&resumed.join("checkpoints")).unwrap();
    assert_eq!(ckpts.last().unwrap().0, 3);
    std::fs::remove_dir_all(&ckpts.last().unwrap().1).unwrap();
    let (end, log) = run(&resumed, 6, true);
    assert!(end == full, "the resumed run ended with other parameters");
    assert_eq!(log, full_log, "the resumed run logged other losses");
    assert!(resumed.join("upsampler.safetensors").is_file());

    // A different learning rate cannot continue that trajectory.
    let mut other = trainer(UpsamplerTrainConfig {
        learning_rate: 1e-3,
        ..config(6)
    });
    let err = other
        .resume(&list_checkpoints(&straight.join("checkpoints")).unwrap()[0].1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("only steps and checkpointing may change"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&straight);
    let _ = std::fs::remove_dir_all(&resumed);
}

#[test]
fn draws_follow_the_config() {
    let t = trainer(UpsamplerTrainConfig {
        timesteps: TimestepSampling::Range { min: 10, max: 12 },
        caption_dropout: 1.0,
        ..config(1)
    });
    let d = t.draws(5, 6, [1, 4, 16, 16]).unwrap();
    assert!(d.timesteps.iter().all(|t| (10..=12).contains(t)));
    assert!(d.dropped.iter().all(|d| *d));
    assert_eq!(d.noise.len(), 2 * 4 * 16 * 16);
    assert_eq!(
        d,
        t.draws(5, 6, [1, 4, 16, 16]).unwrap(),
        "draws depend on the step only"
    );
    // Three steps of batch 2 visit each of the 6 examples once (one epoch).
    let mut seen: Vec<usize> = (0..3)
        .flat_map(|s| t.draws(s, 6, [1, 4, 16, 16]).unwrap().examples)
        .collect();
    seen.sort();
    assert_eq!(seen, (0..6).collect::<Vec<_>>());
}

#[test]
fn bad_training_sets_are_errors() {
    let mut data = data();
    data.examples[1].pivot = Tensor::zeros([1, 4, 16, 16], &Default::default());
    let mut t = trainer(config(1));
    let err = train(
        &mut t,
        &data,
        &RunDir::new(scratch("bad")),
        false,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("example 1") && err.contains("H/2"), "{err}");
    let mut data = self::data();
    data.examples[0].caption = 9;
    assert!(data
        .check(t.unet())
        .unwrap_err()
        .to_string()
        .contains("caption 9"));
}

/// `--gradient-checkpointing` trains on `Autodiff<Flex, BalancedCheckpointing>`, which recomputes
/// activations in the backward pass instead of keeping them: the same steps must give the same Φ.
#[test]
fn gradient_checkpointing_trains_the_same() {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    type C = Autodiff<Flex, BalancedCheckpointing>;
    let data = data();
    let device = Default::default();
    let unet = UNet2DConditionModel::<C>::load(&model_dir().join("unet"), None, &device).unwrap();
    let up =
        LightUpsampler::<C>::init(&LightUpsamplerConfig::for_unet(&unet), 11, &device).unwrap();
    let mut checkpointed =
        UpsamplerTrainer::new(unet, up, &scheduler(), config(3), &device).unwrap();
    let mut plain = trainer(config(3));
    for _ in 0..3 {
        let a = checkpointed.step(&data).unwrap();
        let b = plain.step(&data).unwrap();
        assert!(
            (a.loss - b.loss).abs() <= 1e-6 * b.loss,
            "{} vs {}",
            a.loss,
            b.loss
        );
    }
    let (a, b) = (params(checkpointed.upsampler()), params(plain.upsampler()));
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() <= 1e-6, "{x} vs {y}");
    }
}

/// Data-parallel training (`set_devices`) splits each batch into per-device shards whose gradients
/// burn's multi-device optimizer step sums: with two replicas (both on the CPU here) the run follows
/// the single-device one.
#[test]
fn data_parallel_training_follows_single_device_training() {
    let data = data();
    let cfg = UpsamplerTrainConfig {
        batch_size: 4,
        ..config(3)
    };
    let mut parallel = trainer(cfg.clone());
    parallel
        .set_devices(vec![Default::default(), Default::default()])
        .unwrap();
    let mut single = trainer(cfg);
    for _ in 0..3 {
        let a = parallel.step(&data).unwrap();
        let b = single.step(&data).unwrap();
        assert!(
            (a.loss - b.loss).abs() <= 1e-5 * b.loss,
            "{} vs {}",
            a.loss,
            b.loss
        );
    }
    let (a, b) = (params(parallel.upsampler()), params(single.upsampler()));
    let worst = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-5, "parameters differ by {worst}");
    assert!(parallel.set_devices(vec![Default::default(); 5]).is_err());
}

/// LoRA on the attention projections: a fresh adapter changes nothing, merging folds a trained one
/// into the weights exactly (same output), and only the adapters train when the base is frozen.
#[test]
fn lora_adapters_start_neutral_train_alone_and_merge() {
    use burn::module::AutodiffModule;
    use burn::optim::{GradientsParams, Optimizer};
    use selfcascade_sd::unet::UNetHooks;
    let device = Default::default();
    let unet = UNet2DConditionModel::<A>::load(&model_dir().join("unet"), None, &device).unwrap();
    let x = Tensor::<A, 4>::random([1, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let ctx = Tensor::<A, 3>::random([1, 5, 32], Distribution::Normal(0.0, 1.0), &device);
    let run = |u: &UNet2DConditionModel<A>| {
        u.forward(
            x.clone(),
            &[500.0],
            ctx.clone(),
            None,
            &UNetHooks::default(),
        )
        .unwrap()
    };
    let plain = run(&unet);
    let base = params(&unet);
    assert!(
        unet.clone().with_lora(0, 4.0, 1).is_err(),
        "rank 0 is refused"
    );
    let lora = unet.no_grad().with_lora(4, 4.0, 1).unwrap();
    assert!(lora.lora_params() > 0);
    assert_eq!(
        run(&lora).into_data(),
        plain.clone().into_data(),
        "a fresh adapter is neutral"
    );
    let mut optim = UpsamplerTrainConfig::default().optimizer().init();
    let loss = run(&lora).square().mean();
    let grads = GradientsParams::from_grads(loss.backward(), &lora);
    let trained = optim.step(1e-2, lora, grads);
    let after = run(&trained);
    assert!(
        (after.clone() - plain).abs().max().into_scalar() > 1e-4,
        "the adapters learned"
    );
    let merged = trained.clone().merge_lora();
    assert_eq!(merged.lora_params(), 0);
    let diff = (run(&merged) - after).abs().max().into_scalar();
    assert!(diff < 1e-4, "merged output differs by {diff}");
    // Base weights untouched by the step (only the adapters had gradients): every one of them is
    // still among the trained model's parameters, bit for bit.
    let now = params(&trained.valid());
    assert!(
        base.iter().all(|p| now.contains(p)),
        "a frozen weight changed"
    );
    assert!(now.len() > base.len());
}

/// The LoRA update against a hand computation: y = x·W + b + (x·A·B)·α/r, for W [2, 3], A [2, 1],
/// B [1, 3], α = 2, r = 1 (a transposed factor or a wrong scale changes the numbers).
#[test]
fn lora_forward_is_x_w_plus_scaled_x_a_b() {
    use burn::module::Param;
    use selfcascade_sd::nn::{Linear, LoraAdapter};
    let device = Default::default();
    let t2 = |v: Vec<f32>, s: [usize; 2]| {
        Param::from_tensor(Tensor::<B, 2>::from_data(
            burn::tensor::TensorData::new(v, s),
            &device,
        ))
    };
    let layer = Linear {
        weight: t2(vec![1., 2., 3., 4., 5., 6.], [2, 3]),
        bias: Some(Param::from_tensor(Tensor::<B, 1>::from_floats(
            [0.5, 0., -0.5],
            &device,
        ))),
        lora: Some(LoraAdapter {
            down: t2(vec![1., -1.], [2, 1]),
            up: t2(vec![1., 10., 100.], [1, 3]),
            scale: 2.0,
        }),
    };
    let x = Tensor::<B, 2>::from_floats([[1., 2.]], &device);
    // x·W = [9, 12, 15]; + b = [9.5, 12, 14.5]; x·A = -1; (x·A)·B·2 = [-2, -20, -200].
    let y = layer
        .clone()
        .forward(x.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(y, vec![7.5, -8.0, -185.5]);
    let merged = layer
        .merge_lora()
        .forward(x)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(merged, y);
}

/// Malformed draws given to `step_with` are errors, not panics.
#[test]
fn bad_step_draws_are_errors() {
    let data = data();
    let mut t = trainer(config(1));
    let good = t.draws(0, data.examples.len(), [1, 4, 16, 16]).unwrap();
    let cases = [
        StepDraws {
            examples: vec![0, 99],
            ..good.clone()
        },
        StepDraws {
            timesteps: vec![5, 1000],
            ..good.clone()
        },
        StepDraws {
            dropped: vec![false],
            ..good.clone()
        },
        StepDraws {
            noise: vec![0.0; 3],
            ..good.clone()
        },
    ];
    for bad in cases {
        let err = t.step_with(&data, bad).unwrap_err().to_string();
        assert!(err.contains("step draws"), "{err}");
    }
    assert!(t.draws(0, 0, [1, 4, 16, 16]).is_err());
    assert_eq!(t.steps_done(), 0);
}

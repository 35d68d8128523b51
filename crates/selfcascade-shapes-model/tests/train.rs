//! Training tests on `Autodiff<Flex>`: gradients through the UNet against finite differences, one
//! AdamW step, a short training run, determinism, and checkpoint round trips.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use selfcascade_shapes_model::*;

type Ad = Autodiff<Flex>;

fn tmp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "selfcascade-shapes-model-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fixed noised batch of the tiny world (one unconditional row).
fn fixed_batch<B: Backend>(seed: u64, n: usize, device: &B::Device) -> NoisedBatch<B> {
    let images = render_batch(seed, 0, n, ShapesModelConfig::tiny().image_size as u32).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut b = noise_batch(
        &images,
        &NoiseSchedule::scaled_linear().unwrap(),
        0.0,
        &mut rng,
        device,
    );
    b.labels[0] = None;
    b
}

fn to_inner(b: &NoisedBatch<Ad>) -> NoisedBatch<Flex> {
    NoisedBatch {
        noisy: b.noisy.clone().inner(),
        noise: b.noise.clone().inner(),
        timesteps: b.timesteps.clone(),
        labels: b.labels.clone(),
    }
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    let v: f32 = t.into_scalar().elem();
    v as f64
}

/// Adds `delta` (flattened) to the parameter named `name`.
struct AddTo<'a> {
    path: Vec<String>,
    name: &'a str,
    delta: &'a [f32],
    hits: usize,
}

impl<B: Backend> ModuleMapper<B> for AddTo<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, t, mapper) = param.consume();
        let t = if self.path.join(".") == self.name {
            self.hits += 1;
            let d = Tensor::<B, 1>::from_data(
                TensorData::new(self.delta.to_vec(), [self.delta.len()]),
                &t.device(),
            );
            t.clone().add(d.reshape(t.shape()))
        } else {
            t
        };
        Param::from_mapped_value(id, t, mapper)
    }
}

fn add_to<B: Backend, M: Module<B>>(m: M, name: &str, delta: &[f32]) -> M {
    let mut mapper = AddTo {
        path: vec![],
        name,
        delta,
        hits: 0,
    };
    let m = m.map(&mut mapper);
    assert_eq!(mapper.hits, 1, "parameter {name} not found");
    m
}

/// The gradient of the parameter named `name`.
struct GradOf<'a, B: AutodiffBackend> {
    path: Vec<String>,
    name: &'a str,
    grads: &'a B::Gradients,
    out: Option<Vec<f32>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradOf<'_, B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.path.join(".") == self.name {
            let g = param
                .val()
                .grad(self.grads)
                .expect("parameter has a gradient");
            self.out = Some(g.into_data().into_vec::<f32>().unwrap());
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let device = Default::default();
    let model = ShapesModel::<Ad>::random(&ShapesModelConfig::tiny(), 7, &device).unwrap();
    let batch = fixed_batch::<Ad>(3, 4, &device);
    let loss = epsilon_loss(&model, &batch).unwrap();
    let grads = loss.backward();
    let inner = model.valid();
    let ib = to_inner(&batch);
    let names = [
        "unet.conv_in.weight",
        "unet.down_blocks.0.resnets.0.conv1.weight",
        "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight",
        "unet.up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
        "label_embedding.weight",
        "unet.time_embedding.linear_1.weight",
    ];
    let params = named_parameters(&inner);
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for name in names {
        let mut v = GradOf::<Ad> {
            path: vec![],
            name,
            grads: &grads,
            out: None,
        };
        model.visit(&mut v);
        let g = v.out.unwrap_or_else(|| panic!("no gradient for {name}"));
        let n = params.iter().find(|p| p.name == name).unwrap().data.len();
        assert_eq!(g.len(), n);
        // Direction along the gradient plus noise, unit norm: a large, well-conditioned derivative.
        let gnorm = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(gnorm > 0.0, "{name}: zero gradient");
        let mut d: Vec<f64> = g
            .iter()
            .map(|x| {
                *x as f64 / gnorm
                    + 0.5 * Distribution::<f64>::sample(&StandardNormal, &mut rng)
                        / (n as f64).sqrt()
            })
            .collect();
        let dn = d.iter().map(|x| x * x).sum::<f64>().sqrt();
        d.iter_mut().for_each(|x| *x /= dn);
        let analytic: f64 = g.iter().zip(&d).map(|(a, b)| *a as f64 * b).sum();
        // Central differences at h and h/2, Richardson-extrapolated (error O(h⁴) instead of O(h²)).
        let central = |h: f64| {
            let plus: Vec<f32> = d.iter().map(|x| (x * h) as f32).collect();
            let minus: Vec<f32> = d.iter().map(|x| (-x * h) as f32).collect();
            let lp = scalar(epsilon_loss(&add_to(inner.clone(), name, &plus), &ib).unwrap());
            let lm = scalar(epsilon_loss(&add_to(inner.clone(), name, &minus), &ib).unwrap());
            (lp - lm) / (2.0 * h)
        };
        // Step so that the loss moves by about 5e-3 (well above float32 round-off of the loss).
        let h = (5e-3 / analytic.abs().max(1e-9)).clamp(2e-2, 1.0);
        let fd = (4.0 * central(h / 2.0) - central(h)) / 3.0;
        let rel = (fd - analytic).abs() / analytic.abs().max(1e-6);
        println!(
            "{name}: analytic {analytic:.6e} finite difference {fd:.6e} relative error {rel:.2e}"
        );
        assert!(
            rel < 1e-2,
            "{name}: analytic {analytic} vs finite difference {fd} (rel {rel})"
        );
    }
}

#[test]
fn one_adamw_step_reduces_the_loss_on_a_fixed_batch() {
    let device = Default::default();
    let model = ShapesModel::<Ad>::random(&ShapesModelConfig::tiny(), 5, &device).unwrap();
    let batch = fixed_batch::<Ad>(9, 8, &device);
    let loss = epsilon_loss(&model, &batch).unwrap();
    let before = scalar(loss.clone().inner());
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut optim = pytorch_adamw(0.01).init::<Ad, ShapesModel<Ad>>();
    let model = optim.step(1e-3, model, grads);
    let after = scalar(epsilon_loss(&model.valid(), &to_inner(&batch)).unwrap());
    println!("one AdamW step: loss {before:.5} -> {after:.5}");
    assert!(after < before, "loss {before} -> {after}");
}

fn tiny_train_config(steps: u64) -> TrainConfig {
    TrainConfig {
        seed: 42,
        steps,
        batch_size: 8,
        learning_rate: 2e-3,
        warmup_steps: 5,
        ..TrainConfig::default()
    }
}

#[test]
fn short_training_reduces_the_loss_and_checkpoints_round_trip() {
    let device = Default::default();
    let dir = tmp_dir("train");
    let options = RunOptions {
        out_dir: dir.clone(),
        checkpoint_every: 10,
    };
    let held_out = fixed_batch::<Flex>(1234, 32, &device);
    let mut losses = Vec::new();
    let trainer = train::<Ad>(
        &ShapesModelConfig::tiny(),
        tiny_train_config(40),
        &options,
        &device,
        |r| losses.push(r.loss),
    )
    .unwrap();
    assert_eq!(losses.len(), 40);
    // The untrained model of the same run (weights seeded from the run seed).
    let fresh =
        Trainer::<Ad>::new(&ShapesModelConfig::tiny(), tiny_train_config(40), &device).unwrap();
    let before = scalar(epsilon_loss(&fresh.model().valid(), &held_out).unwrap());
    let after = scalar(epsilon_loss(&trainer.model().valid(), &held_out).unwrap());
    let ema = scalar(epsilon_loss(trainer.ema(), &held_out).unwrap());
    println!("held-out ε-MSE: before {before:.4}, after 40 steps {after:.4}, EMA {ema:.4}");
    println!(
        "training losses: first 5 {:?}, last 5 {:?}",
        &losses[..5],
        &losses[35..]
    );
    assert!(after < 0.7 * before, "held-out loss {before} -> {after}");
    assert!(ema < before, "EMA held-out loss {ema} not below {before}");

    // Loss log.
    let log = std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    assert_eq!(log.lines().count(), 41);
    assert!(log.starts_with("step,loss,lr,seconds\n1,"));

    // Checkpoints reload to bit-identical parameters (EMA and raw), strictly.
    for (file, reference) in [
        ("model.safetensors", named_parameters(trainer.ema())),
        (
            "model-raw.safetensors",
            named_parameters(&trainer.model().valid()),
        ),
    ] {
        let (loaded, info) = load_checkpoint::<Flex>(&dir.join(file), &device).unwrap();
        assert_eq!(info.step, 40);
        assert_eq!(&info.config, &ShapesModelConfig::tiny());
        let got = named_parameters(&loaded);
        assert_eq!(got.len(), reference.len());
        for (a, b) in got.iter().zip(&reference) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.shape, b.shape);
            assert!(
                a.data
                    .iter()
                    .zip(&b.data)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
                "{} differs after reload",
                a.name
            );
        }
    }
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn training_is_deterministic_given_the_seed() {
    let device = Default::default();
    let run = || {
        let mut t =
            Trainer::<Ad>::new(&ShapesModelConfig::tiny(), tiny_train_config(3), &device).unwrap();
        let losses: Vec<u32> = (0..3).map(|_| t.step().unwrap().loss.to_bits()).collect();
        (losses, named_parameters(t.ema()))
    };
    let (la, pa) = run();
    let (lb, pb) = run();
    assert_eq!(la, lb);
    assert_eq!(pa, pb);
    let mut other = Trainer::<Ad>::new(
        &ShapesModelConfig::tiny(),
        TrainConfig {
            seed: 43,
            ..tiny_train_config(3)
        },
        &device,
    )
    .unwrap();
    assert_ne!(
        other.step().unwrap().loss.to_bits(),
        la[0],
        "a different seed gives a different run"
    );
}

#[test]
fn damaged_or_foreign_checkpoints_are_errors() {
    let device = burn::tensor::Device::<Flex>::default();
    let dir = tmp_dir("bad");
    let model = ShapesModel::<Flex>::random(&ShapesModelConfig::tiny(), 1, &device).unwrap();
    let path = dir.join("m.safetensors");
    save_checkpoint(&path, &model, 0, &[]).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // Truncated.
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(load_checkpoint::<Flex>(&cut, &device).is_err());
    // Garbage.
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    assert!(load_checkpoint::<Flex>(&junk, &device).is_err());
    // Missing file.
    assert!(load_checkpoint::<Flex>(&dir.join("absent.safetensors"), &device).is_err());
    // A safetensors file without our metadata.
    let foreign = dir.join("foreign.safetensors");
    let data = vec![0u8; 16];
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).unwrap();
    std::fs::write(
        &foreign,
        safetensors::serialize(vec![("x", view)], None).unwrap(),
    )
    .unwrap();
    let err = load_checkpoint::<Flex>(&foreign, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("format"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reference_architecture_is_about_a_million_parameters() {
    let device = Default::default();
    let m = ShapesModel::<Flex>::random(&ShapesModelConfig::reference(), 0, &device).unwrap();
    let n = m.num_parameters();
    println!("reference model: {n} parameters");
    assert!((800_000..2_000_000).contains(&n), "{n}");
}

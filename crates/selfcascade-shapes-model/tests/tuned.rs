//! The tuned method on the shapes model: Algorithm 1's data from rendered scenes, a short training run
//! through `selfcascade-sd`'s trainer, and the embedded trained upsampler.

use burn::backend::{Autodiff, Flex};
use selfcascade_sd::train::{RunDir, UpsamplerTrainConfig};
use selfcascade_shapes_model::tuned::{train_light_upsampler, training_set};
use selfcascade_shapes_model::{default_model, default_upsampler};

#[test]
fn training_pairs_are_one_scene_at_two_sizes() {
    let (model, _) = default_model::<Flex>(&Default::default()).unwrap();
    let set = training_set(&model, 3, 5).unwrap();
    set.check(&model.unet).unwrap();
    assert_eq!(set.examples.len(), 3);
    assert_eq!(set.captions.len(), 3);
    let e = &set.examples[0];
    assert_eq!(e.latent.dims(), [1, 3, 64, 64]);
    assert_eq!(e.pivot.dims(), [1, 3, 32, 32]);
    // The pivot is the same scene: its mean colour is the high-resolution image's.
    let mean = |t: &burn::tensor::Tensor<Flex, 4>| t.clone().mean().into_scalar();
    assert!((mean(&e.latent) - mean(&e.pivot)).abs() < 0.02);
}

#[test]
fn a_short_run_trains_and_the_embedded_upsampler_fits_the_embedded_model() {
    let (model, _) = default_model::<Flex>(&Default::default()).unwrap();
    let dir = std::env::temp_dir().join(format!("selfcascade-shapes-tuned-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = UpsamplerTrainConfig {
        steps: 2,
        batch_size: 2,
        learning_rate: 1e-3,
        checkpoint_every: 0,
        ..Default::default()
    };
    let (up, reports) = train_light_upsampler::<Autodiff<Flex>>(
        &model,
        config,
        4,
        0,
        &RunDir::new(&dir),
        false,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(reports.len(), 2);
    assert!(reports.iter().all(|r| r.loss.is_finite() && r.loss > 0.0));
    assert!(dir.join("upsampler.safetensors").is_file());
    let embedded = default_upsampler(&model, &Default::default()).unwrap();
    assert_eq!(embedded.config(), up.config());
    assert_eq!(embedded.config().num_params(), 742);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fine_tuned_copies_get_their_own_row_at_their_scale() {
    use selfcascade_shapes_model::{evaluate, EvalOptions, FineTuned};
    let (model, _) = default_model::<Flex>(&Default::default()).unwrap();
    let options = EvalOptions {
        methods: vec![],
        pixel_scales: vec![4],
        samples: 1,
        batch: 1,
        include_base: false,
        steps: 2,
        ..Default::default()
    };
    let ft = |scale| FineTuned {
        name: "full-fine-tune".into(),
        model: &model,
        pixel_scale: scale,
        trainable_parameters: 7,
        training_steps: 3,
    };
    let (report, pictures) = evaluate(&model, &options, None, &[ft(4)], &mut |_| {}).unwrap();
    assert_eq!(report.rows.len(), 1);
    let row = &report.rows[0];
    assert_eq!(
        (row.method.as_str(), row.pixel_scale, row.width),
        ("full-fine-tune", 4, 64)
    );
    assert_eq!((row.trainable_parameters, row.training_steps), (7, 3));
    assert_eq!(pictures[0].images[0].width(), 64);
    let err = evaluate(&model, &options, None, &[ft(16)], &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("16×"), "{err}");
}

//! The shapes model drives the self-cascade sampler through the `Denoiser` interface.

use burn::backend::Flex;
use selfcascade_core::scheduler::{self, SchedulerKind};
use selfcascade_core::{
    Interpolation, ScalePlan, SeededNoise, SelfCascadeConfig, SelfCascadeSampler, Size,
};
use selfcascade_shapes::SceneLabel;
use selfcascade_shapes_model::{NoiseSchedule, ShapesDenoiser, ShapesModel, ShapesModelConfig};
use std::ops::ControlFlow;

#[test]
fn self_cascade_runs_a_32_to_64_plan_with_guidance() {
    let device = Default::default();
    let config = ShapesModelConfig {
        image_size: 32,
        ..ShapesModelConfig::tiny()
    };
    let model = ShapesModel::<Flex>::random(&config, 3, &device).unwrap();
    let labels: Vec<SceneLabel> = SceneLabel::all().take(2).collect();
    let denoiser = ShapesDenoiser::guided(&model, &labels, 3.0);
    let sched_cfg = NoiseSchedule::scaled_linear().unwrap().scheduler_config();
    let mut sched =
        scheduler::build::<Flex, 4>(&sched_cfg, Some(SchedulerKind::Ddim), 0.0).unwrap();
    let mut sampler = SelfCascadeSampler {
        scheduler: sched.as_mut(),
        pivot_upsampler: &Interpolation::Bicubic,
        config: SelfCascadeConfig {
            steps: 4,
            strength: 0.7,
            latent_scale: 1,
            latent_channels: 3,
            batch: 2,
            frames: 1,
            keep_stages: true,
            check_finite: true,
        },
    };
    let plan = ScalePlan::new(Size::new(32, 32), Size::new(64, 64), 2).unwrap();
    assert_eq!(plan.len(), 2);
    let mut calls = 0;
    let out = sampler
        .sample(
            &plan,
            &denoiser,
            &mut SeededNoise::new(1),
            &device,
            &mut |_| {
                calls += 1;
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert_eq!(out.latent.dims(), [2, 3, 64, 64]);
    assert_eq!(out.stages[0].dims(), [2, 3, 32, 32]);
    assert!(calls > 4);
    let v = out.latent.into_data().to_vec::<f32>().unwrap();
    assert!(v.iter().all(|x| x.is_finite()));
}

#[test]
fn denoiser_rejects_a_label_count_that_does_not_match_the_batch() {
    use selfcascade_core::{Denoiser, StepContext};
    let device = Default::default();
    let model = ShapesModel::<Flex>::random(&ShapesModelConfig::tiny(), 3, &device).unwrap();
    let d = ShapesDenoiser::new(&model, vec![None]);
    let x = burn::tensor::Tensor::<Flex, 4>::zeros([2, 3, 16, 16], &device);
    let ctx = StepContext {
        stage: 0,
        step: 0,
        steps_in_stage: 1,
        timestep: 500.0,
        image_size: (16, 16),
        pivot: None,
    };
    assert!(d.predict(x, &ctx).is_err());
}

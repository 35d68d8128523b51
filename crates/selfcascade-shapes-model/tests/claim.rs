//! The paper's central claim, measured on the embedded shapes model: at 16× the training pixels, direct
//! sampling repeats objects and the tuning-free self-cascade does not.

use burn::backend::Flex;
use selfcascade_sd::pipeline::Method;
use selfcascade_shapes_model::{default_model, evaluate, EvalOptions, ShapesModelConfig};

#[test]
fn embedded_model_is_the_reference_architecture() {
    let (model, info) = default_model::<Flex>(&Default::default()).unwrap();
    assert_eq!(info.config, ShapesModelConfig::reference());
    assert!(info.step >= 1000, "trained for {} steps", info.step);
    assert!(model.num_parameters() > 1_000_000);
}

#[test]
fn self_cascade_beats_direct_sampling_at_16x_pixels_by_30_points() {
    let (model, _) = default_model::<Flex>(&Default::default()).unwrap();
    let options = EvalOptions {
        methods: vec![Method::Direct, Method::SelfCascade],
        pixel_scales: vec![16],
        samples: 8,
        seed: 0,
        batch: 8,
        include_base: false,
        ..EvalOptions::default()
    };
    let (report, _) = evaluate(&model, &options, None, &[], &mut |_| {}).unwrap();
    let rate = |m: &str| {
        report
            .rows
            .iter()
            .find(|r| r.method == m)
            .map(|r| r.single_object_rate)
            .unwrap()
    };
    let (direct, cascade) = (rate("direct"), rate("self-cascade"));
    assert!(
        cascade - direct >= 0.30,
        "single-object rate at 128x128: self-cascade {cascade:.2} vs direct {direct:.2} ({:?})",
        report.rows
    );
}

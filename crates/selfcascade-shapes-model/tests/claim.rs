//! The paper's central claim, measured on the embedded shapes model: at 16× the training pixels, direct
//! sampling repeats objects and the tuning-free self-cascade does not.

use burn::backend::Flex;
use selfcascade_sd::pipeline::Method;
use selfcascade_shapes_model::{
    add_fid_kid, default_model, evaluate, ClassifierFeatures, EvalOptions, QualityOptions,
    ShapesModelConfig,
};

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
        include_base: true,
        ..EvalOptions::default()
    };
    let (mut report, pictures) = evaluate(&model, &options, None, &[], &mut |_| {}).unwrap();
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

    // FID/KID on the shapes classifier's features agree: self-cascade is nearer to the renders at 128²
    // (FID_r) and to the model's own 32² samples (FID_b) than direct sampling.
    let net = ClassifierFeatures::<Flex>::embedded(&Default::default()).unwrap();
    let quality = QualityOptions {
        reference_samples: 64,
        bootstrap: 0,
        kid_subsets: 20,
        components: 8,
    };
    add_fid_kid(&mut report, &pictures, &net, &quality).unwrap();
    let q = |m: &str| {
        report
            .rows
            .iter()
            .find(|r| r.method == m)
            .unwrap()
            .quality
            .clone()
    };
    let (d, c) = (q("direct"), q("self-cascade"));
    assert!(c.fid_r.unwrap() < d.fid_r.unwrap(), "FID_r {c:?} vs {d:?}");
    assert!(c.fid_b.unwrap() < d.fid_b.unwrap(), "FID_b {c:?} vs {d:?}");
    assert!(c.kid_r.unwrap() < d.kid_r.unwrap(), "KID_r {c:?} vs {d:?}");
    assert!(q("base").fid_b.is_none() && q("base").fid_r.is_some());
}

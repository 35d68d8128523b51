//! The embedded shapes classifier behind the FID/KID columns of `shapes eval`: it recognises scenes at
//! every resolution, and its features describe what an image shows, not the size it was rendered at.

use burn::backend::Flex;
use selfcascade_eval::features::{image_features, FeatureOptions};
use selfcascade_eval::metrics::fid;
use selfcascade_shapes::{render, Scene};
use selfcascade_shapes_model::classifier::{
    classifier_accuracy, ClassifierFeatures, ShapesClassifier,
};

#[test]
fn embedded_classifier_recognises_scenes_at_every_size() {
    let device = Default::default();
    let net = ShapesClassifier::<Flex>::embedded(&device).unwrap();
    for side in [32, 64, 128] {
        let acc = classifier_accuracy(&net, side, 90, &device).unwrap();
        // 45 classes: chance is 2.2%.
        assert!(acc >= 0.5, "accuracy at {side}²: {acc:.2}");
    }
}

#[test]
fn features_do_not_depend_on_the_render_size() {
    let device = Default::default();
    let net = ClassifierFeatures::<Flex>::embedded(&device).unwrap();
    let scenes: Vec<Scene> = (0..64).map(|i| Scene::sample(1000 + i)).collect();
    let at = |side: u32| {
        let imgs: Vec<_> = scenes
            .iter()
            .map(|s| render(s, side, side).unwrap())
            .collect();
        image_features(&net, &imgs, &FeatureOptions::default(), &mut |_, _| {}).unwrap()
    };
    let (small, large) = (at(32), at(128));
    let other: Vec<Scene> = (0..64).map(|i| Scene::sample(5000 + i)).collect();
    let other_imgs: Vec<_> = other.iter().map(|s| render(s, 32, 32).unwrap()).collect();
    let other = image_features(
        &net,
        &other_imgs,
        &FeatureOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    // The same scenes at 32² and 128² are closer than two samples of scenes at one size.
    let same = fid(&small, &large).unwrap();
    let between = fid(&small, &other).unwrap();
    assert!(
        same < 0.5 * between,
        "FID same scenes {same:.3} vs other scenes {between:.3}"
    );
}

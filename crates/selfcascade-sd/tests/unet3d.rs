//! The video UNet (`UNet3DConditionModel`, ModelScope text-to-video) and its temporal layers against
//! diffusers (fixtures written by `tools/oracle/unet3d.py`: a tiny random-weight UNet whose temporal
//! layers are all re-randomised, so none is an identity).

use burn::backend::Flex;
use burn::module::Module;
use burn::tensor::Tensor;
use selfcascade_sd::load::{TensorStore, Weights};
use selfcascade_sd::unet::{
    TemporalConvLayer, TransformerTemporalModel, UNet3DConditionConfig, UNet3DConditionModel,
    UNetHooks,
};
use std::path::{Path, PathBuf};

mod common;
use common::{read, Trivial};

type B = Flex;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/ms-t2v")
}

/// Asserts max|a − b| ≤ 1e-4·max(1, max|b|) (the image UNet's tolerance); returns the difference.
fn assert_close<const D: usize>(label: &str, a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "{label}: shapes");
    let a = a.into_data().to_vec::<f32>().unwrap();
    let b = b.into_data().to_vec::<f32>().unwrap();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let tol = 1e-4 * b.iter().map(|y| y.abs()).fold(1f32, f32::max);
    eprintln!("{label}: max |burn − diffusers| = {diff:.3e} (tolerance {tol:.1e})");
    assert!(diff <= tol, "{label}: max diff {diff} > {tol}");
    diff
}

fn load_unet() -> UNet3DConditionModel<B> {
    UNet3DConditionModel::load(&fixture().join("unet"), Some("fp16"), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn unet3d_matches_diffusers() {
    let unet = load_unet();
    let io = TensorStore::open(&[fixture().join("io/unet.safetensors")]).unwrap();
    for suffix in ["", "_b1"] {
        let name = |n: &str| format!("{n}{suffix}");
        let t: Vec<f64> = io
            .read(&name("timestep"))
            .unwrap()
            .data
            .iter()
            .map(|t| *t as f64)
            .collect();
        let out = unet
            .forward(
                read(&io, &name("sample")),
                &t,
                read(&io, &name("encoder_hidden_states")),
                &UNetHooks::default(),
            )
            .unwrap();
        assert_close(&format!("unet3d{suffix}"), out, read(&io, &name("out")));
    }
}

#[test]
fn temporal_layers_match_diffusers() {
    let store = TensorStore::open(&[fixture().join("io/layers.safetensors")]).unwrap();
    let x: Tensor<B, 4> = read(&store, "x");
    let frames = 3;
    let weights = Weights::from_store(store);
    let root = weights.root::<B>(&Default::default());
    let conv = TemporalConvLayer::new(&root.pp("temp_conv"), 16, 4).unwrap();
    let attn = TransformerTemporalModel::new(&root.pp("temp_attn"), 16, 2, 8, 4).unwrap();
    let io = TensorStore::open(&[fixture().join("io/layers.safetensors")]).unwrap();
    assert_close(
        "TemporalConvLayer",
        conv.forward(x.clone(), frames).unwrap(),
        read(&io, "temp_conv_out"),
    );
    assert_close(
        "TransformerTemporalModel",
        attn.forward(x.clone(), frames).unwrap(),
        read(&io, "temp_attn_out"),
    );
    // Frames are mixed within a video only: 6 rows are 2 videos of 3 frames, not 3 videos of 2.
    let wrong = conv.forward(x.clone(), 2).unwrap();
    let diff = (wrong - read::<4>(&io, "temp_conv_out"))
        .abs()
        .max()
        .into_scalar();
    assert!(diff > 1e-3, "the frame count does not matter: {diff}");
    assert!(conv.forward(x, 4).is_err(), "6 rows are not videos of 4");
}

#[test]
fn random_init_has_diffusers_parameter_count() {
    let config = UNet3DConditionConfig::from_file(&fixture().join("unet/config.json")).unwrap();
    let weights = Weights::random(3);
    let unet = UNet3DConditionModel::<B>::new(&weights.root(&Default::default()), &config).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("io/meta.json")).unwrap())
            .unwrap();
    let expected = meta["parameter_counts"]["unet"].as_u64().unwrap() as usize;
    assert_eq!(unet.num_params(), expected);
}

#[test]
fn config_errors_name_the_field() {
    let text = std::fs::read_to_string(fixture().join("unet/config.json")).unwrap();
    let base: serde_json::Value = serde_json::from_str(&text).unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut v = base.clone();
        v[key] = value;
        UNet3DConditionConfig::from_json(&v.to_string())
            .unwrap_err()
            .to_string()
    };
    assert!(UNet3DConditionConfig::from_json(&text).is_ok());
    for (key, value, needle) in [
        (
            "num_attention_heads",
            serde_json::json!(4),
            "num_attention_heads",
        ),
        (
            "attention_head_dim",
            serde_json::json!(5),
            "attention_head_dim",
        ),
        (
            "_class_name",
            serde_json::json!("UNet2DConditionModel"),
            "UNet3DConditionModel",
        ),
        (
            "time_cond_proj_dim",
            serde_json::json!(8),
            "time_cond_proj_dim",
        ),
        (
            "down_block_types",
            serde_json::json!(["DownBlock3D"]),
            "block types",
        ),
        (
            "up_block_types",
            serde_json::json!(["UpBlock3D", "UpBlock2D", "UpBlock3D"]),
            "UpBlock2D",
        ),
        (
            "norm_num_groups",
            serde_json::Value::Null,
            "norm_num_groups",
        ),
        ("new_field", serde_json::json!(1), "new_field"),
    ] {
        let err = with(key, value);
        assert!(err.contains(needle), "{key}: {err}");
    }
}

#[test]
fn malformed_inputs_are_errors() {
    let unet = load_unet();
    let device = Default::default();
    let text = Tensor::<B, 3>::zeros([1, 5, 32], &device);
    let hooks = UNetHooks::default();
    let bad_channels = unet.forward(
        Tensor::zeros([1, 3, 2, 8, 8], &device),
        &[1.0],
        text.clone(),
        &hooks,
    );
    assert!(bad_channels
        .unwrap_err()
        .to_string()
        .contains("[1, 3, 2, 8, 8]"));
    let no_frames = unet.forward(
        Tensor::zeros([1, 4, 0, 8, 8], &device),
        &[1.0],
        text.clone(),
        &hooks,
    );
    assert!(no_frames.is_err());
    let wide_text = Tensor::<B, 3>::zeros([1, 5, 16], &device);
    let err = unet
        .forward(
            Tensor::zeros([1, 4, 2, 8, 8], &device),
            &[1.0],
            wide_text,
            &hooks,
        )
        .unwrap_err();
    assert!(err.to_string().contains("encoder_hidden_states"), "{err}");
    let err = unet
        .forward(
            Tensor::zeros([1, 4, 2, 8, 8], &device),
            &[1.0, 2.0],
            text,
            &hooks,
        )
        .unwrap_err();
    assert!(err.to_string().contains("timesteps"), "{err}");
}

/// The tuned variant's injection in the video UNet: the pivot video (frames folded into the batch)
/// through the same layers, φ_n per frame with the time embedding repeated per frame, against the
/// oracle's written-out forward (which equals diffusers' without injection).
#[test]
fn pivot_injection_matches_the_reference() {
    use selfcascade_sd::unet::{fold_frames, PivotInjection};
    let unet = load_unet();
    assert_eq!(unet.injection_channels(), vec![16, 32, 32, 32]);
    let io = TensorStore::open(&[fixture().join("io/unet.safetensors")]).unwrap();
    let t: Vec<f64> = io
        .read("timestep")
        .unwrap()
        .data
        .iter()
        .map(|t| *t as f64)
        .collect();
    let up = Trivial::oracle(unet.injection_channels());
    let piv = TensorStore::open(&[fixture().join("io/pivot.safetensors")]).unwrap();
    let pivot = fold_frames(read::<5>(&piv, "pivot"));
    let run = |latent: Tensor<B, 4>, up: &Trivial| {
        unet.forward(
            read(&io, "sample"),
            &t,
            read(&io, "encoder_hidden_states"),
            &UNetHooks {
                pivot: Some(PivotInjection {
                    latent,
                    upsampler: up,
                }),
                ..Default::default()
            },
        )
    };
    let out = run(pivot.clone(), &up).unwrap();
    assert_close("unet3d pivot", out, read(&piv, "out_pivot"));
    // A pivot of the wrong size, or upsamplers for another UNet, are errors.
    let err = run(pivot.clone().narrow(0, 0, 4), &up).unwrap_err();
    assert!(err.to_string().contains("folded"), "{err}");
    let err = run(pivot, &Trivial::oracle(vec![16, 32, 32])).unwrap_err();
    assert!(err.to_string().contains("injection points"), "{err}");
}

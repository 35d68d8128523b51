//! LVDM's UNet from a latent-diffusion `.ckpt` against the PyTorch reference of `tools/oracle/lvdm.py`
//! (written from the model's equations; its spatial part checked there against diffusers' SD 1.x UNet).

use burn::backend::Flex;
use burn::module::{Module, Param};
use burn::tensor::Tensor;
use selfcascade_sd::load::TensorStore;
use selfcascade_sd::lvdm::blocks::SpatialTemporalTransformer;
use selfcascade_sd::lvdm::{LvdmConfig, LvdmUNet};
use selfcascade_sd::unet::UNetHooks;
use std::path::{Path, PathBuf};

mod common;
use common::{read, Trivial};

type B = Flex;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lvdm")
}

fn config() -> LvdmConfig {
    LvdmConfig::from_file(&fixture().join("config.json")).unwrap()
}

fn load() -> LvdmUNet<B> {
    LvdmUNet::load_ckpt(&fixture().join("tiny.ckpt"), &config(), &Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// max|a − b| ≤ 1e-4·max(1, max|b|), as for the other UNets.
fn assert_close(label: &str, a: Tensor<B, 5>, b: Tensor<B, 5>) {
    assert_eq!(a.dims(), b.dims(), "{label}");
    let scale = b.clone().abs().max().into_scalar().max(1.0);
    let diff = (a - b).abs().max().into_scalar();
    eprintln!("{label}: max |burn − reference| = {diff:.3e} (scale {scale:.2})");
    assert!(diff <= 1e-4 * scale, "{label}: {diff}");
}

fn timesteps(io: &TensorStore) -> Vec<f64> {
    io.read("t")
        .unwrap()
        .data
        .iter()
        .map(|v| *v as f64)
        .collect()
}

#[test]
fn lvdm_unet_matches_the_reference_at_five_frames() {
    let unet = load();
    let io = TensorStore::open(&[fixture().join("io.safetensors")]).unwrap();
    // 5 frames with relative positions clipped at distance 2: the clipping is exercised.
    assert_eq!(unet.config().temporal_length, 2);
    let out = unet
        .forward(
            read(&io, "x"),
            &timesteps(&io),
            read(&io, "context"),
            &UNetHooks::default(),
        )
        .unwrap();
    assert_close("lvdm 5 frames", out, read(&io, "out"));
    // LVDM's 16 frames (one video, the first timestep and context row).
    let t = timesteps(&io);
    let out = unet
        .forward(
            read(&io, "x16"),
            &t[..1],
            read::<3>(&io, "context").narrow(0, 0, 1),
            &UNetHooks::default(),
        )
        .unwrap();
    assert_close("lvdm 16 frames", out, read(&io, "out16"));
}

/// With one frame and every temporal attention's output projection zeroed the UNet is SD 1.x's (the
/// oracle checks its reference against diffusers' UNet2DConditionModel on the same weights).
#[test]
fn one_frame_without_temporal_outputs_is_the_spatial_unet() {
    let mut unet = load();
    let zero = |st: &mut SpatialTemporalTransformer<B>| {
        for block in &mut st.transformer_blocks {
            for attn in [&mut block.attn1_tmp, &mut block.attn2_tmp] {
                let w = attn.to_out.0.weight.val();
                attn.to_out.0.weight = Param::from_tensor(w.zeros_like());
                if let Some(b) = &attn.to_out.0.bias {
                    attn.to_out.0.bias = Some(Param::from_tensor(b.val().zeros_like()));
                }
            }
        }
    };
    let mut n = 0;
    for block in unet
        .input_blocks
        .iter_mut()
        .chain(unet.output_blocks.iter_mut())
    {
        if let Some(st) = &mut block.attn {
            zero(st);
            n += 1;
        }
    }
    zero(&mut unet.middle_block.1);
    assert_eq!(
        n + 1,
        11,
        "transformers: 4 down (levels 0, 1), 1 middle, 6 up"
    );
    let io = TensorStore::open(&[fixture().join("io.safetensors")]).unwrap();
    let out = unet
        .forward(
            read(&io, "x1"),
            &timesteps(&io),
            read(&io, "context"),
            &UNetHooks::default(),
        )
        .unwrap();
    assert_close("lvdm 1 frame, spatial", out, read(&io, "out1"));
}

#[test]
fn checkpoint_loading_is_strict_for_the_unet_and_counts_every_parameter() {
    let unet = load();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("meta.json")).unwrap())
            .unwrap();
    assert_eq!(
        unet.num_params() as u64,
        meta["parameters"].as_u64().unwrap()
    );
    // Another config: the mismatch is named.
    let wide = LvdmConfig {
        model_channels: 32,
        ..config()
    };
    let err = LvdmUNet::<B>::load_ckpt(&fixture().join("tiny.ckpt"), &wide, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.diffusion_model."), "{err}");
    // Fewer levels than the checkpoint holds: its extra UNet tensors are unexpected.
    let short = LvdmConfig {
        channel_mult: vec![1, 2],
        ..config()
    };
    let err = LvdmUNet::<B>::load_ckpt(&fixture().join("tiny.ckpt"), &short, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.diffusion_model"), "{err}");
    assert!(
        LvdmUNet::<B>::load_ckpt(Path::new("nope.ckpt"), &config(), &Default::default()).is_err()
    );
}

#[test]
fn malformed_inputs_are_errors() {
    let unet = load();
    let dev = Default::default();
    let ctx = Tensor::<B, 3>::zeros([1, 7, 32], &dev);
    let bad = |x: Tensor<B, 5>, ctx: Tensor<B, 3>| {
        unet.forward(x, &[1.0], ctx, &UNetHooks::default())
            .unwrap_err()
            .to_string()
    };
    assert!(bad(Tensor::zeros([1, 3, 2, 8, 8], &dev), ctx.clone()).contains("[1, 3, 2, 8, 8]"));
    assert!(bad(Tensor::zeros([1, 4, 2, 6, 8], &dev), ctx.clone()).contains("multiple of 4"));
    assert!(bad(
        Tensor::zeros([1, 4, 2, 8, 8], &dev),
        Tensor::zeros([1, 7, 16], &dev)
    )
    .contains("context"));
}

/// The checkpoint's first stage (latent diffusion's names) and text encoder are the sd15 fixture's
/// VAE and text encoder: loaded from the `.ckpt`, they reproduce that fixture's diffusers and
/// transformers references.
#[test]
fn first_and_cond_stage_load_from_the_checkpoint() {
    use selfcascade_sd::clip::config::CLIPTextConfig;
    use selfcascade_sd::lvdm::checkpoint::{load_cond_stage, load_first_stage};
    use selfcascade_sd::vae::AutoencoderKLConfig;
    let dev = Default::default();
    let sd15 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/sd15");
    let ckpt = fixture().join("tiny.ckpt");
    let vae_cfg = AutoencoderKLConfig::from_file(&sd15.join("vae/config.json")).unwrap();
    let vae = load_first_stage::<B>(&ckpt, &vae_cfg, &dev).unwrap_or_else(|e| panic!("{e}"));
    let io = TensorStore::open(&[sd15.join("io/vae_decode.safetensors")]).unwrap();
    let got = vae.decode(read::<4>(&io, "latent")).unwrap();
    let want: Tensor<B, 4> = read(&io, "decoded");
    let diff = (got - want).abs().max().into_scalar();
    assert!(diff < 1e-4, "VAE decode from the .ckpt: {diff}");

    let te_cfg = CLIPTextConfig::from_file(&sd15.join("text_encoder/config.json")).unwrap();
    let te = load_cond_stage::<B>(&ckpt, &te_cfg, &dev).unwrap_or_else(|e| panic!("{e}"));
    let io = TensorStore::open(&[sd15.join("io/text_encoder.safetensors")]).unwrap();
    let (_, ids) = io.read_int("input_ids").unwrap();
    let rows: Vec<Vec<i64>> = ids.chunks(77).map(|r| r.to_vec()).collect();
    let got = te.forward(&rows).unwrap().last_hidden_state;
    let want: Tensor<B, 3> = read(&io, "last_hidden_state");
    let diff = (got - want).abs().max().into_scalar();
    assert!(diff < 1e-4, "text encoder from the .ckpt: {diff}");
    // The UNet's checkpoint has no text encoder of another width: a wrong config is named.
    let wrong = CLIPTextConfig {
        hidden_size: 64,
        ..te_cfg
    };
    assert!(load_cond_stage::<B>(&ckpt, &wrong, &dev).is_err());
}

/// The whole LVDM model from its checkpoint as a text-to-video pipeline: direct sampling equals LVDM's
/// DDIM sampler (diffusers' DDIM with LVDM's schedule) run with the reference UNet, 3 steps, guidance 7.5.
#[test]
fn lvdm_pipeline_samples_as_the_reference() {
    use selfcascade_core::{InjectedNoise, Size};
    use selfcascade_sd::clip::config::CLIPTextConfig;
    use selfcascade_sd::pipeline::{GenerateRequest, LvdmParts, Method, PromptEmbeds, TextToVideo};
    use selfcascade_sd::vae::AutoencoderKLConfig;
    use std::ops::ControlFlow;
    let dev = Default::default();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let sd15 = fixtures.join("models/sd15");
    let parts = LvdmParts {
        unet: config(),
        vae: AutoencoderKLConfig::from_file(&sd15.join("vae/config.json")).unwrap(),
        text_encoder: CLIPTextConfig::from_file(&sd15.join("text_encoder/config.json")).unwrap(),
    };
    // SD 1.5's CLIP tokenizer (CLIP ViT-L/14's): vocabulary and merges with SD 1.5's config.
    let tok = std::env::temp_dir().join(format!("selfcascade-lvdm-tok-{}", std::process::id()));
    std::fs::create_dir_all(&tok).unwrap();
    let clip = fixtures.join("clip-tokenizer");
    for (dir, f) in [
        (clip.clone(), "vocab.json"),
        (clip.clone(), "merges.txt"),
        (clip.join("configs/sd15"), "tokenizer_config.json"),
        (clip.join("configs/sd15"), "special_tokens_map.json"),
    ] {
        std::fs::copy(dir.join(f), tok.join(f)).unwrap();
    }
    let t2v = TextToVideo::<B>::load_lvdm(&fixture().join("tiny.ckpt"), &tok, &parts, &dev)
        .unwrap_or_else(|e| panic!("{e}"));
    // LVDM's training size is 32² latents; the tiny VAE down-samples by 4.
    assert_eq!(t2v.base_size(), Size::new(128, 128));
    let io = TensorStore::open(&[fixture().join("io.safetensors")]).unwrap();
    let embeds = PromptEmbeds {
        positive: read::<3>(&io, "context").narrow(0, 0, 1),
        negative: read(&io, "sample_uncond"),
        positive_pooled: None,
        negative_pooled: None,
        truncated: false,
    };
    let request = GenerateRequest {
        width: 128,
        height: 128,
        method: Method::Direct,
        steps: 3,
        guidance: 7.5,
        strength: 0.7,
        scheduler: None,
        eta: None,
        keep_stages: false,
    };
    let mut t = Vec::new();
    let out = t2v
        .generate_latents(
            &embeds,
            &request,
            3,
            &mut InjectedNoise::new(vec![read::<5>(&io, "sample_noise")], 0),
            &mut |p| {
                t.push(p.timestep);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert_eq!(t, vec![667.0, 334.0, 1.0]);
    assert_close(
        "lvdm direct sampling",
        out.latent.clone(),
        read(&io, "sample_out"),
    );
    // Attn-SF is not available for LVDM, and the tuned method needs upsamplers: clear errors.
    for method in [Method::SelfCascadeTuned, Method::AttnSf] {
        let r = GenerateRequest {
            method,
            width: 256,
            height: 256,
            ..request.clone()
        };
        let err = t2v.generate_latents(
            &embeds,
            &r,
            3,
            &mut selfcascade_core::SeededNoise::new(0),
            &mut |_| ControlFlow::Continue(()),
        );
        assert!(err.is_err(), "{method:?}");
    }
    // Frames decode through the checkpoint's VAE.
    let frames = t2v.decode(out.latent, 2).unwrap();
    assert_eq!(
        (frames.len(), frames[0].len(), frames[0][0].width),
        (1, 3, 128)
    );
    std::fs::remove_dir_all(&tok).unwrap();
}

/// The tuned variant on LVDM: the pivot video through the same blocks, φ_n added after the first three
/// encoder levels and the middle block, against the reference.
#[test]
fn pivot_injection_matches_the_reference() {
    use selfcascade_sd::unet::{fold_frames, PivotInjection};
    let unet = load();
    assert_eq!(unet.injection_channels(), vec![16, 32, 32, 32]);
    let io = TensorStore::open(&[fixture().join("io.safetensors")]).unwrap();
    let up = Trivial::oracle(unet.injection_channels());
    let run = |latent: Tensor<B, 4>, up: &Trivial| {
        let hooks = UNetHooks {
            pivot: Some(PivotInjection {
                latent,
                upsampler: up,
            }),
            ..Default::default()
        };
        unet.forward(
            read(&io, "x"),
            &timesteps(&io),
            read(&io, "context"),
            &hooks,
        )
    };
    let pivot = fold_frames(read::<5>(&io, "pivot"));
    assert_close(
        "lvdm pivot",
        run(pivot.clone(), &up).unwrap(),
        read(&io, "out_pivot"),
    );
    assert!(run(pivot.clone().narrow(0, 0, 3), &up).is_err());
    assert!(run(pivot, &Trivial::oracle(vec![16, 32])).is_err());
}

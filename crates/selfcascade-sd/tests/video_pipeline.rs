//! The text-to-video self-cascade against diffusers (fixtures from `tools/oracle/video_pipeline.py`):
//! stage 0 equals `TextToVideoSDPipeline` (direct sampling at the base size) from the injected noise,
//! stage 1 equals `VideoToVideoSDPipeline` on the frame-by-frame bicubic-upsampled stage-0 latent with
//! strength 0.7 and the injected re-noising noise; the decoded frames equal the pipeline's.

use burn::backend::Flex;
use burn::tensor::Tensor;
use selfcascade_core::{InjectedNoise, Size};
use selfcascade_sd::load::TensorStore;
use selfcascade_sd::pipeline::{decode_video, GenerateRequest, Method, PromptEmbeds, TextToVideo};
use selfcascade_sd::vae::AutoencoderKL;
use std::ops::ControlFlow;
use std::path::PathBuf;

mod common;
use common::{read, Trivial};

type B = Flex;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn pipeline() -> TextToVideo<B> {
    let dev = Default::default();
    let mut t2v = TextToVideo::<B>::load(&models().join("ms-t2v"), Some("fp16"), &dev).unwrap();
    t2v.vae = Some(AutoencoderKL::load(&models().join("sd21/vae"), None, &dev).unwrap());
    t2v
}

fn request(method: Method, size: Size) -> GenerateRequest {
    GenerateRequest {
        width: size.width,
        height: size.height,
        method,
        steps: 4,
        guidance: 7.5,
        strength: 0.7,
        scheduler: None,
        eta: None,
        keep_stages: true,
    }
}

#[test]
fn video_self_cascade_equals_diffusers_stage_by_stage() {
    let store = TensorStore::open(&[models().join("ms-t2v/io/pipeline.safetensors")]).unwrap();
    let t2v = pipeline();
    assert_eq!(t2v.base_size(), Size::new(32, 32));
    let embeds = PromptEmbeds {
        positive: read(&store, "prompt_embeds"),
        negative: read(&store, "negative_prompt_embeds"),
        positive_pooled: None,
        negative_pooled: None,
        truncated: false,
    };
    let req = request(Method::SelfCascade, Size::new(64, 64));
    let plan = t2v.plan(&req).unwrap();
    assert_eq!(plan.stages(), &[Size::new(32, 32), Size::new(64, 64)]);
    let noise = vec![read::<5>(&store, "stage0"), read::<5>(&store, "stage1")];
    let mut steps = [0usize; 2];
    let out = t2v
        .generate_latents(
            &embeds,
            &req,
            3,
            &mut InjectedNoise::new(noise, 0),
            &mut |p| {
                steps[p.stage] += 1;
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    // 4 steps at the base size; strength 0.7 keeps int(4 · 0.7) = 2 steps at 64².
    assert_eq!(steps, [4, 2]);
    for (r, got) in out.stages.iter().enumerate() {
        let want: Tensor<B, 5> = read(&store, &format!("out_stage{r}"));
        assert_eq!(got.dims(), want.dims());
        let scale = want.clone().abs().max().into_scalar().max(1.0);
        let diff = (got.clone() - want).abs().max().into_scalar();
        eprintln!("stage {r}: max |burn − diffusers| = {diff:.3e} (scale {scale:.1})");
        assert!(diff <= 1e-4 * scale, "stage {r}: {diff} > {}", 1e-4 * scale);
    }

    // Frames: [B, T, 3, H, W] in [0, 1] from diffusers; ours are 8-bit, so within one level.
    let frames = store.read("frames").unwrap();
    assert_eq!(frames.shape, [1, 3, 3, 64, 64]);
    for frame_batch in [1, 2, 3] {
        // Whole frames, as diffusers decodes them (the fixture VAE's own tile is 48 px).
        let vae = t2v.vae.as_ref().unwrap();
        let videos = decode_video(
            vae,
            out.latent.clone(),
            frame_batch,
            &vae.tiling_with_size(64),
        )
        .unwrap();
        assert_eq!((videos.len(), videos[0].len()), (1, 3));
        let mut worst = 0f32;
        for (f, img) in videos[0].iter().enumerate() {
            assert_eq!((img.width, img.height), (64, 64));
            for (p, rgb) in img.pixels.chunks(3).enumerate() {
                for (ch, v) in rgb.iter().enumerate() {
                    let want = frames.data[((f * 3 + ch) * 64 * 64) + p] * 255.0;
                    worst = worst.max((*v as f32 - want).abs());
                }
            }
        }
        assert!(
            worst <= 0.51,
            "frame batch {frame_batch}: {worst} levels off"
        );
    }
    // The pipeline's own decode tiles frames larger than the VAE's tile, and returns every frame.
    let tiled = t2v.decode(out.latent, 2).unwrap();
    assert_eq!((tiled.len(), tiled[0].len()), (1, 3));
}

#[test]
fn video_methods_and_inputs_are_checked() {
    let t2v = pipeline();
    let err = t2v
        .plan(&request(Method::ScaleCrafter, Size::new(64, 64)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not available for video"), "{err}");
    let err = t2v
        .plan(&request(Method::SelfCascade, Size::new(60, 64)))
        .unwrap_err();
    assert!(err.to_string().contains("60"), "{err}");
    let embeds = PromptEmbeds {
        positive: Tensor::zeros([1, 7, 32], &Default::default()),
        negative: Tensor::zeros([1, 7, 32], &Default::default()),
        positive_pooled: None,
        negative_pooled: None,
        truncated: false,
    };
    let err = t2v
        .generate_latents(
            &embeds,
            &request(Method::Direct, Size::new(32, 32)),
            0,
            &mut selfcascade_core::SeededNoise::new(1),
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("frame"), "{err}");
    // No tokenizer/text encoder in the fixture folder.
    assert!(t2v.encode_prompt("a cat", "").is_err());
}

/// The tuned method on video: stage 0 is the tuning-free stage 0; in stage 1 the upsamplers act while
/// t > t_min (DDIM 4 steps: stage 1 runs t = 251, then t = 1 plain), so an upsampler that adds zero, or
/// a t_min above every step, gives the tuning-free video exactly, and a non-zero one changes stage 1 only.
#[test]
fn tuned_video_injects_per_frame_while_t_above_t_min() {
    let store = TensorStore::open(&[models().join("ms-t2v/io/pipeline.safetensors")]).unwrap();
    let mut t2v = pipeline();
    let embeds = PromptEmbeds {
        positive: read(&store, "prompt_embeds"),
        negative: read(&store, "negative_prompt_embeds"),
        positive_pooled: None,
        negative_pooled: None,
        truncated: false,
    };
    let noise = || InjectedNoise::new(vec![read::<5>(&store, "stage0"), read(&store, "stage1")], 0);
    let run = |t2v: &TextToVideo<B>, method: Method| {
        t2v.generate_latents(
            &embeds,
            &request(method, Size::new(64, 64)),
            3,
            &mut noise(),
            &mut |_| ControlFlow::Continue(()),
        )
    };
    let free = run(&t2v, Method::SelfCascade).unwrap();
    let err = run(&t2v, Method::SelfCascadeTuned).unwrap_err();
    assert!(err.to_string().contains("set_feature_upsampler"), "{err}");
    let channels = t2v.unet.injection_channels();
    let up = |c: f64, k: f64| {
        Box::new(Trivial {
            channels: channels.clone(),
            c: vec![c; 4],
            k,
        })
    };
    let bad = Box::new(Trivial::oracle(vec![16, 32]));
    assert!(t2v.set_feature_upsampler(bad, 100.0).is_err());
    let max_diff =
        |a: &Tensor<B, 5>, b: &Tensor<B, 5>| (a.clone() - b.clone()).abs().max().into_scalar();
    for (c, k, t_min, same) in [
        (0.0, 0.0, 100.0, true),
        (0.5, 0.01, 1000.0, true),
        (0.5, 0.01, 100.0, false),
    ] {
        t2v.set_feature_upsampler(up(c, k), t_min).unwrap();
        let tuned = run(&t2v, Method::SelfCascadeTuned).unwrap();
        assert_eq!(max_diff(&tuned.stages[0], &free.stages[0]), 0.0);
        let d = max_diff(&tuned.latent, &free.latent);
        assert_eq!(
            d == 0.0,
            same,
            "c {c}, k {k}, t_min {t_min}: stage 1 differs by {d}"
        );
    }
}

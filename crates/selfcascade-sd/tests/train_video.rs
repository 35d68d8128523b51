//! Algorithm 1 on clips: the feature upsamplers of a video UNet (the tiny ModelScope-shaped UNet of
//! `fixtures/models/ms-t2v`, whose pivot-injected forward matches diffusers in `tests/unet3d.rs`)
//! trained with the UNet frozen.
//!
//! - The trainer's loss on a batch of clips equals the ε-MSE of the 5-D forward run clip by clip,
//!   with one timestep per clip for all its frames (a per-frame timestep, a frame order mixed up by
//!   the folding, or a coefficient not repeated per frame would each break it).
//! - Training on clips lowers the held-out loss and leaves the UNet untouched; the image UNet refuses
//!   clips.
//! - Clip folders become latents `[F, C, H, W]` with one crop for every frame, the chosen window of
//!   frames, pivots at half the size, and a cache that returns what was computed.
//!
//! Mutation check done by hand once: applying the per-clip coefficients √ᾱ_t, √(1−ᾱ_t) in frame-major
//! instead of clip-major order makes `clip_loss_is_the_mse_of_the_video_forward_clip_by_clip` fail
//! (relative error 2.8e-3 against a tolerance of 1e-5).

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Distribution, Tensor, TensorData};
use selfcascade_core::scheduler::SchedulerConfig;
use selfcascade_core::Size;
use selfcascade_sd::clip::text_model::CLIPTextModel;
use selfcascade_sd::clip::ClipTokenizer;
use selfcascade_sd::pipeline::{TextToVideo, VideoUNet};
use selfcascade_sd::train::{
    prepare_video_training_set, scan_video_dataset, Conditioning, PivotSource, TrainingExample,
    TrainingSet, UpsamplerTrainConfig, UpsamplerTrainer, VideoPrepareOptions,
};
use selfcascade_sd::unet::{fold_frames, PivotInjection, UNet3DConditionModel, UNetHooks};
use selfcascade_sd::upsampler::{LightUpsampler, LightUpsamplerConfig};
use selfcascade_sd::vae::AutoencoderKL;
use std::path::{Path, PathBuf};

mod common;

type B = Flex;
type A = Autodiff<Flex>;

const FRAMES: usize = 3;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "selfcascade-train-video-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn unet3d<BB: Backend>() -> UNet3DConditionModel<BB> {
    UNet3DConditionModel::load(
        &models().join("ms-t2v/unet"),
        Some("fp16"),
        &Default::default(),
    )
    .unwrap()
}

fn scheduler() -> SchedulerConfig {
    SchedulerConfig::from_file(models().join("ms-t2v/scheduler/scheduler_config.json")).unwrap()
}

fn light_config(unet: &UNet3DConditionModel<A>) -> LightUpsamplerConfig {
    LightUpsamplerConfig {
        channels: unet.injection_channels(),
        time_embed_dim: unet.time_embed_dim(),
    }
}

/// 4 clips of 3 frames at a 16×16 latent (pivots 8×8), 2 captions; each frame is nearest(pivot) plus
/// detail.
fn clips() -> TrainingSet<B> {
    let device = Default::default();
    <B as Backend>::seed(&device, 5);
    let examples = (0..4)
        .map(|i| {
            let pivot =
                Tensor::<B, 4>::random([FRAMES, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
            let detail = Tensor::<B, 4>::random(
                [FRAMES, 4, 16, 16],
                Distribution::Normal(0.0, 0.1),
                &device,
            );
            TrainingExample {
                latent: selfcascade_sd::unet::resize_nearest(pivot.clone(), (16, 16)) + detail,
                pivot,
                caption: i % 2,
            }
        })
        .collect();
    let caption = || Conditioning {
        context: Tensor::random([1, 5, 32], Distribution::Normal(0.0, 1.0), &device),
        added: None,
    };
    TrainingSet {
        examples,
        captions: (0..2).map(|_| caption()).collect(),
        empty_caption: caption(),
    }
}

type VideoTrainer = UpsamplerTrainer<A, LightUpsampler<A>, VideoUNet<A>>;

fn trainer(config: UpsamplerTrainConfig) -> VideoTrainer {
    let device = Default::default();
    let unet = unet3d::<A>();
    let up = LightUpsampler::<A>::init(&light_config(&unet), 11, &device).unwrap();
    let unet = VideoUNet::ModelScope(Box::new(unet));
    UpsamplerTrainer::new(unet, up, &scheduler(), config, &device).unwrap()
}

fn config(steps: u64) -> UpsamplerTrainConfig {
    UpsamplerTrainConfig {
        seed: 3,
        steps,
        batch_size: 2,
        learning_rate: 1e-2,
        caption_dropout: 0.5,
        checkpoint_every: 0,
        ..Default::default()
    }
}

#[test]
fn clip_loss_is_the_mse_of_the_video_forward_clip_by_clip() {
    let data = clips();
    let t = trainer(config(1));
    let shape = data.latent_shape().unwrap();
    assert_eq!(shape, [FRAMES, 4, 16, 16]);
    // Draws with a kept and a dropped caption and timesteps far apart (so that a coefficient applied
    // to the wrong clip's frames shows).
    let draws = (0..256)
        .map(|s| t.draws(s, data.examples.len(), shape).unwrap())
        .find(|d| {
            d.dropped.contains(&true)
                && d.dropped.contains(&false)
                && d.timesteps[0].abs_diff(d.timesteps[1]) > 400
        })
        .expect("some step drops one caption of two, at distant timesteps");
    assert_eq!(draws.noise.len(), 2 * FRAMES * 4 * 16 * 16);
    let loss = t.loss(&data, &draws).unwrap().into_scalar() as f64;

    // The reference: the inner-backend UNet and upsampler, one clip at a time, in the 5-D layout.
    let unet = unet3d::<B>();
    let phi = t.upsampler().valid();
    let alphas = selfcascade_core::scheduler::betas::alphas_cumprod(&scheduler().betas().unwrap());
    let per_clip = FRAMES * 4 * 16 * 16;
    let to_video = |x: Tensor<B, 4>| {
        let [f, c, h, w] = x.dims();
        x.reshape([1, f, c, h, w]).swap_dims(1, 2)
    };
    let mut sum = 0.0;
    for (k, &i) in draws.examples.iter().enumerate() {
        let a = alphas[draws.timesteps[k]] as f64;
        let noise = Tensor::<B, 4>::from_data(
            TensorData::new(
                draws.noise[k * per_clip..(k + 1) * per_clip].to_vec(),
                [FRAMES, 4, 16, 16],
            ),
            &Default::default(),
        );
        let x0 = data.examples[i].latent.clone();
        let noisy = x0.mul_scalar(a.sqrt()) + noise.clone().mul_scalar((1.0 - a).sqrt());
        let context = data
            .conditioning(i, draws.dropped[k])
            .unwrap()
            .context
            .clone();
        let hooks = UNetHooks {
            pivot: Some(PivotInjection {
                latent: fold_frames(to_video(data.examples[i].pivot.clone())),
                upsampler: &phi,
            }),
            ..Default::default()
        };
        let pred = unet
            .forward(
                to_video(noisy),
                &[draws.timesteps[k] as f64],
                context,
                &hooks,
            )
            .unwrap();
        let err: f32 = (pred - to_video(noise)).square().sum().into_scalar();
        sum += err as f64;
    }
    let reference = sum / (2 * per_clip) as f64;
    let rel = (loss - reference).abs() / reference;
    assert!(
        rel < 1e-5,
        "trainer loss {loss} against the clip-by-clip 5-D loss {reference} (rel {rel:.2e})"
    );
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

#[test]
fn training_on_clips_lowers_the_loss_and_keeps_the_unet_frozen() {
    let data = clips();
    let mut t = trainer(config(12));
    let held_out = |t: &VideoTrainer| {
        (1000..1004)
            .map(|s| {
                let draws = t
                    .draws(s, data.examples.len(), data.latent_shape().unwrap())
                    .unwrap();
                t.loss(&data, &draws).unwrap().into_scalar() as f64
            })
            .sum::<f64>()
            / 4.0
    };
    let VideoUNet::ModelScope(u) = t.unet() else {
        unreachable!()
    };
    let unet_before = params(u.as_ref());
    let before = held_out(&t);
    for _ in 0..12 {
        let r = t.step(&data).unwrap();
        assert!(r.loss.is_finite());
    }
    let after = held_out(&t);
    assert!(
        after < 0.95 * before,
        "held-out loss {before} → {after}: training on clips did not help"
    );
    let VideoUNet::ModelScope(u) = t.unet() else {
        unreachable!()
    };
    assert!(params(u.as_ref()) == unet_before, "the video UNet changed");
}

#[test]
fn the_image_unet_refuses_clips() {
    let device = Default::default();
    let unet = selfcascade_sd::unet::UNet2DConditionModel::<A>::load(
        &models().join("sd21/unet"),
        None,
        &device,
    )
    .unwrap();
    let up = LightUpsampler::<A>::init(&LightUpsamplerConfig::for_unet(&unet), 0, &device).unwrap();
    let mut t = UpsamplerTrainer::new(unet, up, &scheduler(), config(1), &device).unwrap();
    let err = t.step(&clips()).unwrap_err().to_string();
    assert!(
        err.contains("3 frames") && err.contains("single images"),
        "{err}"
    );
}

/// A text-to-video model on the CPU: the ms-t2v UNet with the tiny SD 2.1 VAE (×4) and text encoder,
/// and a byte-level tokenizer.
fn pipeline(dir: &Path) -> TextToVideo<B> {
    let dev = Default::default();
    let mut t2v = TextToVideo::<B>::load(&models().join("ms-t2v"), Some("fp16"), &dev).unwrap();
    t2v.vae = Some(AutoencoderKL::load(&models().join("sd21/vae"), None, &dev).unwrap());
    t2v.text_encoder =
        Some(CLIPTextModel::load(&models().join("sd21/text_encoder"), None, &dev).unwrap());
    let tok = dir.join("tokenizer");
    common::byte_tokenizer::write_byte_tokenizer(&tok);
    t2v.tokenizer = Some(ClipTokenizer::from_dir(&tok).unwrap());
    t2v
}

/// Writes clip `name` of `n` frames; frame k is a diagonal gradient (spatially varying, so different
/// crops give different latents) brightened by 20·k.
fn write_clip(data: &Path, name: &str, n: usize, caption: Option<&str>) {
    let dir = data.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for k in 0..n {
        let img = image::RgbImage::from_fn(80, 72, |x, y| {
            let v = ((x * 2 + y) as usize + 20 * k).min(255) as u8;
            image::Rgb([v, 255 - v, (x * 3) as u8])
        });
        img.save(dir.join(format!("{k:04}.png"))).unwrap();
    }
    if let Some(c) = caption {
        std::fs::write(data.join(format!("{name}.txt")), c).unwrap();
    }
}

fn options(cache: Option<PathBuf>) -> VideoPrepareOptions {
    VideoPrepareOptions {
        size: Size::new(64, 64),
        frames: FRAMES,
        frame_stride: 2,
        pivot: PivotSource::Downsampled,
        cache,
        seed: 9,
    }
}

#[test]
fn clip_folders_become_frame_latents_with_one_crop_and_a_cache() {
    let dir = scratch("prepare");
    let data = dir.join("data");
    // 5 frames with stride 2 leave one window: frames 0, 2, 4.
    write_clip(&data, "a", 5, Some("a red circle"));
    write_clip(&data, "b", 5, Some("a red circle"));
    std::fs::create_dir_all(data.join("c")).unwrap();
    write_clip(&data, "c", 5, None);
    std::fs::write(data.join("c/caption.txt"), "a blue square\n").unwrap();
    let clips = scan_video_dataset(&data).unwrap();
    assert_eq!(clips.len(), 3);
    assert_eq!(clips[2].caption, "a blue square");
    assert_eq!(clips[0].frames.len(), 5);

    let t2v = pipeline(&dir);
    let cache = dir.join("cache");
    let mut calls = 0;
    let set =
        prepare_video_training_set(&t2v, &clips, &options(Some(cache.clone())), &mut |_, _| {
            calls += 1
        })
        .unwrap();
    assert_eq!(calls, 3);
    assert_eq!(
        set.captions.len(),
        2,
        "one conditioning per distinct caption"
    );
    assert_eq!(set.latent_shape().unwrap(), [FRAMES, 4, 16, 16]);
    assert_eq!(set.examples[0].pivot.dims(), [FRAMES, 4, 8, 8]);

    // Clip a's window is source frames 0, 2, 4 (5 frames, stride 2). Each row of its latent must be the
    // VAE latent of that frame resized (80×72 → 71×64) and cropped at one offset shared by all frames.
    let vae = t2v.vae.as_ref().unwrap();
    let e = &set.examples[0];
    let rows: Vec<Vec<f32>> = (0..FRAMES)
        .map(|k| {
            e.latent
                .clone()
                .narrow(0, k, 1)
                .into_data()
                .to_vec()
                .unwrap()
        })
        .collect();
    assert!(rows[0] != rows[1], "window frames must differ");
    // Re-encode each window frame under every possible crop offset; exactly one offset, the same for
    // all three frames, must reproduce the rows.
    let frames: Vec<image::RgbImage> = [0, 2, 4]
        .iter()
        .map(|k| {
            image::open(data.join(format!("a/{k:04}.png")))
                .unwrap()
                .to_rgb8()
        })
        .collect();
    let resized: Vec<_> = frames
        .iter()
        .map(|f| image::imageops::resize(f, 71, 64, image::imageops::FilterType::Lanczos3))
        .collect();
    let matches_at = |x: u32| {
        (0..FRAMES).all(|k| {
            let crop = image::imageops::crop_imm(&resized[k], x, 0, 64, 64).to_image();
            let (mean, _) = vae
                .encode(selfcascade_sd::train::image_tensor::<B>(
                    &crop,
                    &Default::default(),
                ))
                .unwrap();
            let lat: Vec<f32> = mean
                .mul_scalar(vae.scaling_factor())
                .into_data()
                .to_vec()
                .unwrap();
            lat.iter()
                .zip(&rows[k])
                .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()))
        })
    };
    let offsets: Vec<u32> = (0..=7).filter(|&x| matches_at(x)).collect();
    assert_eq!(
        offsets.len(),
        1,
        "one crop for every frame; matching offsets {offsets:?}"
    );

    // The cache returns what was computed.
    let again =
        prepare_video_training_set(&t2v, &clips, &options(Some(cache.clone())), &mut |_, _| {})
            .unwrap();
    let flat = |t: &Tensor<B, 4>| t.clone().into_data().to_vec::<f32>().unwrap();
    for (x, y) in set.examples.iter().zip(&again.examples) {
        assert_eq!(flat(&x.latent), flat(&y.latent));
        assert_eq!(flat(&x.pivot), flat(&y.pivot));
    }
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 3);
}

#[test]
fn bad_clip_data_is_refused_with_what_would_be_right() {
    let dir = scratch("bad");
    let data = dir.join("data");
    write_clip(&data, "short", 4, Some("x"));
    let clips = scan_video_dataset(&data).unwrap();
    let t2v = pipeline(&dir);
    let err = prepare_video_training_set(&t2v, &clips, &options(None), &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("4 frames") && err.contains("at least 5"),
        "{err}"
    );
    let err = prepare_video_training_set(
        &t2v,
        &clips,
        &VideoPrepareOptions {
            size: Size::new(48, 64),
            ..options(None)
        },
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("multiples of 32"), "{err}");
    let err = prepare_video_training_set(
        &t2v,
        &clips,
        &VideoPrepareOptions {
            pivot: PivotSource::Files,
            ..options(None)
        },
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("downsampled or generated"), "{err}");

    write_clip(&data, "uncaptioned", 5, None);
    let err = scan_video_dataset(&data).unwrap_err().to_string();
    assert!(
        err.contains("uncaptioned.txt") && err.contains("caption.txt"),
        "{err}"
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = scan_video_dataset(&empty).unwrap_err().to_string();
    assert!(err.contains("no training clips"), "{err}");
}

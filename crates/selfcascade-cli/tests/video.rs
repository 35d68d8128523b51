//! End-to-end `selfcascade generate-video` on a tiny random-weight text-to-video folder: the
//! ModelScope-shaped UNet of `tools/oracle/unet3d.py` with the tiny SD 2.1 VAE and text encoder of
//! `tools/oracle/models.py`, and a byte-level tokenizer.

mod common;

use common::{copy_dir, selfcascade, write_byte_tokenizer};
use std::path::{Path, PathBuf};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../selfcascade-sd/tests/fixtures/models")
}

/// A text-to-video folder in a fresh temporary folder for test `name`.
fn t2v(name: &str) -> PathBuf {
    let dir = common::tmp("video", name).join("model");
    for (from, part) in [
        ("ms-t2v", "unet"),
        ("ms-t2v", "scheduler"),
        ("sd21", "vae"),
        ("sd21", "text_encoder"),
    ] {
        copy_dir(&models().join(from).join(part), &dir.join(part));
    }
    write_byte_tokenizer(&dir.join("tokenizer"));
    dir
}

fn gif_frames(path: &Path) -> Vec<(u16, u16, Vec<u8>)> {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::RGBA);
    let mut dec = opts.read_info(std::fs::File::open(path).unwrap()).unwrap();
    let mut frames = Vec::new();
    while let Some(f) = dec.read_next_frame().unwrap() {
        frames.push((f.width, f.height, f.buffer.to_vec()));
    }
    frames
}

fn run(model: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "generate-video",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red circle moving left",
        "--frames",
        "3",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ];
    if !extra.contains(&"--steps") {
        args.extend_from_slice(&["--steps", "2"]);
    }
    args.extend_from_slice(extra);
    let (ok, _, err) = selfcascade(&args);
    (ok, err)
}

#[test]
fn self_cascade_video_writes_a_looping_gif_and_frames() {
    let model = t2v("gif");
    let out = model.parent().unwrap().join("v.gif");
    let (ok, err) = run(
        &model,
        &out,
        &["--width", "64", "--method", "self-cascade", "--save-frames"],
    );
    assert!(ok, "{err}");
    assert!(err.contains("3 frames of 64x64"), "{err}");
    let frames = gif_frames(&out);
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|(w, h, _)| (*w, *h) == (64, 64)));
    for i in 0..3 {
        let png = model.parent().unwrap().join(format!("v-frame{i:03}.png"));
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
        let info = dec.read_info().unwrap();
        assert_eq!((info.info().width, info.info().height), (64, 64));
    }
    // The same seed gives the same video.
    let again = model.parent().unwrap().join("again.gif");
    assert!(run(&model, &again, &["--width", "64"]).0);
    assert!(
        gif_frames(&again) == frames,
        "the same seed gave another video"
    );
}

#[test]
fn direct_video_writes_an_apng() {
    let model = t2v("apng");
    let out = model.parent().unwrap().join("v.png");
    let (ok, err) = run(&model, &out, &["--width", "32", "--method", "direct"]);
    assert!(ok, "{err}");
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let reader = dec.read_info().unwrap();
    let actl = reader.info().animation_control().unwrap();
    assert_eq!(actl.num_frames, 3);
    assert_eq!((reader.info().width, reader.info().height), (32, 32));
}

#[test]
fn bad_video_requests_fail_clearly_and_write_nothing() {
    let model = t2v("bad");
    let dir = model.parent().unwrap().to_path_buf();
    let cases: [(&str, Vec<&str>, &str); 4] = [
        ("v.mp4", vec![], ".gif"),
        (
            "v.gif",
            vec!["--method", "scalecrafter"],
            "not available for video",
        ),
        ("v.gif", vec!["--width", "60"], "60"),
        ("v.gif", vec!["--frames", "0"], "--frames"),
    ];
    for (name, extra, needle) in cases {
        let out = dir.join(name);
        let (ok, err) = run(&model, &out, &extra);
        assert!(!ok && err.contains(needle), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} left {}", out.display());
    }
    // An image model is not a video model.
    let image_model = models().join("sd21");
    let (ok, err) = run(&image_model, &dir.join("v.gif"), &[]);
    assert!(!ok && err.contains("UNet3DConditionModel"), "{err}");
}

/// The tuned method on video takes feature upsamplers sized for the video UNet (here fresh light
/// upsamplers, which inject nearest-upsampled pivot features) and changes the video; without
/// `--upsamplers` it is an error.
#[test]
fn tuned_video_takes_upsamplers_for_the_video_unet() {
    use burn::backend::Flex;
    use selfcascade_sd::upsampler::{LightUpsampler, LightUpsamplerConfig};
    let model = t2v("tuned");
    let dir = model.parent().unwrap().to_path_buf();
    let config = LightUpsamplerConfig {
        channels: vec![16, 32, 32, 32],
        time_embed_dim: 64,
    };
    let ups = dir.join("light.safetensors");
    LightUpsampler::<Flex>::init(&config, 3, &Default::default())
        .unwrap()
        .save_safetensors(&ups)
        .unwrap();
    let (ok, err) = run(
        &model,
        &dir.join("t.gif"),
        &["--width", "64", "--method", "self-cascade-tuned"],
    );
    assert!(!ok && err.contains("--upsamplers"), "{err}");
    let tuned = dir.join("tuned.gif");
    let (ok, err) = run(
        &model,
        &tuned,
        &[
            "--width",
            "64",
            "--method",
            "self-cascade-tuned",
            "--upsamplers",
            ups.to_str().unwrap(),
            // 4 DDIM steps: stage 1 runs t = 251 (injected: > t_min = 100) and t = 1 (with 2 steps it
            // would run t = 1 only, where nothing is injected).
            "--steps",
            "4",
        ],
    );
    assert!(ok, "{err}");
    let free = dir.join("free.gif");
    assert!(run(&model, &free, &["--width", "64", "--steps", "4"]).0);
    assert!(
        gif_frames(&tuned) != gif_frames(&free),
        "the upsamplers changed nothing"
    );
    // Upsamplers sized for another UNet are refused with the channels in the message.
    let wrong = dir.join("wrong.safetensors");
    let other = LightUpsamplerConfig {
        channels: vec![320, 640, 1280, 1280],
        time_embed_dim: 1280,
    };
    LightUpsampler::<Flex>::init(&other, 3, &Default::default())
        .unwrap()
        .save_safetensors(&wrong)
        .unwrap();
    let (ok, err) = run(
        &model,
        &dir.join("w.gif"),
        &[
            "--width",
            "64",
            "--method",
            "self-cascade-tuned",
            "--upsamplers",
            wrong.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("wrong.safetensors"), "{err}");
}

/// An LVDM checkpoint file (the tiny one of `tools/oracle/lvdm.py`, with the sd15 fixture's VAE and
/// text encoder inside) makes a video through the same command: the tuning-free self-cascade 128² → 256².
#[test]
fn lvdm_checkpoint_makes_a_video() {
    let dir = common::tmp("video", "lvdm");
    let (ckpt, config_path, tok) = lvdm(&dir);
    let out = dir.join("lvdm.gif");
    let base = [
        "--lvdm-config",
        config_path.to_str().unwrap(),
        "--width",
        "256",
        "--method",
        "self-cascade",
    ];
    let (ok, err) = run(&ckpt, &out, &base);
    assert!(!ok && err.contains("--tokenizer"), "{err}");
    let mut args = base.to_vec();
    args.extend_from_slice(&["--tokenizer", tok.to_str().unwrap()]);
    let (ok, err) = run(&ckpt, &out, &args);
    assert!(ok, "{err}");
    let frames = gif_frames(&out);
    assert_eq!(frames.len(), 3);
    assert!(frames.iter().all(|(w, h, _)| (*w, *h) == (256, 256)));
}

/// The tiny LVDM checkpoint, an `--lvdm-config` file with its parts' settings and a tokenizer folder
/// written into `dir`.
fn lvdm(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let read = |p: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let config = serde_json::json!({
        "unet": read(models().join("../lvdm/config.json")),
        "vae": read(models().join("sd15/vae/config.json")),
        "text_encoder": read(models().join("sd15/text_encoder/config.json")),
    });
    let config_path = dir.join("lvdm.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let tok = dir.join("tokenizer");
    write_byte_tokenizer(&tok);
    (models().join("../lvdm/tiny.ckpt"), config_path, tok)
}

/// Writes clip `name` (`n` frames of 48×40 moving gradients) into `data`, captioned beside its folder.
fn write_clip(data: &Path, name: &str, n: usize, caption: &str) {
    let dir = data.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for k in 0..n as u32 {
        image::RgbImage::from_fn(48, 40, |x, y| {
            image::Rgb([(x * 5 + k * 9) as u8, (y * 6) as u8, 90])
        })
        .save(dir.join(format!("{k:03}.png")))
        .unwrap();
    }
    std::fs::write(data.join(format!("{name}.txt")), caption).unwrap();
}

/// `train-upsampler` recognises a text-to-video model and trains the video UNet's upsamplers on clips
/// (3 frames each at 64², pivots at 32²); `generate-video --method self-cascade-tuned` takes the result.
#[test]
fn train_upsampler_on_clips_then_generate_a_tuned_video() {
    let model = t2v("train");
    let dir = model.parent().unwrap().to_path_buf();
    let data = dir.join("clips");
    write_clip(&data, "a", 4, "a red circle moving left");
    write_clip(&data, "b", 3, "a blue square");
    let run_dir = dir.join("run");
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train-upsampler",
            "--model",
            model.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            run_dir.to_str().unwrap(),
            "--size",
            "64x64",
            "--steps",
            "3",
            "--batch-size",
            "2",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        common::selfcascade(&args)
    };
    let (ok, _, err) = train(&["--frames", "3", "--pivot", "files"]);
    assert!(!ok && err.contains("downsampled or generated"), "{err}");
    let (ok, _, err) = train(&["--frames", "5"]);
    assert!(!ok && err.contains("at least 5"), "{err}");
    let (ok, _, err) = train(&["--frames", "3"]);
    assert!(ok, "{err}");
    let loss = std::fs::read_to_string(run_dir.join("loss.csv")).unwrap();
    assert_eq!(loss.lines().count(), 4, "{loss}");
    let weights = run_dir.join("upsampler.safetensors");
    assert!(weights.is_file());
    assert_eq!(
        std::fs::read_dir(run_dir.join("cache")).unwrap().count(),
        2,
        "one cached latent file per clip"
    );
    let out = dir.join("tuned.gif");
    let (ok, err) = run(
        &model,
        &out,
        &[
            "--width",
            "64",
            "--method",
            "self-cascade-tuned",
            "--upsamplers",
            weights.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(gif_frames(&out).len(), 3);
}

/// The LVDM checkpoint trains its upsamplers on clips through the same command, and generates with them.
#[test]
fn train_upsampler_on_clips_for_lvdm() {
    let dir = common::tmp("video", "train-lvdm");
    let (ckpt, config, tok) = lvdm(&dir);
    let data = dir.join("clips");
    write_clip(&data, "a", 3, "a red circle moving left");
    let run_dir = dir.join("run");
    let lvdm_args = [
        "--tokenizer",
        tok.to_str().unwrap(),
        "--lvdm-config",
        config.to_str().unwrap(),
    ];
    let mut args = vec![
        "train-upsampler",
        "--model",
        ckpt.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        run_dir.to_str().unwrap(),
        "--size",
        "64x64",
        "--frames",
        "3",
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--arch",
        "resblock",
        "--quiet",
    ];
    args.extend_from_slice(&lvdm_args);
    let (ok, _, err) = common::selfcascade(&args);
    assert!(ok, "{err}");
    let weights = run_dir.join("upsampler.safetensors");
    assert!(run_dir.join("upsampler_only.pth").is_file());
    let out = dir.join("tuned.gif");
    let mut gen = vec![
        "--width",
        "256",
        "--method",
        "self-cascade-tuned",
        "--upsamplers",
        weights.to_str().unwrap(),
    ];
    gen.extend_from_slice(&lvdm_args);
    let (ok, err) = run(&ckpt, &out, &gen);
    assert!(ok, "{err}");
    assert_eq!(gif_frames(&out).len(), 3);
}

/// `inspect run` on the video UNet with `--upsamplers` and a 5-D `pivot` equals the library's tuned
/// forward (pivot frames folded into the batch, the light upsamplers loaded from the same file); a pivot
/// without upsamplers is an error naming both.
#[test]
fn inspect_run_takes_upsamplers_and_a_video_pivot() {
    use burn::backend::Flex;
    use burn::tensor::{Tensor, TensorData};
    use selfcascade_sd::unet::{fold_frames, PivotInjection, UNet3DConditionModel, UNetHooks};
    use selfcascade_sd::upsampler::{LightUpsampler, LightUpsamplerConfig};
    let dir = common::tmp("video", "inspect");
    let dev = Default::default();
    let config = LightUpsamplerConfig {
        channels: vec![16, 32, 32, 32],
        time_embed_dim: 64,
    };
    let ups = dir.join("light.safetensors");
    let phi = LightUpsampler::<Flex>::init(&config, 5, &dev).unwrap();
    phi.save_safetensors(&ups).unwrap();
    // Inputs: a 3-frame 16×16 latent, its 8×8 pivot, a caption of 5 tokens, t = 400.
    let values = |n: usize, seed: u32| -> Vec<f32> {
        (0..n as u32)
            .map(|i| ((i.wrapping_mul(2654435761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    };
    let tensors = [
        ("sample", vec![1, 4, 3, 16, 16], values(4 * 3 * 256, 1)),
        ("pivot", vec![1, 4, 3, 8, 8], values(4 * 3 * 64, 2)),
        ("encoder_hidden_states", vec![1, 5, 32], values(5 * 32, 3)),
        ("timestep", vec![1], vec![400.0]),
    ];
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .unwrap();
            (name.to_string(), view)
        })
        .collect();
    let input = dir.join("in.safetensors");
    safetensors::serialize_to_file(views, None, &input).unwrap();
    let model = models().join("ms-t2v");
    let output = dir.join("out.safetensors");
    let inspect = |extra: &[&str]| {
        let mut args = vec![
            "inspect",
            "run",
            "--model",
            model.to_str().unwrap(),
            "--component",
            "unet",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        common::selfcascade(&args)
    };
    let (ok, _, err) = inspect(&[]);
    assert!(
        !ok && err.contains("--upsamplers") && err.contains("pivot"),
        "{err}"
    );
    let (ok, _, err) = inspect(&["--upsamplers", ups.to_str().unwrap()]);
    assert!(ok, "{err}");

    let tensor = |i: usize| {
        let (_, shape, v) = &tensors[i];
        TensorData::new(v.clone(), shape.clone())
    };
    let unet = UNet3DConditionModel::<Flex>::load(&model.join("unet"), Some("fp16"), &dev).unwrap();
    let hooks = UNetHooks {
        pivot: Some(PivotInjection {
            latent: fold_frames(Tensor::<Flex, 5>::from_data(tensor(1), &dev)),
            upsampler: &phi,
        }),
        ..Default::default()
    };
    let want: Vec<f32> = unet
        .forward(
            Tensor::from_data(tensor(0), &dev),
            &[400.0],
            Tensor::from_data(tensor(2), &dev),
            &hooks,
        )
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    let file = std::fs::read(&output).unwrap();
    let st = safetensors::SafeTensors::deserialize(&file).unwrap();
    let out = st.tensor("out").unwrap();
    assert_eq!(out.shape(), &[1, 4, 3, 16, 16]);
    let got: Vec<f32> = out
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(
        got, want,
        "inspect run differs from the library's tuned forward"
    );
    // Without the injection the output differs: the upsamplers took part.
    let plain: Vec<f32> = unet
        .forward(
            Tensor::from_data(tensor(0), &dev),
            &[400.0],
            Tensor::from_data(tensor(2), &dev),
            &UNetHooks::default(),
        )
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    assert!(plain != want);
}

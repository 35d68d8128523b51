//! End-to-end `selfcascade generate` and `inspect` on the tiny random-weight pipelines of the
//! fixtures (diffusers folders made by tools/oracle/models.py), with a tiny byte-level tokenizer added.

mod common;

use common::{copy_dir, selfcascade, write_byte_tokenizer};
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../selfcascade-sd/tests/fixtures")
}

fn tmp(name: &str) -> PathBuf {
    common::tmp("gen", name)
}

/// A sd15 copy with a byte-level tokenizer of 514 tokens (the tiny text encoder has 1000 ids).
fn sd15_with_tokenizer(name: &str) -> PathBuf {
    let dir = tmp(name).join("model");
    copy_dir(&fixtures().join("models/sd15"), &dir);
    std::fs::remove_dir_all(dir.join("io")).unwrap();
    write_byte_tokenizer(&dir.join("tokenizer"));
    dir
}

#[test]
fn generate_writes_a_png_with_metadata_and_stage_latents() {
    let model = sd15_with_tokenizer("ok");
    let out = model.parent().unwrap().join("img.png");
    let latents = model.parent().unwrap().join("latents.safetensors");
    let m = model.to_str().unwrap();
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "a red circle",
        "--width",
        "128",
        "--height",
        "128",
        "--steps",
        "4",
        "--scheduler",
        "ddim",
        "--seed",
        "3",
        "--out",
        out.to_str().unwrap(),
        "--save-latents",
        latents.to_str().unwrap(),
        "--save-stages",
        "--quiet",
        "--timings",
    ]);
    assert!(ok, "{err}");
    // --timings: one JSON line on stderr with the seconds of each phase.
    let line = err
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no timings line in {err}"));
    let timings: serde_json::Value = serde_json::from_str(line).unwrap();
    for key in ["load_s", "encode_s", "sample_s", "decode_s"] {
        assert!(
            timings[key].as_f64().is_some_and(|t| t >= 0.0),
            "{key} in {line}"
        );
    }
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&out).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height), (128, 128));
    let text: Vec<(String, String)> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    for (k, v) in [
        ("prompt", "a red circle"),
        ("seed", "3"),
        ("method", "self-cascade"),
        ("stages", "64x64 -> 128x128"),
    ] {
        assert!(
            text.iter().any(|(a, b)| a == k && b == v),
            "{k}={v} missing in {text:?}"
        );
    }
    assert!(model.parent().unwrap().join("img-stage0.png").is_file());
    assert!(model.parent().unwrap().join("img-stage1.png").is_file());
    // Replaying the saved stage noise is not possible (latents are not noise), but the file holds each
    // stage's clean latent at its own size.
    let bytes = std::fs::read(&latents).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("stage0").unwrap().shape(), &[1, 4, 16, 16]);
    assert_eq!(st.tensor("stage1").unwrap().shape(), &[1, 4, 32, 32]);

    // Same seed → same image; injected noise replaces the seed.
    let out2 = model.parent().unwrap().join("img2.png");
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "a red circle",
        "--width",
        "128",
        "--height",
        "128",
        "--steps",
        "4",
        "--scheduler",
        "ddim",
        "--seed",
        "3",
        "--out",
        out2.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());
}

/// Each stage's final latent of `generate --method self-cascade` at `dtype`.
fn stage_latents(model: &Path, dtype: &str) -> Vec<Vec<f32>> {
    let latents = model
        .parent()
        .unwrap()
        .join(format!("latents-{dtype}.safetensors"));
    let out = model.parent().unwrap().join(format!("img-{dtype}.png"));
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red circle",
        "--width",
        "128",
        "--height",
        "128",
        "--method",
        "self-cascade",
        "--steps",
        "6",
        "--scheduler",
        "ddim",
        "--dtype",
        dtype,
        "--guidance",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--save-latents",
        latents.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(ok, "--dtype {dtype}: {err}");
    let stages = safetensors::SafeTensors::deserialize(&std::fs::read(&latents).unwrap())
        .unwrap()
        .len();
    (0..stages)
        .map(|i| read(&latents, &format!("stage{i}")))
        .collect()
}

/// `--dtype f16|bf16` on the CPU (burn-flex half tensors) runs the whole self-cascade pipeline, and
/// every stage's latent stays close to the float32 run's. Without guidance: the tiny random model's
/// conditional and unconditional predictions differ by little more than half rounding, so CFG at 7.5
/// multiplies that rounding (f16: 0.8% at guidance 1, 15% at 7.5 after six steps).
#[test]
fn half_precision_on_the_cpu_stays_close_to_float32() {
    let model = sd15_with_tokenizer("half");
    let full = stage_latents(&model, "f32");
    assert!(
        full.len() >= 2,
        "self-cascade at 128² should have two stages"
    );
    for (dtype, tolerance) in [("f16", 2e-2), ("bf16", 1.2e-1)] {
        let half = stage_latents(&model, dtype);
        assert_eq!(half.len(), full.len());
        for (i, (h, f)) in half.iter().zip(&full).enumerate() {
            let num: f64 = h.iter().zip(f).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            let den: f64 = f.iter().map(|b| (*b as f64).powi(2)).sum();
            let err = (num / den).sqrt();
            eprintln!("{dtype} stage {i}: relative L2 {err:.2e}");
            assert!(err < tolerance, "{dtype} stage {i}: {err:.3e}");
        }
    }
}

#[test]
fn bad_inputs_get_one_line_errors_and_leave_no_file() {
    let model = sd15_with_tokenizer("bad");
    let m = model.to_str().unwrap();
    let out = model.parent().unwrap().join("never.png");
    let o = out.to_str().unwrap();
    let base = [
        "generate",
        "--model",
        m,
        "--prompt",
        "x",
        "--steps",
        "2",
        "--scheduler",
        "ddim",
        "--quiet",
        "--out",
        o,
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--width", "100", "--height", "128"], "96 or 112"),
        (
            vec!["--width", "128", "--height", "128", "--method", "magic"],
            "self-cascade",
        ),
        (
            vec!["--width", "128", "--height", "128", "--device", "cuda"],
            "cuda",
        ),
        (
            vec![
                "--width",
                "128",
                "--height",
                "128",
                "--method",
                "scalecrafter",
            ],
            "1024x1024",
        ),
    ];
    for (extra, needle) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra);
        let (ok, _, err) = selfcascade(&args);
        assert!(
            !ok && err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--model",
        "/nonexistent/model",
        "--prompt",
        "x",
        "--out",
        o,
    ]);
    assert!(
        !ok && err.contains("does not exist") && err.contains("unet/"),
        "{err}"
    );
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "x",
        "--width",
        "128",
        "--height",
        "128",
        "--steps",
        "2",
        "--scheduler",
        "ddim",
        "--quiet",
        "--out",
        "/nonexistent-dir/x.png",
    ]);
    assert!(!ok && err.contains("/nonexistent-dir"), "{err}");
    // The PNDM config of the folder needs an explicit scheduler.
    let (ok, _, err) = selfcascade(&[
        "generate", "--model", m, "--prompt", "x", "--width", "128", "--height", "128", "--quiet",
        "--out", o,
    ]);
    assert!(!ok && err.contains("PNDMScheduler"), "{err}");
    // A missing component is named.
    std::fs::remove_dir_all(model.join("vae")).unwrap();
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "x",
        "--width",
        "128",
        "--height",
        "128",
        "--steps",
        "2",
        "--scheduler",
        "ddim",
        "--quiet",
        "--out",
        o,
    ]);
    assert!(!ok && err.contains("vae/"), "{err}");
    assert!(!out.exists(), "no output file after failures");
}

#[test]
fn long_prompts_warn_and_nan_noise_stops_with_its_position() {
    let model = sd15_with_tokenizer("long");
    let m = model.to_str().unwrap();
    let dir = model.parent().unwrap();
    let out = dir.join("long.png");
    let long = "a".repeat(60) + " " + &"b".repeat(60);
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--model",
        m,
        "--prompt",
        &long,
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "2",
        "--scheduler",
        "ddim",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("truncated"), "{err}");
    // NaN noise → the sampler stops at stage 0, step 0.
    let nan: Vec<u8> = std::iter::repeat_n(f32::NAN.to_le_bytes(), 4 * 16 * 16)
        .flatten()
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1, 4, 16, 16], &nan)
            .unwrap();
    let noise = dir.join("nan.safetensors");
    safetensors::serialize_to_file(vec![("stage0".to_string(), view)], None, &noise).unwrap();
    let out = dir.join("nan.png");
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "x",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "2",
        "--scheduler",
        "ddim",
        "--quiet",
        "--noise",
        noise.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("stage 0, step 0"), "{err}");
    assert!(!out.exists());
}

fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    got.iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

fn read(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn inspect_run_reproduces_the_oracle_outputs() {
    let dir = tmp("inspect");
    for (family, component, io, outputs) in [
        ("sd21", "unet", "unet", vec!["out"]),
        ("sdxl", "unet", "unet", vec!["out"]),
        ("ms-t2v", "unet", "unet", vec!["out"]),
        ("sd21", "vae-decode", "vae_decode", vec!["decoded"]),
        ("sd15", "vae-encode", "vae_encode", vec!["mean", "logvar"]),
        (
            "sd15",
            "text-encoder",
            "text_encoder",
            vec![
                "last_hidden_state",
                "penultimate_hidden_state",
                "pooler_output",
            ],
        ),
        (
            "sdxl",
            "text-encoder-2",
            "text_encoder_2",
            vec!["penultimate_hidden_state", "text_embeds"],
        ),
    ] {
        let model = fixtures().join("models").join(family);
        let input = model.join("io").join(format!("{io}.safetensors"));
        let output = dir.join(format!("{family}-{component}.safetensors"));
        let (ok, _, err) = selfcascade(&[
            "inspect",
            "run",
            "--model",
            model.to_str().unwrap(),
            "--component",
            component,
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ]);
        assert!(ok, "{family} {component}: {err}");
        for name in outputs {
            let e = max_rel_err(&read(&output, name), &read(&input, name));
            assert!(e <= 1e-4, "{family} {component} {name}: {e}");
        }
    }
    let (ok, _, err) = selfcascade(&[
        "inspect",
        "run",
        "--model",
        fixtures().join("models/sd15").to_str().unwrap(),
        "--component",
        "text-encoder-2",
        "--input",
        "x",
        "--output",
        "y",
    ]);
    assert!(!ok && err.contains("text_encoder_2"), "{err}");
}

/// The tuned UNet from files: the tiny UNet of `unet_hooks/` with the ResBlock upsamplers of
/// `feature_upsampler/` (released `.pth` layout) on the oracle's `pivot` equals PyTorch's `out_tuned`.
#[test]
fn inspect_run_applies_feature_upsamplers_to_a_pivot() {
    let dir = tmp("inspect-tuned");
    let model = fixtures().join("unet_hooks");
    let io = fixtures().join("feature_upsampler/io.safetensors");
    let pth = fixtures().join("feature_upsampler/resblock_upsampler.pth");
    let output = dir.join("tuned.safetensors");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "inspect",
            "run",
            "--model",
            model.to_str().unwrap(),
            "--component",
            "unet",
            "--input",
            io.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        selfcascade(&a)
    };
    let (ok, _, err) = run(&["--upsamplers", pth.to_str().unwrap()]);
    assert!(ok, "{err}");
    let e = max_rel_err(&read(&output, "out"), &read(&io, "out_tuned"));
    assert!(e <= 1e-4, "tuned UNet: {e}");
    let plain = max_rel_err(&read(&io, "out_plain"), &read(&io, "out_tuned"));
    assert!(
        plain > 1e-2,
        "the fixture's upsamplers change the output ({plain})"
    );
    let (ok, _, err) = run(&[]);
    assert!(!ok && err.contains("--upsamplers"), "{err}");
}

#[test]
fn inspect_tokenize_prints_77_ids_per_line() {
    let dir = tmp("tok");
    let model = dir.join("model");
    copy_dir(
        &fixtures().join("clip-tokenizer/configs/sd21"),
        &model.join("tokenizer"),
    );
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(
            fixtures().join("clip-tokenizer").join(f),
            model.join("tokenizer").join(f),
        )
        .unwrap();
    }
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "a photo of a cat!\nline\\nbreak\n").unwrap();
    let (ok, out, err) = selfcascade(&[
        "inspect",
        "tokenize",
        "--model",
        model.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let rows: Vec<Vec<u32>> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.len() == 77 && r[0] == 49406));
    // SD 2.x pads with "!" (id 0), and a literal "!" is id 0 too.
    assert_eq!(&rows[0][..8], &[49406, 320, 1125, 539, 320, 2368, 0, 49407]);
    assert_eq!(rows[0][8], 0);
}

#[test]
fn a_hub_repo_id_resolves_through_the_local_cache() {
    let model = sd15_with_tokenizer("hub");
    let home = model.parent().unwrap().join("hf-home");
    let repo = home.join("hub/models--tiny-org--tiny-sd15");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    copy_dir(&model, &repo.join("snapshots/0123abcd"));
    let out = model.parent().unwrap().join("hub.png");
    let run_with = |id: &str, env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_selfcascade"))
            .env("HF_HOME", &home)
            .envs(env.iter().copied())
            .args([
                "generate",
                "--model",
                id,
                "--prompt",
                "x",
                "--width",
                "64",
                "--height",
                "64",
                "--steps",
                "2",
                "--scheduler",
                "ddim",
                "--quiet",
                "--out",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap()
    };
    // A cached repo needs no network, whatever the settings.
    let run = |id: &str| run_with(id, &[("HF_HUB_OFFLINE", "1")]);
    let ok = run("tiny-org/tiny-sd15");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(out.is_file());
    let missing = run("tiny-org/absent");
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success()
            && err.contains("Hugging Face cache")
            && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    // Online, a repo that is not cached is asked from the Hub (here an endpoint that refuses).
    let unreachable = run_with(
        "tiny-org/absent",
        &[
            ("HF_ENDPOINT", "http://127.0.0.1:9"),
            ("HF_HUB_OFFLINE", "0"),
        ],
    );
    let err = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        !unreachable.status.success()
            && err.contains("could not be asked")
            && !err.contains("panicked"),
        "{err}"
    );
}

/// Writes an RGB PNG of `w`×`h` pixels with a colour gradient seeded by `k`.
fn write_test_png(path: &Path, w: u32, h: u32, k: u32) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().unwrap();
    let data: Vec<u8> = (0..w * h)
        .flat_map(|i| {
            let (x, y) = (i % w, i / w);
            [(x * 5 + k * 40) as u8, (y * 5) as u8, ((x + y) * k) as u8]
        })
        .collect();
    writer.write_image_data(&data).unwrap();
}

/// `selfcascade train-upsampler` on `model` and `data` into `run` at 64×64, batch 2, quiet.
fn train_upsampler(
    model: &Path,
    data: &Path,
    run: &Path,
    steps: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let mut a = vec![
        "train-upsampler",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--size",
        "64x64",
        "--steps",
        steps,
        "--batch-size",
        "2",
        "--quiet",
    ];
    a.extend_from_slice(extra);
    selfcascade(&a)
}

/// `selfcascade generate --method self-cascade-tuned` at 64×64 with `upsamplers`; asserts success.
fn generate_tuned(model: &Path, upsamplers: &Path, out: &Path) {
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "a red square",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "3",
        "--scheduler",
        "ddim",
        "--method",
        "self-cascade-tuned",
        "--upsamplers",
        upsamplers.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(ok, "{err}");
    assert!(out.is_file());
}

#[test]
fn train_upsampler_trains_checkpoints_and_resumes() {
    let model = sd15_with_tokenizer("train-model");
    let root = tmp("train");
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (k, caption) in ["a red square", "a blue circle", "a green triangle"]
        .iter()
        .enumerate()
    {
        write_test_png(
            &data.join(format!("{k}.png")),
            40 + 8 * k as u32,
            48,
            k as u32 + 1,
        );
        std::fs::write(data.join(format!("{k}.txt")), caption).unwrap();
    }
    let run = root.join("run");
    let every = ["--checkpoint-every", "2", "--lr", "1e-3"];
    let resume = ["--checkpoint-every", "2", "--lr", "1e-3", "--resume"];
    let (ok, _, err) = train_upsampler(&model, &data, &run, "4", &every);
    assert!(ok, "{err}");
    let log = std::fs::read_to_string(run.join("loss.csv")).unwrap();
    assert_eq!(log.lines().count(), 5, "{log}");
    assert!(log.starts_with("step,loss,learning_rate,timesteps,dropped\n1,"));
    assert!(run.join("upsampler.safetensors").is_file());
    assert!(run.join("checkpoints/step-00000004/state.json").is_file());
    let cached = std::fs::read_dir(run.join("cache")).unwrap().count();
    assert_eq!(cached, 3, "one cached latent pair per image");

    // Resuming continues the log (the first four rows unchanged) up to the new step count.
    let (ok, _, err) = train_upsampler(&model, &data, &run, "6", &resume);
    assert!(ok, "{err}");
    let resumed = std::fs::read_to_string(run.join("loss.csv")).unwrap();
    assert_eq!(resumed.lines().count(), 7, "{resumed}");
    assert!(resumed.starts_with(&log), "{log}\n---\n{resumed}");

    // The trained weights drive the tuned method.
    let out = root.join("tuned.png");
    generate_tuned(&model, &run.join("upsampler.safetensors"), &out);

    // An image without a caption is named in a one-line error; nothing is trained.
    std::fs::remove_file(data.join("1.txt")).unwrap();
    let (ok, _, err) = train_upsampler(&model, &data, &run, "8", &resume);
    assert!(!ok);
    assert!(err.contains("1.txt") && err.contains("no caption"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

/// Writes a float32 safetensors file with one tensor.
fn write_tensor(path: &Path, name: &str, shape: &[usize], data: &[f32]) {
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &bytes)
            .unwrap();
    std::fs::write(path, safetensors::serialize([(name, view)], None).unwrap()).unwrap();
}

#[test]
fn train_upsampler_takes_pivots_from_files_and_generations_and_trains_resblocks() {
    let model = sd15_with_tokenizer("pivots-model");
    let root = tmp("pivots");
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_test_png(&data.join("a.png"), 64, 64, 1);
    write_test_png(&data.join("b.png"), 64, 64, 2);
    // (c) pivots as files: a latent for a.png (64² → latent 16², pivot 8²), a 32² image for b.png.
    let latent: Vec<f32> = (0..4 * 8 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
    write_tensor(
        &data.join("a.pivot.safetensors"),
        "pivot",
        &[4, 8, 8],
        &latent,
    );
    write_test_png(&data.join("b.pivot.png"), 32, 32, 3);
    std::fs::write(
        data.join("manifest.jsonl"),
        "{\"image\": \"a.png\", \"caption\": \"a red square\", \"pivot\": \"a.pivot.safetensors\"}\n\
         {\"image\": \"b.png\", \"caption\": \"a blue circle\", \"pivot\": \"b.pivot.png\"}\n",
    )
    .unwrap();
    let train = |run: &Path, extra: &[&str]| train_upsampler(&model, &data, run, "1", extra);
    let files = root.join("files");
    let (ok, _, err) = train(&files, &["--pivot", "files", "--arch", "resblock"]);
    assert!(ok, "{err}");
    // ResBlock upsamplers are also saved in the release's layout, which generate reads.
    let pth = files.join("upsampler_only.pth");
    assert!(pth.is_file() && files.join("upsampler.safetensors").is_file());
    let out = root.join("tuned.png");
    generate_tuned(&model, &pth, &out);

    // (b) pivots generated by the base model from the caption (2 DDIM steps here).
    let generated = root.join("generated");
    let (ok, _, err) = train(
        &generated,
        &[
            "--pivot",
            "generated",
            "--pivot-steps",
            "2",
            "--scheduler-free",
        ],
    );
    assert!(
        !ok && err.contains("--scheduler-free"),
        "unknown flags are refused: {err}"
    );
    let (ok, _, err) = train(
        &generated,
        &[
            "--pivot",
            "generated",
            "--pivot-steps",
            "2",
            "--pivot-scheduler",
            "ddim",
        ],
    );
    assert!(ok, "{err}");
    assert!(generated.join("upsampler.safetensors").is_file());

    // A pivot image of the wrong size is named in the error (the cache notices the changed file).
    write_test_png(&data.join("b.pivot.png"), 30, 32, 3);
    let (ok, _, err) = train(&files, &["--pivot", "files", "--arch", "resblock"]);
    assert!(
        !ok && err.contains("b.pivot.png") && err.contains("32×32"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// `bench-quality`: every method's images and the base size's, resumable, scored with FID/KID into
/// the Table 1 layout (a randomly initialised Inception: the metric numerics are tested in
/// selfcascade-eval).
#[test]
fn bench_quality_generates_resumes_and_scores() {
    let model = sd15_with_tokenizer("bench");
    let root = tmp("bench-run");
    let prompts = root.join("prompts.txt");
    std::fs::write(&prompts, "a red cube\n\na blue ball\na green tree\n").unwrap();
    let real = root.join("real");
    std::fs::create_dir_all(&real).unwrap();
    for i in 0..3u8 {
        image::RgbImage::from_fn(128, 96, |x, y| {
            image::Rgb([x as u8 * 2, y as u8 + i * 50, 90])
        })
        .save(real.join(format!("{i}.png")))
        .unwrap();
    }
    let inception = root.join("inception.safetensors");
    selfcascade_eval::inception::InceptionV3::<burn::backend::Flex>::random(0, &Default::default())
        .unwrap()
        .save_safetensors(&inception)
        .unwrap();
    let out = root.join("out");
    let args = [
        "bench-quality",
        "--model",
        model.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--size",
        "128x128",
        "--methods",
        "direct,self-cascade",
        "--steps",
        "2",
        "--guidance",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--real",
        real.to_str().unwrap(),
        "--inception",
        inception.to_str().unwrap(),
        "--quiet",
    ];
    let (ok, stdout, err) = selfcascade(&args);
    assert!(ok, "{err}");
    assert!(stdout.contains("| self-cascade | 128x128 |"), "{stdout}");
    for (dir, side) in [("base", 64), ("direct", 128), ("self-cascade", 128)] {
        for i in 0..3 {
            let img = image::open(out.join(dir).join(format!("{i:05}.png"))).unwrap();
            assert_eq!((img.width(), img.height()), (side, side), "{dir} {i}");
        }
    }
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("table.json")).unwrap()).unwrap();
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        for key in ["fid_r", "kid_r", "fid_b", "kid_b", "seconds_per_image"] {
            assert!(
                row[key].as_f64().is_some_and(f64::is_finite),
                "{key}: {row}"
            );
        }
    }
    assert_eq!(rows[0]["time_vs_direct"].as_f64(), Some(1.0));

    // A second run keeps every image and the recorded timings, and scores again.
    let stamp = std::fs::metadata(out.join("direct/00001.png"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::remove_file(out.join("self-cascade/00002.png")).unwrap();
    let (ok, _, err) = selfcascade(&args);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::metadata(out.join("direct/00001.png"))
            .unwrap()
            .modified()
            .unwrap(),
        stamp
    );
    assert!(out.join("self-cascade/00002.png").exists());
    let timings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("timings.json")).unwrap()).unwrap();
    assert_eq!(timings["direct"]["images"], 3);
    assert_eq!(timings["self-cascade"]["images"], 4);

    // Bad input.
    let (ok, _, err) = selfcascade(&[
        "bench-quality",
        "--model",
        model.to_str().unwrap(),
        "--prompts",
        root.join("none.txt").to_str().unwrap(),
        "--size",
        "256x256",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("none.txt"), "{err}");
    let (ok, _, err) = selfcascade(&[
        "bench-quality",
        "--model",
        model.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--size",
        "256x256",
        "--methods",
        "self-cascade-tuned",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("--upsamplers"), "{err}");
}

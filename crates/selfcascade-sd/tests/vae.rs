//! The VAE against diffusers 0.42 (fixtures of `tools/oracle/models.py` and `tools/oracle/vae_tiled.py`),
//! plus strict loading and config errors.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use selfcascade_sd::load::{TensorStore, Weights};
use selfcascade_sd::vae::{AutoencoderKL, AutoencoderKLConfig, Tiling};
use std::path::{Path, PathBuf};

type B = Flex;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn family(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

fn open(path: PathBuf) -> TensorStore {
    TensorStore::open(&[path]).unwrap()
}

fn input(store: &TensorStore, name: &str) -> Tensor<B, 4> {
    let t = store.read(name).unwrap();
    let shape: [usize; 4] = t.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(t.data, shape), &Default::default())
}

/// max|a − b| ≤ 1e-4 · max(1, max|b|).
fn assert_close(what: &str, got: Tensor<B, 4>, store: &TensorStore, name: &str) {
    let want = store.read(name).unwrap();
    assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
    let got = got.into_data().to_vec::<f32>().unwrap();
    let scale = want.data.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(&want.data)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-4 * scale,
        "{what}: max|diff| = {diff:e}, allowed {:e}",
        1e-4 * scale
    );
    eprintln!("{what}: max|diff| = {diff:e} (scale {scale})");
}

fn check_family(fam: &str, scaling: f64) {
    let dev = Default::default();
    let vae = AutoencoderKL::<B>::load(&family(fam).join("vae"), None, &dev).unwrap();
    assert_eq!(vae.scaling_factor(), scaling);
    let enc = open(family(fam).join("io/vae_encode.safetensors"));
    let (mean, logvar) = vae.encode(input(&enc, "image")).unwrap();
    assert_close(&format!("{fam} mean"), mean, &enc, "mean");
    assert_close(&format!("{fam} logvar"), logvar, &enc, "logvar");
    let dec = open(family(fam).join("io/vae_decode.safetensors"));
    let image = vae.decode(input(&dec, "latent")).unwrap();
    assert_close(&format!("{fam} decode"), image, &dec, "decoded");
    // decode_auto does not tile a latent no larger than a tile (sample_size 48 → 12 latent pixels:
    // the 12×16 latent is wider, so use a 12×12 crop against the plain decode).
    let crop = input(&dec, "latent").narrow(3, 0, 12);
    let auto = vae
        .decode_auto(crop.clone(), &vae.default_tiling())
        .unwrap();
    let plain = vae.decode(crop).unwrap();
    assert_eq!(
        auto.sub(plain).abs().max().into_scalar(),
        0.0,
        "decode_auto tiled a latent that fits one tile"
    );
}

#[test]
fn sd15_vae_matches_diffusers() {
    check_family("sd15", 0.18215);
}

#[test]
fn sd21_sharded_vae_matches_diffusers() {
    check_family("sd21", 0.18215);
}

#[test]
fn sdxl_vae_matches_diffusers() {
    check_family("sdxl", 0.13025);
}

#[test]
fn tiled_decode_and_encode_match_diffusers_enable_tiling() {
    let dev = Default::default();
    let dir = fixtures().join("vae-tiled");
    let vae = AutoencoderKL::<B>::load(&dir.join("vae"), None, &dev).unwrap();
    let io = open(dir.join("io.safetensors"));
    let latent = input(&io, "latent");
    let image = input(&io, "image");
    let tiling = vae.default_tiling();
    assert_eq!(
        tiling,
        Tiling {
            sample_tile: 32,
            latent_tile: 8,
            overlap: 0.25
        }
    );

    assert_close(
        "untiled decode",
        vae.decode(latent.clone()).unwrap(),
        &io,
        "decoded_untiled",
    );
    assert_close(
        "decode_auto",
        vae.decode_auto(latent.clone(), &tiling).unwrap(),
        &io,
        "decoded_tiled",
    );
    assert_close(
        "tiled_decode",
        vae.tiled_decode(latent.clone(), &tiling).unwrap(),
        &io,
        "decoded_tiled",
    );
    let small = vae.tiling_with_size(16);
    assert_close(
        "tiled_decode 16",
        vae.decode_auto(latent.clone(), &small).unwrap(),
        &io,
        "decoded_tiled_16",
    );

    let (mean, _) = vae.encode(image.clone()).unwrap();
    assert_close("untiled encode", mean, &io, "mean_untiled");
    let (mean, logvar) = vae.encode_auto(image.clone(), &tiling).unwrap();
    assert_close("tiled encode mean", mean, &io, "mean_tiled");
    assert_close("tiled encode logvar", logvar, &io, "logvar_tiled");
    let (mean, logvar) = vae.tiled_encode(image.clone(), &small).unwrap();
    assert_close("tiled encode 16 mean", mean, &io, "mean_tiled_16");
    assert_close("tiled encode 16 logvar", logvar, &io, "logvar_tiled_16");

    // Tile sizes whose stride and crop disagree are refused (diffusers returns a wrongly sized image).
    let err = vae
        .tiled_decode(latent.clone(), &vae.tiling_with_size(24))
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong size"), "{err}");
    let err = vae
        .tiled_decode(latent, &Tiling::new(32, 4).with_overlap(1.0))
        .unwrap_err()
        .to_string();
    assert!(err.contains("overlap"), "{err}");
}

#[test]
fn logvar_is_clamped_like_diffusers() {
    // A random VAE whose quant_conv pushes the log-variance far out of [-30, 20].
    let cfg = AutoencoderKLConfig::from_json(
        r#"{"block_out_channels": [4], "norm_num_groups": 2, "latent_channels": 1}"#,
        "test",
    )
    .unwrap();
    let dev = Default::default();
    let w = Weights::random(1);
    let mut vae = AutoencoderKL::<B>::new(&w.root::<B>(&dev), &cfg).unwrap();
    if let Some(q) = vae.quant_conv.as_mut() {
        let bias = Tensor::<B, 1>::from_data(TensorData::new(vec![0.0f32, 1000.0], [2]), &dev);
        q.bias = Some(burn::module::Param::from_tensor(bias));
    }
    let image = Tensor::<B, 4>::zeros([1, 3, 4, 4], &dev);
    let (_, logvar) = vae.encode(image).unwrap();
    let max = logvar.max().into_scalar();
    assert_eq!(max, 20.0);
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Default::default();
    let vae = AutoencoderKL::<B>::load(&family("sd15").join("vae"), None, &dev).unwrap();
    let err = vae
        .encode(Tensor::zeros([1, 4, 16, 16], &dev))
        .unwrap_err()
        .to_string();
    assert!(err.contains("4 channels"), "{err}");
    let err = vae
        .encode(Tensor::zeros([1, 3, 1, 16], &dev))
        .unwrap_err()
        .to_string();
    assert!(err.contains("too small"), "{err}");
    let err = vae
        .decode(Tensor::zeros([1, 3, 4, 4], &dev))
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 channels"), "{err}");
    // Odd sizes are fine, as in diffusers (the downsampler pads right/bottom).
    let (mean, _) = vae.encode(Tensor::zeros([1, 3, 9, 7], &dev)).unwrap();
    assert_eq!(mean.dims(), [1, 4, 2, 1]);
}

#[test]
fn config_errors_name_the_problem() {
    let cases = [
        (r#"{"shift_factor": 0.1159}"#, "shift_factor"),
        (r#"{"latents_mean": [0.1, 0.2, 0.3, 0.4]}"#, "latents_mean"),
        (r#"{"latents_std": [1, 1, 1, 1]}"#, "latents_std"),
        (r#"{"act_fn": "gelu"}"#, "act_fn"),
        (
            r#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#,
            "AttnDownEncoderBlock2D",
        ),
        (r#"{"norm_num_groups": 5}"#, "norm_num_groups"),
        (r#"{"_class_name": "AutoencoderTiny"}"#, "AutoencoderTiny"),
        (r#"{"use_spatial_norm": true}"#, "use_spatial_norm"),
        (r#"{"block_out_channels": [64, 64]}"#, "one entry per"),
    ];
    for (json, needle) in cases {
        let err = AutoencoderKLConfig::from_json(json, "vae/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(needle) && err.contains("vae/config.json"),
            "{json}: {err}"
        );
    }
    let cfg = AutoencoderKLConfig::from_json(
        r#"{"_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0", "force_upcast": false,
            "shift_factor": null, "latents_mean": null, "latents_std": null}"#,
        "c",
    )
    .unwrap();
    assert_eq!(cfg.scaling_factor, 0.18215);
    assert!(cfg.use_quant_conv && cfg.use_post_quant_conv && cfg.mid_block_add_attention);
}

#[test]
fn optional_parts_follow_the_config() {
    let dev = Default::default();
    let cfg = AutoencoderKLConfig::from_json(
        r#"{"block_out_channels": [4, 8], "norm_num_groups": 2, "use_quant_conv": false,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
            "use_post_quant_conv": false, "mid_block_add_attention": false}"#,
        "test",
    )
    .unwrap();
    let w = Weights::random(2);
    let vae = AutoencoderKL::<B>::new(&w.root::<B>(&dev), &cfg).unwrap();
    assert!(vae.quant_conv.is_none() && vae.post_quant_conv.is_none());
    assert!(vae.encoder.mid_block.attentions.is_empty());
    let img = vae.decode(Tensor::zeros([1, 4, 3, 5], &dev)).unwrap();
    assert_eq!(img.dims(), [1, 3, 6, 10]);
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("selfcascade-vae-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies sd15's VAE with its tensors edited by `edit`.
fn edited_copy(name: &str, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> PathBuf {
    let src = family("sd15").join("vae");
    let dst = tmpdir(name);
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let store = open(src.join("diffusion_pytorch_model.safetensors"));
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = store
        .names()
        .map(|n| {
            let t = store.read(n).unwrap();
            (n.to_string(), t.shape, t.data)
        })
        .collect();
    edit(&mut tensors);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(
        views,
        None,
        &dst.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    dst
}

#[test]
fn strict_loading_names_the_tensor() {
    let dev = Default::default();
    let name = "decoder.up_blocks.1.upsamplers.0.conv.weight";
    let dir = edited_copy("missing", |t| t.retain(|(n, _, _)| n != name));
    let err = AutoencoderKL::<B>::load(&dir, None, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains(name) && err.contains("missing"), "{err}");

    let dir = edited_copy("unexpected", |t| {
        t.push((
            "encoder.down_blocks.2.downsamplers.0.conv.bias".into(),
            vec![16],
            vec![0.0; 16],
        ))
    });
    let err = AutoencoderKL::<B>::load(&dir, None, &dev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.down_blocks.2.downsamplers.0.conv.bias"),
        "{err}"
    );

    let name = "encoder.mid_block.attentions.0.to_out.0.weight";
    let dir = edited_copy("misshaped", |t| {
        for (n, s, d) in t.iter_mut() {
            if n == name {
                *s = vec![16, 8];
                d.truncate(128);
            }
        }
    });
    let err = AutoencoderKL::<B>::load(&dir, None, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains(name) && err.contains("[16, 8]"), "{err}");

    // The deprecated attention names of old checkpoints load to the same model.
    let dir = edited_copy("legacy-attention", |t| {
        for (n, _, _) in t.iter_mut() {
            *n = n
                .replace("attentions.0.to_q.", "attentions.0.query.")
                .replace("attentions.0.to_k.", "attentions.0.key.")
                .replace("attentions.0.to_v.", "attentions.0.value.")
                .replace("attentions.0.to_out.0.", "attentions.0.proj_attn.");
        }
    });
    let vae = AutoencoderKL::<B>::load(&dir, None, &dev).unwrap();
    let dec = open(family("sd15").join("io/vae_decode.safetensors"));
    assert_close(
        "legacy names",
        vae.decode(input(&dec, "latent")).unwrap(),
        &dec,
        "decoded",
    );
}

/// Peak resident memory of this process (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A 2048×2048 decode through the default tiling of an SD 1.x-shaped VAE (4 levels, factor 8,
/// sample_size 512: 6×6 tiles of 512×512), random weights. By default the channels are a quarter of
/// SD's (128..512 → 32..128, 1/16 of the work, activations 1/4 of the size); set
/// `SELFCASCADE_FULL_VAE=1` for SD's real widths (tens of minutes on 2 CPU cores). Ignored by default:
/// `cargo test -p selfcascade-sd --test vae -- --ignored --nocapture`.
#[test]
#[ignore]
fn sd_sized_2048_tiled_decode_fits_in_memory() {
    let full = std::env::var("SELFCASCADE_FULL_VAE").is_ok_and(|v| v == "1");
    let channels = if full {
        "[128, 256, 512, 512]"
    } else {
        "[32, 64, 128, 128]"
    };
    let cfg = AutoencoderKLConfig::from_json(
        &format!(
            r#"{{"block_out_channels": {channels}, "layers_per_block": 2, "sample_size": 512,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}}"#
        ),
        "sd15-vae",
    )
    .unwrap();
    let dev = Default::default();
    let w = Weights::random(7);
    let vae = AutoencoderKL::<B>::new(&w.root::<B>(&dev), &cfg).unwrap();
    let latent = Tensor::<B, 4>::random(
        [1, 4, 256, 256],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let before = peak_rss().unwrap_or(0);
    let start = std::time::Instant::now();
    let image = vae.decode_auto(latent, &vae.default_tiling()).unwrap();
    assert_eq!(image.dims(), [1, 3, 2048, 2048]);
    let has_nan = image.is_nan().any().into_scalar();
    assert!(!has_nan, "NaN in the decoded image");
    let peak = peak_rss().unwrap_or(0);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    eprintln!(
        "2048x2048 tiled decode, channels {channels}: {:.1} s, peak RSS {:.2} GiB (before decoding {:.2} GiB)",
        start.elapsed().as_secs_f64(),
        gib(peak),
        gib(before)
    );
    assert!(peak < 8 << 30, "peak RSS {peak} bytes");
}

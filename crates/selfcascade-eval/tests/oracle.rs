//! Parity with clean-fid and pytorch-fid (fixtures from `tools/oracle/fid.py`): Pillow resizing, the
//! FID Inception-v3's features on formula weights, FID and KID maths.

use burn::backend::Flex;
use safetensors::SafeTensors;
use selfcascade_eval::features::{image_features, read_rgb, FeatureOptions, InceptionFeatures};
use selfcascade_eval::inception::InceptionV3;
use selfcascade_eval::metrics::{fid, kid, kid_on_subsets, Features, KidOptions};
use selfcascade_eval::resize::{resize_plane_f32, resize_rgb8, Filter, Preprocess};
use selfcascade_sd::load::TensorStore;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fid")
        .join(name)
}

fn images() -> Vec<PathBuf> {
    (0..4)
        .map(|i| fixture(&format!("images/{i:02}.png")))
        .collect()
}

fn read_f32(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

fn read_i64(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<i64>) {
    let t = st.tensor(name).unwrap();
    let v = t
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (t.shape().to_vec(), v)
}

#[test]
fn resizing_matches_pillow_exactly() {
    let bytes = std::fs::read(fixture("resize.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (i, path) in images().iter().enumerate() {
        let img = read_rgb(path).unwrap();
        let (w, h) = (img.width() as usize, img.height() as usize);
        // clean-fid's float-channel bicubic (then clipped to 0..=255).
        let (shape, want) = read_f32(&st, &format!("bicubic_f.{i}"));
        assert_eq!(shape, [47, 61, 3]);
        for c in 0..3 {
            let plane: Vec<f32> = img.pixels().map(|p| p.0[c] as f32).collect();
            let got = resize_plane_f32(&plane, (w, h), (61, 47), Filter::Bicubic).unwrap();
            for (k, g) in got.iter().enumerate() {
                let expect = want[k * 3 + c];
                assert_eq!(
                    g.clamp(0.0, 255.0),
                    expect,
                    "image {i} channel {c} pixel {k}"
                );
            }
        }
        // Pillow's 8-bit Lanczos.
        let (_, want) = read_f32(&st, &format!("lanczos_u8.{i}"));
        let got = resize_rgb8(&img, 61, 47, Filter::Lanczos);
        let got: Vec<f32> = got.as_raw().iter().map(|&v| v as f32).collect();
        assert_eq!(got, want, "image {i} Lanczos");
    }
}

/// splitmix64's finaliser, as `tools/oracle/fid.py` vectorises it.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The oracle's formula weights for every tensor of pytorch-fid's state dict (`keys.json`), as an
/// in-memory store.
fn formula_store() -> TensorStore {
    let keys: Vec<(String, Vec<usize>)> =
        serde_json::from_str(&std::fs::read_to_string(fixture("keys.json")).unwrap()).unwrap();
    let mut tensors = Vec::new();
    for (k, (name, shape)) in keys.iter().enumerate() {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n as u64)
            .map(|i| {
                let u = (splitmix64(((k as u64) << 32) | i) >> 11) as f64 / (1u64 << 53) as f64;
                let v = if name.ends_with("conv.weight") {
                    let fan_in: usize = shape[1..].iter().product();
                    (2.0 * u - 1.0) * (3f64.sqrt() * (2.0 / fan_in as f64).sqrt())
                } else if name.ends_with("bn.weight") {
                    0.8 + 0.4 * u
                } else if name.ends_with("bn.bias") || name.ends_with("running_mean") {
                    0.2 * u - 0.1
                } else if name.ends_with("running_var") {
                    0.5 + u
                } else {
                    0.01 * (2.0 * u - 1.0)
                };
                v as f32
            })
            .collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name.clone(), shape.clone(), bytes));
    }
    let views: Vec<_> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap();
            (name.clone(), view)
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    TensorStore::from_owned(PathBuf::from("formula-weights"), bytes).unwrap()
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn inception_features_match_pytorch_fid() {
    let device = Default::default();
    let net = InceptionV3::<Flex>::from_store(formula_store(), &device).unwrap();
    let net = InceptionFeatures::new(net, &device, "formula".into());
    let imgs: Vec<_> = images().iter().map(|p| read_rgb(p).unwrap()).collect();
    let bytes = std::fs::read(fixture("features.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for (mode, preprocess) in [
        ("clean", Preprocess::Clean),
        ("lanczos_crop", Preprocess::LanczosCrop),
    ] {
        let options = FeatureOptions {
            preprocess,
            batch_size: 2,
            cache: false,
        };
        let got = image_features(&net, &imgs, &options, &mut |_, _| {}).unwrap();
        let (shape, want) = read_f32(&st, mode);
        assert_eq!(shape, [4, 2048]);
        for i in 0..4 {
            let row = |v: &[f32]| v[i * 2048..(i + 1) * 2048].to_vec();
            let err = rel_l2(&row(&got.data), &row(&want));
            // float32 through ~100 convolutions against float64: ~1e-6; a wrong padding, pool or
            // branch order gives O(1).
            assert!(err < 2e-5, "{mode} image {i}: relative L2 error {err:e}");
        }
    }
}

#[test]
fn fid_and_kid_match_clean_fid() {
    let bytes = std::fs::read(fixture("metrics.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("metrics.json")).unwrap()).unwrap();
    let feats = |name: &str| {
        let (shape, v) = read_f32(&st, name);
        Features::new(v, shape[0], shape[1]).unwrap()
    };
    let (a, b) = (feats("a"), feats("b"));
    let want = meta["fid"].as_f64().unwrap();
    let got = fid(&a, &b).unwrap();
    assert!(
        (got - want).abs() < 1e-8 * want,
        "FID {got} vs scipy {want}"
    );

    let (_, xs) = read_i64(&st, "kid_x");
    let (_, ys) = read_i64(&st, "kid_y");
    let subsets: Vec<(Vec<usize>, Vec<usize>)> = xs
        .chunks(50)
        .zip(ys.chunks(50))
        .map(|(x, y)| {
            (
                x.iter().map(|&i| i as usize).collect(),
                y.iter().map(|&i| i as usize).collect(),
            )
        })
        .collect();
    let k = kid_on_subsets(&a, &b, &subsets).unwrap();
    let (wm, ws) = (
        meta["kid_subsets_mean"].as_f64().unwrap(),
        meta["kid_subsets_std"].as_f64().unwrap(),
    );
    assert!(
        (k.mean - wm).abs() < 1e-9 * wm.abs(),
        "KID {} vs {wm}",
        k.mean
    );
    assert!(
        (k.std - ws).abs() < 1e-7 * ws.abs(),
        "KID std {} vs {ws}",
        k.std
    );

    // Whole sets of equal size: clean-fid's own kernel_distance.
    let a250 = Features::new(a.data[..250 * 64].to_vec(), 250, 64).unwrap();
    let whole = kid(&a250, &b, KidOptions::default()).unwrap();
    let want = meta["kid_whole"].as_f64().unwrap();
    assert!(
        (whole.mean - want).abs() < 1e-9 * want,
        "KID {} vs clean-fid {want}",
        whole.mean
    );
    assert!(whole.std < 1e-9 * want);
}

#[test]
fn saved_weights_use_pytorch_fid_names_and_reload_to_the_same_network() {
    let device = Default::default();
    let net = InceptionV3::<Flex>::from_store(formula_store(), &device).unwrap();
    let dir = std::env::temp_dir().join(format!("selfcascade-inception-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("inception.safetensors");
    net.save_safetensors(&path).unwrap();
    let saved = TensorStore::open(std::slice::from_ref(&path)).unwrap();
    let mut saved: Vec<String> = saved.names().map(String::from).collect();
    saved.sort();
    let keys: Vec<(String, Vec<usize>)> =
        serde_json::from_str(&std::fs::read_to_string(fixture("keys.json")).unwrap()).unwrap();
    let mut expected: Vec<String> = keys
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !k.starts_with("fc.") && !k.ends_with("num_batches_tracked"))
        .collect();
    expected.sort();
    assert_eq!(saved, expected);
    let reloaded = InceptionV3::<Flex>::load(&path, &device).unwrap();
    let x = burn::tensor::Tensor::<Flex, 4>::random(
        [1, 3, 299, 299],
        burn::tensor::Distribution::Uniform(0.0, 255.0),
        &device,
    );
    let a = net
        .features(x.clone())
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let b = reloaded
        .features(x)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert!(rel_l2(&b, &a) < 1e-5);
    std::fs::remove_dir_all(&dir).ok();
}

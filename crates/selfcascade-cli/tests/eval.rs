//! `selfcascade eval`: features files, FID/KID JSON, the feature cache and bad input, with a randomly
//! initialised Inception (the metrics' numerics are checked against clean-fid in selfcascade-eval).

mod common;

use common::{selfcascade, tmp};
use std::path::{Path, PathBuf};

/// A folder of `n` small PNGs: stripes whose period depends on `kind` and the index.
fn images(dir: &Path, n: usize, kind: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n as u32 {
        let img = image::RgbImage::from_fn(64, 48, |x, y| {
            let v = (((x + y * kind) / (2 + i + kind)) % 2) as u8 * 200 + 20;
            image::Rgb([v, (x * 3) as u8, (y * 4 + i * 30) as u8])
        });
        img.save(dir.join(format!("{i:03}.png"))).unwrap();
    }
}

/// A randomly initialised FID Inception in pytorch-fid's layout, written once per test run.
fn inception(root: &Path) -> PathBuf {
    let path = root.join("inception.safetensors");
    let net = selfcascade_eval::inception::InceptionV3::<burn::backend::Flex>::random(
        0,
        &Default::default(),
    )
    .unwrap();
    net.save_safetensors(&path).unwrap();
    path
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn features_fid_and_kid_from_folders_and_from_feature_files() {
    let root = tmp("eval", "folders");
    let inc = inception(&root);
    let (real, fake) = (root.join("real"), root.join("fake"));
    images(&real, 4, 1);
    images(&fake, 3, 5);
    let inc = inc.to_str().unwrap();
    let feats = root.join("real.safetensors");
    let (ok, _, err) = selfcascade(&[
        "eval",
        "features",
        "--images",
        real.to_str().unwrap(),
        "--inception",
        inc,
        "--output",
        feats.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(ok, "{err}");
    let bytes = std::fs::read(&feats).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("features").unwrap().shape(), [4, 2048]);
    // The folder's cache was written next to the images.
    assert!(std::fs::read_dir(&real).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".selfcascade-features-")));

    let (ok, out, err) = selfcascade(&[
        "eval",
        "fid-kid",
        "--real",
        real.to_str().unwrap(),
        "--fake",
        fake.to_str().unwrap(),
        "--inception",
        inc,
        "--json",
        "--quiet",
    ]);
    assert!(ok, "{err}");
    let from_folders = json(&out);
    assert_eq!(from_folders["n_real"], 4);
    assert_eq!(from_folders["n_fake"], 3);
    assert!(from_folders["fid"].as_f64().unwrap() > 0.0);
    assert!(from_folders["kid"].as_f64().is_some() && from_folders["kid_std"].as_f64().is_some());

    // The same sets given as a features file (no network needed) and through the cache agree.
    let (ok, out, err) = selfcascade(&[
        "eval",
        "fid-kid",
        "--real",
        feats.to_str().unwrap(),
        "--fake",
        fake.to_str().unwrap(),
        "--inception",
        inc,
        "--json",
        "--quiet",
    ]);
    assert!(ok, "{err}");
    let mixed = json(&out);
    for key in ["fid", "kid", "kid_std"] {
        let (a, b) = (
            from_folders[key].as_f64().unwrap(),
            mixed[key].as_f64().unwrap(),
        );
        assert!(
            (a - b).abs() <= 1e-9 * a.abs().max(1.0),
            "{key}: {a} vs {b}"
        );
    }

    // A set against itself: FID 0 (up to round-off), KID 0 on whole-set subsets.
    let (ok, out, _) = selfcascade(&[
        "eval",
        "fid-kid",
        "--real",
        feats.to_str().unwrap(),
        "--fake",
        feats.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok);
    let same = json(&out);
    assert!(same["fid"].as_f64().unwrap().abs() < 1e-6 * from_folders["fid"].as_f64().unwrap());
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn bad_input_is_a_clear_error() {
    let root = tmp("eval", "bad");
    let (real, empty, broken, single) = (
        root.join("real"),
        root.join("empty"),
        root.join("broken"),
        root.join("single"),
    );
    images(&real, 2, 1);
    images(&single, 1, 1);
    std::fs::create_dir_all(&empty).unwrap();
    images(&broken, 2, 2);
    std::fs::write(broken.join("001.png"), b"not a png").unwrap();
    let r = real.to_str().unwrap();

    // No weights for a folder: the message says which file to get.
    let (ok, _, err) = selfcascade(&["eval", "fid-kid", "--real", r, "--fake", r]);
    assert!(!ok && err.contains("pt_inception-2015-12-05"), "{err}");

    let inc = inception(&root);
    let inc = inc.to_str().unwrap();
    let run = |real: &Path, fake: &Path| {
        selfcascade(&[
            "eval",
            "fid-kid",
            "--real",
            real.to_str().unwrap(),
            "--fake",
            fake.to_str().unwrap(),
            "--inception",
            inc,
            "--quiet",
        ])
    };
    let (ok, _, err) = run(&real, &empty);
    assert!(!ok && err.contains("no PNG or JPEG images"), "{err}");
    let (ok, _, err) = run(&real, &broken);
    assert!(
        !ok && err.contains("001.png") && err.contains("decode"),
        "{err}"
    );
    let (ok, _, err) = run(&real, &single);
    assert!(!ok && err.contains("at least 2"), "{err}");
    let (ok, _, err) = run(&real, &root.join("missing"));
    assert!(!ok && err.contains("not a folder"), "{err}");

    // Weights of another network are refused with the expected file named.
    let wrong = root.join("wrong.safetensors");
    std::fs::copy(real.join("000.png"), &wrong).unwrap();
    let (ok, _, err) = selfcascade(&[
        "eval",
        "fid-kid",
        "--real",
        r,
        "--fake",
        r,
        "--inception",
        wrong.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("wrong.safetensors"), "{err}");
    let (ok, _, err) = selfcascade(&[
        "eval",
        "fid-kid",
        "--real",
        r,
        "--fake",
        r,
        "--inception",
        inc,
        "--preprocess",
        "area",
    ]);
    assert!(!ok && err.contains("clean or lanczos-crop"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}

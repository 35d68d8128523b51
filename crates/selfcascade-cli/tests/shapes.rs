//! `selfcascade generate` without `--model` (the embedded shapes model) and `selfcascade shapes eval`.

mod common;

use common::selfcascade;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    common::tmp("shapes", name)
}

fn png_info(path: &std::path::Path) -> ((u32, u32), Vec<(String, String)>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    let text = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), t.text.clone()))
        .collect();
    ((info.width, info.height), text)
}

#[test]
fn generate_without_a_model_uses_the_embedded_shapes_model() {
    let dir = tmp("gen");
    let out = dir.join("circle.png");
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--prompt",
        "a red circle on a blue background",
        "--width",
        "64",
        "--height",
        "64",
        "--steps",
        "6",
        "--seed",
        "1",
        "--save-stages",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (size, text) = png_info(&out);
    assert_eq!(size, (64, 64));
    for (k, v) in [
        ("model", "embedded:shapes"),
        ("method", "self-cascade"),
        ("stages", "32x32 -> 64x64"),
        ("steps", "6"),
    ] {
        assert!(
            text.iter().any(|(a, b)| a == k && b == v),
            "{k}={v} missing in {text:?}"
        );
    }
    assert_eq!(png_info(&dir.join("circle-stage0.png")).0, (32, 32));
    // Same seed, same picture; another method runs too.
    let again = dir.join("again.png");
    let args = |o: &str, method: &str| {
        selfcascade(&[
            "generate",
            "--prompt",
            "a red circle on a blue background",
            "--width",
            "64",
            "--steps",
            "6",
            "--seed",
            "1",
            "--method",
            method,
            "--quiet",
            "--out",
            o,
        ])
    };
    let (ok, _, err) = args(again.to_str().unwrap(), "self-cascade");
    assert!(ok, "{err}");
    let decode = |p: &std::path::Path| {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(p).unwrap()));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        reader.next_frame(&mut buf).unwrap();
        buf
    };
    assert_eq!(decode(&out), decode(&again));
    let direct = dir.join("direct.png");
    let (ok, _, err) = args(direct.to_str().unwrap(), "scalecrafter");
    assert!(ok, "{err}");
    assert_ne!(decode(&out), decode(&direct));
}

#[test]
fn bad_captions_and_sizes_are_explained() {
    let dir = tmp("bad");
    let out = dir.join("never.png");
    let o = out.to_str().unwrap();
    let (ok, _, err) = selfcascade(&["generate", "--prompt", "a cat", "--out", o, "--quiet"]);
    assert!(
        !ok && err.starts_with("error: ") && err.contains("a red circle on a blue background"),
        "{err}"
    );
    let (ok, _, err) = selfcascade(&[
        "generate",
        "--prompt",
        "a red circle on a blue background",
        "--width",
        "66",
        "--out",
        o,
        "--quiet",
    ]);
    assert!(!ok && err.contains("64 or 68"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists());
}

#[test]
fn shapes_eval_prints_the_table_as_json_and_writes_grids() {
    let dir = tmp("eval");
    let grids = dir.join("grids");
    let (ok, stdout, err) = selfcascade(&[
        "shapes",
        "eval",
        "--methods",
        "direct,self-cascade,self-cascade-tuned",
        "--scales",
        "4",
        "--samples",
        "2",
        "--batch",
        "2",
        "--json",
        "--quiet",
        "--grids",
        grids.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    let names: Vec<(&str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap(),
                r["pixel_scale"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("base", 1),
            ("direct", 4),
            ("self-cascade", 4),
            ("self-cascade-tuned", 4)
        ]
    );
    // The embedded upsampler: 742 parameters, 400 training steps; tuning-free rows train nothing.
    assert_eq!(rows[3]["trainable_parameters"], 742);
    assert_eq!(rows[3]["training_steps"], 400);
    assert_eq!(rows[2]["trainable_parameters"], 0);
    for r in rows {
        for key in [
            "single_object_rate",
            "mean_objects",
            "caption_accuracy",
            "seconds_per_image",
            "trainable_parameters",
        ] {
            assert!(r[key].is_number(), "{key} in {r}");
        }
        assert_eq!(r["samples"], 2);
    }
    assert!(rows[2]["time_vs_direct"].is_number());
    for name in ["base-x1.png", "direct-x4.png", "self-cascade-x4.png"] {
        assert!(grids.join(name).is_file(), "{name}");
    }
    let (ok, _, err) = selfcascade(&["shapes", "eval", "--scales", "5", "--quiet"]);
    assert!(!ok && err.contains("perfect square"), "{err}");
    let (ok, _, err) = selfcascade(&["shapes", "eval", "--methods", "magic", "--quiet"]);
    assert!(!ok && err.contains("self-cascade"), "{err}");
}

#[test]
fn the_tuned_method_runs_on_the_embedded_model_with_its_embedded_upsampler() {
    let dir = tmp("tuned");
    let run = |method: &str, extra: &[&str]| {
        let out = dir.join(format!("{method}.png"));
        let mut a = vec![
            "generate",
            "--prompt",
            "a red circle on a blue background",
            "--width",
            "64",
            "--height",
            "64",
            "--method",
            method,
            "--seed",
            "3",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        let (ok, _, err) = selfcascade(&a);
        (ok, err, out)
    };
    let (ok, err, tuned) = run("self-cascade-tuned", &[]);
    assert!(ok, "{err}");
    let (ok, err, free) = run("self-cascade", &[]);
    assert!(ok, "{err}");
    assert_ne!(
        std::fs::read(&tuned).unwrap(),
        std::fs::read(&free).unwrap(),
        "the trained upsamplers change the image"
    );
    let (ok, err, _) = run(
        "self-cascade-tuned",
        &["--upsamplers", "missing.safetensors"],
    );
    assert!(!ok && err.contains("missing.safetensors"), "{err}");
}

//! End-to-end tests of the `selfcascade` binary.

mod common;

use common::selfcascade;

#[test]
fn plan_prints_stage_sizes() {
    let (ok, out, _) = selfcascade(&["plan", "--base", "512x512", "--target", "2048x2048"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sides: Vec<(u64, u64)> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap()))
        .collect();
    assert_eq!(sides, vec![(512, 512), (1024, 1024), (2048, 2048)]);
}

#[test]
fn plan_errors_are_one_line_and_suggest_sizes() {
    let (ok, out, err) = selfcascade(&["plan", "--base", "512x512", "--target", "1000x1000"]);
    assert!(!ok && out.is_empty());
    assert!(
        err.starts_with("error: ")
            && err.contains("960 or 1024")
            && err.trim().lines().count() == 1,
        "{err}"
    );
    let (ok, _, err) = selfcascade(&["plan", "--base", "512x512", "--target", "big"]);
    assert!(!ok && err.contains("WIDTHxHEIGHT"), "{err}");
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("selfcascade-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scheduler_config.json");
    std::fs::write(&path, text).unwrap();
    path
}

const SD21: &str = r#"{"_class_name":"PNDMScheduler","beta_end":0.012,"beta_schedule":"scaled_linear","beta_start":0.00085,
  "clip_sample":false,"num_train_timesteps":1000,"prediction_type":"epsilon","set_alpha_to_one":false,"skip_prk_steps":true,
  "steps_offset":1,"trained_betas":null}"#;

#[test]
fn inspect_schedule_keeps_the_strength_tail() {
    let path = write_config("sd21", SD21);
    let p = path.to_str().unwrap();
    let (ok, out, err) = selfcascade(&[
        "inspect",
        "schedule",
        "--config",
        p,
        "--steps",
        "50",
        "--strength",
        "0.7",
        "--scheduler",
        "ddim",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ts = v["timesteps"].as_array().unwrap();
    assert_eq!(ts.len(), 35);
    assert_eq!(ts[0].as_i64(), Some(681));
    assert_eq!(ts[34].as_i64(), Some(1));
    let a = v["alphas_cumprod"].as_array().unwrap();
    assert_eq!(a.len(), 35);
    // ᾱ_681 of SD's scaled-linear schedule, as diffusers 0.42 computes it
    assert!(
        (a[0].as_f64().unwrap() - 0.094_636_827_7).abs() < 1e-7,
        "{}",
        a[0]
    );
}

#[test]
fn inspect_schedule_explains_unsupported_classes() {
    let path = write_config("pndm", SD21);
    let (ok, _, err) = selfcascade(&[
        "inspect",
        "schedule",
        "--config",
        path.to_str().unwrap(),
        "--steps",
        "50",
    ]);
    assert!(
        !ok && err.contains("PNDMScheduler") && err.contains("--scheduler"),
        "{err}"
    );
    let (ok, _, err) = selfcascade(&[
        "inspect",
        "schedule",
        "--config",
        "/nonexistent/x.json",
        "--steps",
        "50",
    ]);
    assert!(!ok && err.contains("/nonexistent/x.json"), "{err}");
}

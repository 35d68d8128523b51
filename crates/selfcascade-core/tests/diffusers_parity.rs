//! Schedulers and pivot interpolation against diffusers / PyTorch fixtures
//! (made by `tools/oracle/schedulers.py`).

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use selfcascade_core::pivot::{Interpolation, PivotUpsampler};
use selfcascade_core::scheduler::{self, NoiseSchedule, SchedulerConfig, SchedulerKind};
use serde_json::Value;

type B = Flex;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture present"))
        .expect("fixture is JSON")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn tensor(v: &Value, shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(floats(v), shape), &Default::default())
}

fn values(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().expect("f32 data")
}

/// max |a − b| ≤ tol · max(1, max |b|)
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        err <= tol * scale,
        "{what}: max error {err} > {tol} × {scale}"
    );
}

fn config_of(case: &Value) -> (SchedulerConfig, SchedulerKind) {
    // diffusers writes every field of the class, some with values we treat as unknown-but-inert.
    let mut cfg = case["config"].clone();
    let obj = cfg.as_object_mut().expect("config object");
    obj.retain(|k, v| !(v.is_null() || k.starts_with('_') && k != "_class_name"));
    let cfg = SchedulerConfig::from_json(&cfg.to_string()).expect("config parses");
    let kind = cfg.kind().expect("known class");
    (cfg, kind)
}

#[test]
fn schedulers_match_diffusers() {
    let fx = load("schedulers.json");
    let shape: Vec<usize> = fx["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let shape = [shape[0], shape[1], shape[2], shape[3]];
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (cfg, kind) = config_of(case);
        let eta = case["eta"].as_f64().unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let mut s = scheduler::build::<B, 4>(&cfg, Some(kind), eta).unwrap();

        assert_close(
            &format!("{name}: alphas_cumprod"),
            s.alphas_cumprod(),
            &floats(&case["alphas_cumprod"]),
            1e-6,
        );
        s.set_timesteps(steps).unwrap();
        let ts: Vec<f32> = s.timesteps().iter().map(|t| *t as f32).collect();
        assert_eq!(ts, floats(&case["timesteps"]), "{name}: timesteps");
        let sigma = case["init_noise_sigma"].as_f64().unwrap();
        assert!(
            (s.init_noise_sigma() - sigma).abs() <= 1e-5 * sigma.max(1.0),
            "{name}: init_noise_sigma"
        );

        for (strength, want) in case["strength"].as_object().unwrap() {
            let st: f64 = strength.parse().unwrap();
            match s.strength_start(st) {
                Ok(start) => assert_eq!(
                    start as u64,
                    want["start"].as_u64().unwrap(),
                    "{name}: strength {st}"
                ),
                Err(_) => assert!(
                    want["first"].is_null(),
                    "{name}: strength {st} should keep steps"
                ),
            }
        }

        // Step by step: same input → same output (no accumulation), then the whole trajectory.
        let init = tensor(&case["init"], shape);
        let mut sample = init.mul_scalar(s.init_noise_sigma());
        for st in case["trajectory"].as_array().unwrap() {
            let i = st["index"].as_u64().unwrap() as usize;
            let what = format!("{name}: step {i}");
            let scaled = s.scale_model_input(sample.clone(), i).unwrap();
            assert_close(
                &format!("{what} model input"),
                &values(scaled.clone()),
                &floats(&st["model_input"]),
                2e-5,
            );
            // Recompute the stand-in model from our own scaled input: tanh(x)/2 + bias·t/1000.
            let t = s.timesteps()[i];
            let out = scaled
                .tanh()
                .mul_scalar(0.5)
                .add(tensor(&case["bias"], shape).mul_scalar(t / 1000.0));
            assert_close(
                &format!("{what} model output"),
                &values(out.clone()),
                &floats(&st["model_output"]),
                2e-5,
            );
            let noise = s.needs_step_noise(i).then(|| tensor(&st["noise"], shape));
            let one = s
                .step(
                    tensor(&st["model_output"], shape),
                    i,
                    sample.clone(),
                    noise.clone(),
                )
                .unwrap();
            assert_close(
                &format!("{what} single step"),
                &values(one),
                &floats(&st["prev_sample"]),
                2e-5,
            );
            sample = s.step(out, i, sample, noise).unwrap();
        }
        let last = case["trajectory"].as_array().unwrap().last().unwrap();
        assert_close(
            &format!("{name}: trajectory"),
            &values(sample),
            &floats(&last["prev_sample"]),
            1e-4,
        );

        for add in case["add_noise"].as_array().unwrap() {
            let i = add["index"].as_u64().unwrap() as usize;
            let got = s
                .add_noise(tensor(&case["x0"], shape), tensor(&case["init"], shape), i)
                .unwrap();
            assert_close(
                &format!("{name}: add_noise {i}"),
                &values(got),
                &floats(&add["noisy"]),
                2e-6,
            );
        }
        if let Some(sig) = case.get("sigmas") {
            let euler = scheduler::EulerDiscreteScheduler::new(cfg.clone()).map(|mut e| {
                e.set_timesteps(steps).unwrap();
                e
            });
            assert_close(
                &format!("{name}: sigmas"),
                euler.unwrap().sigmas(),
                &floats(sig),
                1e-6,
            );
        }
    }
}

#[test]
fn interpolation_matches_pytorch() {
    let fx = load("interpolate.json");
    for case in fx["cases"].as_array().unwrap() {
        let mode: Interpolation = case["mode"].as_str().unwrap().parse().unwrap();
        let s: Vec<usize> = case["input_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let size: Vec<usize> = case["size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let x = tensor(&case["input"], [s[0], s[1], s[2], s[3]]);
        let y = PivotUpsampler::<B>::upsample(&mode, x, size[0], size[1]);
        assert_eq!(y.dims(), [s[0], s[1], size[0], size[1]]);
        assert_close(
            &format!("{mode:?} {s:?} -> {size:?}"),
            &values(y),
            &floats(&case["output"]),
            1e-5,
        );
    }
}

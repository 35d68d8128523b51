//! The self-cascade pipeline against diffusers, stage by stage (fixtures from
//! `tools/oracle/pipelines.py`): stage 0 equals `StableDiffusion(XL)Pipeline` from the injected noise,
//! each later stage equals `StableDiffusion(XL)Img2ImgPipeline` on the bicubic-upsampled previous latent
//! with strength 0.7 and the injected re-noising noise.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use selfcascade_core::scheduler::SchedulerConfig;
use selfcascade_core::{InjectedNoise, ScalePlan, Size};
use selfcascade_sd::load::TensorStore;
use selfcascade_sd::pipeline::{GenerateRequest, Method, PromptEmbeds, StableDiffusion};
use serde_json::Value;
use std::ops::ControlFlow;
use std::path::PathBuf;

type B = Flex;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tensor<const D: usize>(store: &TensorStore, name: &str) -> Tensor<B, D> {
    let t = store.read(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut shape = [0usize; D];
    shape.copy_from_slice(&t.shape);
    Tensor::from_data(TensorData::new(t.data, shape), &Default::default())
}

fn values(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn run_case(case: &str) {
    let dir = fixtures().join("pipelines");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{case}.json"))).unwrap())
            .unwrap();
    let store = TensorStore::open(&[dir.join(format!("{case}.safetensors"))]).unwrap();
    let family = fixtures()
        .join("models")
        .join(meta["family"].as_str().unwrap());
    let dev = Default::default();
    let mut sd = StableDiffusion::<B>::load(&family, None, &dev).unwrap();
    // The scheduler exactly as the oracle built it.
    let mut cfg = meta["scheduler_config"].clone();
    cfg.as_object_mut()
        .unwrap()
        .insert("_class_name".into(), meta["scheduler_class"].clone());
    cfg.as_object_mut()
        .unwrap()
        .retain(|k, v| !v.is_null() && k != "_diffusers_version");
    sd.scheduler_config = SchedulerConfig::from_json(&cfg.to_string()).unwrap();

    let stages: Vec<Size> = meta["pixels_hw"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hw| {
            Size::new(
                hw[1].as_u64().unwrap() as usize,
                hw[0].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let plan = ScalePlan::from_stages(stages.clone()).unwrap();
    let sdxl = store.shape("pooled_prompt_embeds").is_some();
    let embeds = PromptEmbeds {
        positive: tensor(&store, "prompt_embeds"),
        negative: tensor(&store, "negative_prompt_embeds"),
        positive_pooled: sdxl.then(|| tensor(&store, "pooled_prompt_embeds")),
        negative_pooled: sdxl.then(|| tensor(&store, "negative_pooled_prompt_embeds")),
        truncated: false,
    };
    let request = GenerateRequest {
        width: stages.last().unwrap().width,
        height: stages.last().unwrap().height,
        method: Method::SelfCascade,
        steps: meta["num_inference_steps"].as_u64().unwrap() as usize,
        guidance: meta["guidance_scale"].as_f64().unwrap(),
        strength: meta["strength"].as_f64().unwrap(),
        scheduler: None,
        eta: Some(0.0),
        keep_stages: true,
    };
    let noise: Vec<Tensor<B, 4>> = (0..stages.len())
        .map(|r| tensor(&store, &format!("stage{r}")))
        .collect();
    let mut timesteps: Vec<Vec<f64>> = vec![Vec::new(); stages.len()];
    let out = sd
        .sample_plan(
            &embeds,
            &request,
            &plan,
            &mut InjectedNoise::new(noise, 0),
            &mut |p| {
                timesteps[p.stage].push(p.timestep);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert_eq!(out.stages.len(), stages.len());
    for (r, got) in out.stages.into_iter().enumerate() {
        let want_t: Vec<f64> = store
            .read(&format!("timesteps_stage{r}"))
            .unwrap()
            .data
            .iter()
            .map(|v| *v as f64)
            .collect();
        assert_eq!(timesteps[r], want_t, "{case}: timesteps of stage {r}");
        let want = store.read(&format!("out_stage{r}")).unwrap().data;
        let got = values(got);
        let num: f64 = got
            .iter()
            .zip(&want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        let rel = (num / den).sqrt();
        assert!(rel <= 1e-3, "{case}: stage {r} relative L2 error {rel}");
        eprintln!("{case}: stage {r} relative L2 error {rel:.2e}");
    }
}

#[test]
fn sd21_three_stage_cascade_with_guidance_equals_diffusers() {
    run_case("sd21_cascade");
}

#[test]
fn sd15_cascade_without_guidance_equals_diffusers() {
    run_case("sd15_cascade");
}

#[test]
fn sdxl_cascade_with_euler_and_micro_conditioning_equals_diffusers() {
    run_case("sdxl_cascade");
}

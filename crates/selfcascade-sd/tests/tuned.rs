//! `Method::SelfCascadeTuned` over the tiny SD 2.1 family (`fixtures/models/sd21`, two stages 32×64 →
//! 64×128 pixels, latents 8×16 → 16×32, DDIM 10 steps, strength 0.7: stage 1 runs t = 601, 501, …, 101,
//! 1; classifier-free guidance 7.5): when the feature upsamplers run, what they are given, and that
//! the method otherwise is the tuning-free self-cascade.
//!
//! Mutation check done by hand once: scaling the pivot by 0.18215 once more at every step after the
//! first in `UNetDenoiser::predict` (0.18215^step, the released code's defect) makes
//! `the_pivot_is_the_previous_stage_latent_at_every_active_step` fail: the first active step still
//! matches exactly, the last one differs by relative L2 0.55 between the recorded and the recomputed
//! point-0 features (the test asks for ≤ 1e-6; the correct code gives 0).

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use selfcascade_core::{FeatureUpsampler, InjectedNoise, ScalePlan, Size};
use selfcascade_sd::load::TensorStore;
use selfcascade_sd::pipeline::{
    FeatureInjection, GenerateRequest, Method, PromptEmbeds, StableDiffusion, UNetSampling,
};
use selfcascade_sd::unet::{PivotInjection, UNet2DConditionModel, UNetHooks};
use selfcascade_sd::upsampler::{LightUpsampler, LightUpsamplerConfig};
use std::cell::RefCell;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::rc::Rc;

type B = Flex;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tensor<const D: usize>(store: &TensorStore, name: &str) -> Tensor<B, D> {
    let t = store.read(name).unwrap();
    let shape: [usize; D] = t.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(t.data, shape), &Default::default())
}

fn values<const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.clone().into_data().to_vec::<f32>().unwrap()
}

fn rel_l2<const D: usize>(a: &Tensor<B, D>, b: &Tensor<B, D>) -> f64 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (values(a), values(b));
    let num: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| ((x - y) as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

struct Setup {
    sd: StableDiffusion<B>,
    embeds: PromptEmbeds<B>,
    noise: Vec<Tensor<B, 4>>,
    plan: ScalePlan,
}

fn setup() -> Setup {
    let sd = StableDiffusion::<B>::load(&fixtures().join("models/sd21"), None, &Default::default())
        .unwrap();
    let store =
        TensorStore::open(&[fixtures().join("pipelines/sd21_cascade.safetensors")]).unwrap();
    let embeds = PromptEmbeds {
        positive: tensor(&store, "prompt_embeds"),
        negative: tensor(&store, "negative_prompt_embeds"),
        positive_pooled: None,
        negative_pooled: None,
        truncated: false,
    };
    Setup {
        sd,
        embeds,
        noise: vec![tensor(&store, "stage0"), tensor(&store, "stage1")],
        plan: ScalePlan::from_stages(vec![Size::new(64, 32), Size::new(128, 64)]).unwrap(),
    }
}

fn request(method: Method) -> GenerateRequest {
    GenerateRequest {
        width: 128,
        height: 64,
        method,
        steps: 10,
        guidance: 7.5,
        strength: 0.7,
        scheduler: None,
        eta: Some(0.0),
        keep_stages: true,
    }
}

/// One φ_n call as the UNet made it.
struct Call {
    n: usize,
    features: Tensor<B, 4>,
    temb: Tensor<B, 2>,
}

/// Wraps an upsampler and records every call.
struct Recorder<U> {
    inner: U,
    calls: Rc<RefCell<Vec<Call>>>,
}

impl<U: FeatureUpsampler<B>> FeatureUpsampler<B> for Recorder<U> {
    fn num_points(&self) -> usize {
        self.inner.num_points()
    }
    fn trainable_parameters(&self) -> usize {
        self.inner.trainable_parameters()
    }

    fn channels(&self, n: usize) -> usize {
        self.inner.channels(n)
    }
    fn upsample(
        &self,
        n: usize,
        pivot_features: Tensor<B, 4>,
        temb: Tensor<B, 2>,
        size: (usize, usize),
    ) -> selfcascade_core::Result<Tensor<B, 4>> {
        self.calls.borrow_mut().push(Call {
            n,
            features: pivot_features.clone(),
            temb: temb.clone(),
        });
        self.inner.upsample(n, pivot_features, temb, size)
    }
}

/// φ_n = 0.
struct Zero(Vec<usize>);

impl FeatureUpsampler<B> for Zero {
    fn num_points(&self) -> usize {
        self.0.len()
    }
    fn trainable_parameters(&self) -> usize {
        0
    }
    fn channels(&self, n: usize) -> usize {
        self.0.get(n).copied().unwrap_or(0)
    }
    fn upsample(
        &self,
        n: usize,
        h: Tensor<B, 4>,
        _: Tensor<B, 2>,
        size: (usize, usize),
    ) -> selfcascade_core::Result<Tensor<B, 4>> {
        let [b, _, _, _] = h.dims();
        Ok(Tensor::zeros([b, self.0[n], size.0, size.1], &h.device()))
    }
}

/// An untrained light upsampler (nearest upsampling): injection visibly changes the output.
fn light(unet: &UNet2DConditionModel<B>) -> LightUpsampler<B> {
    LightUpsampler::init(
        &LightUpsamplerConfig::for_unet(unet),
        5,
        &Default::default(),
    )
    .unwrap()
}

/// Per step of the run: (stage, timestep, φ calls during that step), and the output.
type Steps = Vec<(usize, f64, usize)>;

fn run_sampling(
    s: &Setup,
    method: Method,
    injection: Option<FeatureInjection<'_, B>>,
    calls: Option<&Rc<RefCell<Vec<Call>>>>,
) -> (selfcascade_core::CascadeOutput<B>, Steps) {
    let sampling = UNetSampling {
        unet: &s.sd.unet,
        scheduler_config: &s.sd.scheduler_config,
        base: s.sd.base_size(),
        latent_scale: s.sd.vae_scale_factor(),
        scalecrafter: None,
        feature_injection: injection,
    };
    let mut steps = Vec::new();
    let mut seen = 0;
    let out = sampling
        .sample(
            &s.embeds,
            &request(method),
            &s.plan,
            &mut InjectedNoise::new(s.noise.clone(), 0),
            &Default::default(),
            &mut |p| {
                let now = calls.map_or(0, |c| c.borrow().len());
                steps.push((p.stage, p.timestep, now - seen));
                seen = now;
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    (out, steps)
}

#[test]
fn injection_runs_only_while_t_is_above_t_min() {
    let s = setup();
    let calls = Rc::new(RefCell::new(Vec::new()));
    let rec = Recorder {
        inner: light(&s.sd.unet),
        calls: calls.clone(),
    };
    // t_min = 101, a timestep stage 1 runs: that step runs the plain UNet.
    let (_, steps) = run_sampling(
        &s,
        Method::SelfCascadeTuned,
        Some(FeatureInjection {
            upsampler: &rec,
            t_min: 101.0,
        }),
        Some(&calls),
    );
    let stage1: Vec<(f64, usize)> = steps
        .iter()
        .filter(|s| s.0 == 1)
        .map(|s| (s.1, s.2))
        .collect();
    assert_eq!(
        stage1,
        vec![
            (601.0, 4),
            (501.0, 4),
            (401.0, 4),
            (301.0, 4),
            (201.0, 4),
            (101.0, 0),
            (1.0, 0)
        ]
    );
    assert!(
        steps.iter().filter(|s| s.0 == 0).all(|s| s.2 == 0),
        "stage 0 has no pivot: {steps:?}"
    );
    assert_eq!(steps.iter().filter(|s| s.0 == 0).count(), 10);
    // Every call of a step sees the points 0..3 in order, with the guided batch (2 = uncond + cond).
    let ns: Vec<usize> = calls.borrow().iter().map(|c| c.n).collect();
    assert_eq!(ns, [0, 1, 2, 3].repeat(5));
    assert!(calls.borrow().iter().all(|c| c.features.dims()[0] == 2));

    // The default t_min (100) includes t = 101.
    calls.borrow_mut().clear();
    let (_, steps) = run_sampling(
        &s,
        Method::SelfCascadeTuned,
        Some(FeatureInjection::new(&rec)),
        Some(&calls),
    );
    let active: Vec<f64> = steps.iter().filter(|s| s.2 > 0).map(|s| s.1).collect();
    assert_eq!(active, vec![601.0, 501.0, 401.0, 301.0, 201.0, 101.0]);
    assert_eq!(FeatureInjection::<B>::DEFAULT_T_MIN, 100.0);
    assert!(!FeatureInjection::new(&rec).active_at(100.0));
    assert!(FeatureInjection::new(&rec).active_at(100.5));
}

#[test]
fn the_pivot_is_the_previous_stage_latent_at_every_active_step() {
    let s = setup();
    let calls = Rc::new(RefCell::new(Vec::new()));
    let rec = Recorder {
        inner: light(&s.sd.unet),
        calls: calls.clone(),
    };
    let (out, steps) = run_sampling(
        &s,
        Method::SelfCascadeTuned,
        Some(FeatureInjection::new(&rec)),
        Some(&calls),
    );
    let active: Vec<f64> = steps.iter().filter(|s| s.2 > 0).map(|s| s.1).collect();
    let (first_t, last_t) = (active[0], active[active.len() - 1]);
    assert_eq!((first_t, last_t), (601.0, 101.0));
    let calls = calls.borrow();
    let point0: Vec<&Call> = calls.iter().filter(|c| c.n == 0).collect();
    assert_eq!(point0.len(), active.len());

    // Recompute point 0's pivot features for the stage-0 latent (repeated to the guided batch, as the
    // guidance adaptor does) at the first and the last active timestep.
    let pivot = out.stages[0].clone();
    assert_eq!(pivot.dims(), [1, 4, 8, 16]);
    let guided = Tensor::cat(vec![pivot.clone(), pivot], 0);
    let context = Tensor::cat(
        vec![s.embeds.negative.clone(), s.embeds.positive.clone()],
        0,
    );
    let unet = &s.sd.unet;
    for (call, t) in [(point0[0], first_t), (point0[point0.len() - 1], last_t)] {
        let again = Rc::new(RefCell::new(Vec::new()));
        let probe = Recorder {
            inner: Zero(unet.injection_channels()),
            calls: again.clone(),
        };
        let hooks = UNetHooks {
            pivot: Some(PivotInjection {
                latent: guided.clone(),
                upsampler: &probe,
            }),
            ..Default::default()
        };
        unet.forward(
            Tensor::zeros([2, 4, 16, 32], &Default::default()),
            &[t],
            context.clone(),
            None,
            &hooks,
        )
        .unwrap();
        let again = again.borrow();
        let want = &again[0];
        assert_eq!(
            values(&call.temb),
            values(&want.temb),
            "t = {t}: time embedding"
        );
        let err = rel_l2(&call.features, &want.features);
        eprintln!("t = {t}: recorded vs recomputed point-0 pivot features: relative L2 {err:.2e}");
        assert!(
            err <= 1e-6,
            "t = {t}: the pivot changed during the stage ({err})"
        );
    }
}

#[test]
fn a_zero_upsampler_gives_the_tuning_free_result() {
    let s = setup();
    let zero = Zero(s.sd.unet.injection_channels());
    let (tuned, _) = run_sampling(
        &s,
        Method::SelfCascadeTuned,
        Some(FeatureInjection::new(&zero)),
        None,
    );
    let (free, _) = run_sampling(&s, Method::SelfCascade, None, None);
    assert_eq!(tuned.stages.len(), 2);
    assert_eq!(values(&tuned.latent), values(&free.latent));
    // And the nearest-upsampling one changes it.
    let up = light(&s.sd.unet);
    let (injected, _) = run_sampling(
        &s,
        Method::SelfCascadeTuned,
        Some(FeatureInjection::new(&up)),
        None,
    );
    assert_eq!(values(&injected.stages[0]), values(&free.stages[0]));
    let d = rel_l2(&injected.latent, &free.latent);
    eprintln!("untrained light upsampler vs tuning-free: stage-1 relative L2 {d:.2e}");
    assert!(d > 1e-3, "{d}");
}

#[test]
fn the_pipeline_needs_matching_upsamplers_for_the_tuned_method() {
    let mut s = setup();
    let run = |sd: &StableDiffusion<B>, s: &Setup| {
        sd.sample_plan(
            &s.embeds,
            &request(Method::SelfCascadeTuned),
            &s.plan,
            &mut InjectedNoise::new(s.noise.clone(), 0),
            &mut |_| ControlFlow::Continue(()),
        )
    };
    let err = run(&s.sd, &s).unwrap_err().to_string();
    assert!(
        err.contains("self-cascade-tuned") && err.contains("feature upsamplers"),
        "{err}"
    );
    // Sized for another UNet: refused when attached.
    let err =
        s.sd.set_feature_upsampler(Box::new(Zero(vec![16, 24, 32])), 100.0)
            .unwrap_err()
            .to_string();
    assert!(err.contains("[16, 24, 32]"), "{err}");
    let err =
        s.sd.set_feature_upsampler(Box::new(Zero(s.sd.unet.injection_channels())), f64::NAN)
            .unwrap_err()
            .to_string();
    assert!(err.contains("t_min"), "{err}");
    assert!(s.sd.feature_upsampler().is_none());
    // Attached: the stages of the tuning-free method, with injection in stage 1 only.
    let calls = Rc::new(RefCell::new(Vec::new()));
    let up = light(&s.sd.unet);
    s.sd.set_feature_upsampler(
        Box::new(Recorder {
            inner: up,
            calls: calls.clone(),
        }),
        100.0,
    )
    .unwrap();
    let out = run(&s.sd, &s).unwrap();
    assert_eq!(out.stages.len(), 2);
    assert_eq!(calls.borrow().len(), 6 * 4);
    assert_eq!(
        s.sd.plan(&GenerateRequest {
            width: 256,
            height: 256,
            method: Method::SelfCascadeTuned,
            ..request(Method::SelfCascadeTuned)
        })
        .unwrap(),
        s.sd.plan(&GenerateRequest {
            width: 256,
            height: 256,
            ..request(Method::SelfCascade)
        })
        .unwrap()
    );
    assert!(s.sd.take_feature_upsampler().is_some());
}

#[test]
fn method_names_and_lists() {
    assert_eq!(Method::SelfCascadeTuned.name(), "self-cascade-tuned");
    assert_eq!(
        "self-cascade-tuned".parse::<Method>().unwrap(),
        Method::SelfCascadeTuned
    );
    assert_eq!(Method::ALL.len(), 5);
    assert!(!Method::TUNING_FREE.contains(&Method::SelfCascadeTuned));
    assert!(Method::TUNING_FREE.iter().all(|m| Method::ALL.contains(m)));
    assert!(Method::SelfCascadeTuned.is_cascade() && Method::SelfCascade.is_cascade());
    assert!(!Method::Direct.is_cascade());
}

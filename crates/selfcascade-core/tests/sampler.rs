//! Algorithm 2 on an analytic denoiser: data ~ N(μ, σ²I), whose exact ε-prediction is known, so a
//! correct deterministic sampler must land on mean μ and standard deviation σ.

use burn::backend::Flex;
use burn::tensor::{backend::Backend, Tensor};
use selfcascade_core::scheduler::{
    self, NoiseSchedule, PredictionType, SchedulerConfig, SchedulerKind,
};
use selfcascade_core::{
    ClassifierFreeGuidance, Denoiser, Error, GaussianDenoiser, InjectedNoise, Interpolation,
    Progress, ScalePlan, SeededNoise, SelfCascadeConfig, SelfCascadeSampler, Size, StepContext,
};
use std::ops::ControlFlow;

type B = Flex;

const SD: &str = r#"{"beta_schedule":"scaled_linear","beta_start":0.00085,"beta_end":0.012,"clip_sample":false,
    "set_alpha_to_one":false,"steps_offset":1,"timestep_spacing":"leading"}"#;

fn stats(t: &Tensor<B, 4>) -> (f64, f64) {
    let v = t.clone().into_data().to_vec::<f32>().unwrap();
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn run(
    kind: SchedulerKind,
    plan: &ScalePlan,
    steps: usize,
    denoiser: &dyn Denoiser<B, 4>,
    progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> selfcascade_core::Result<selfcascade_core::CascadeOutput<B>> {
    let cfg = SchedulerConfig::from_json(SD).unwrap();
    let mut s = scheduler::build::<B, 4>(&cfg, Some(kind), 0.0).unwrap();
    let mut sampler = SelfCascadeSampler {
        scheduler: s.as_mut(),
        pivot_upsampler: &Interpolation::Bicubic,
        config: SelfCascadeConfig {
            steps,
            keep_stages: true,
            ..Default::default()
        },
    };
    sampler.sample(
        plan,
        denoiser,
        &mut SeededNoise::new(3),
        &Default::default(),
        progress,
    )
}

fn gaussian(mean: f64, std: f64) -> GaussianDenoiser {
    let cfg = SchedulerConfig::from_json(SD).unwrap();
    let s = scheduler::DdimScheduler::new(cfg, 0.0).unwrap();
    GaussianDenoiser::new(mean, std, s.alphas_cumprod())
}

/// For Gaussian data every deterministic step is affine: the mean part is exact and the deviation
/// from it is multiplied by a known factor. Returns (signal scale of the output, product of factors).
fn analytic_map(kind: SchedulerKind, steps: usize, sigma_d: f64) -> (f64, f64, f64) {
    let cfg = SchedulerConfig::from_json(SD).unwrap();
    match kind {
        SchedulerKind::Ddim => {
            let mut s = scheduler::DdimScheduler::new(cfg, 0.0).unwrap();
            s.set_timesteps(steps).unwrap();
            let ac = s.alphas_cumprod().to_vec();
            let ts = s.timesteps().to_vec();
            let var = |a: f64| a * sigma_d * sigma_d + 1.0 - a;
            let mut c = 1.0;
            let mut a_last = 0.0;
            for (i, t) in ts.iter().enumerate() {
                let a = ac[*t as usize] as f64;
                let a_prev = if i + 1 < ts.len() {
                    ac[ts[i + 1] as usize] as f64
                } else {
                    ac[0] as f64
                };
                c *= ((a * a_prev).sqrt() * sigma_d * sigma_d
                    + ((1.0 - a) * (1.0 - a_prev)).sqrt())
                    / var(a);
                a_last = a_prev;
            }
            // z_T = noise (init sigma 1), deviation = noise − sqrt(ᾱ_T)·μ
            (a_last.sqrt(), c, (ac[ts[0] as usize] as f64).sqrt())
        }
        _ => {
            let mut s = scheduler::EulerDiscreteScheduler::new(cfg).unwrap();
            s.set_timesteps(steps).unwrap();
            let sig: Vec<f64> = s.sigmas().iter().map(|v| *v as f64).collect();
            let mut c = 1.0;
            for i in 0..steps {
                c *= 1.0 + sig[i] * (sig[i + 1] - sig[i]) / (sigma_d * sigma_d + sig[i] * sig[i]);
            }
            // s_T = noise · init_sigma, deviation = s_T − μ, final σ = 0: output = μ + c·(s_T − μ)
            (
                1.0,
                c,
                1.0 / <scheduler::EulerDiscreteScheduler as NoiseSchedule>::init_noise_sigma(&s),
            )
        }
    }
}

#[test]
fn deterministic_samplers_follow_the_exact_gaussian_map() {
    let plan = ScalePlan::single(Size::new(64, 64));
    for kind in [SchedulerKind::Ddim, SchedulerKind::EulerDiscrete] {
        for (mu, sigma) in [(0.5, 0.2), (-1.0, 1.5)] {
            let out = run(kind, &plan, 30, &gaussian(mu, sigma), &mut |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
            let got = out.latent.into_data().to_vec::<f32>().unwrap();
            let dev = Default::default();
            let noise: Tensor<B, 4> = selfcascade_core::NoiseSource::<B, 4>::stage_noise(
                &mut SeededNoise::new(3),
                0,
                [1, 4, 8, 8],
                &dev,
            )
            .unwrap();
            let noise = noise.into_data().to_vec::<f32>().unwrap();
            let (scale, c, a_t) = analytic_map(kind, 30, sigma);
            for (g, n) in got.iter().zip(&noise) {
                let want = match kind {
                    // z_0 = sqrt(ᾱ_final)·μ + c·(z_T − sqrt(ᾱ_T)·μ)
                    SchedulerKind::Ddim => scale * mu + c * (*n as f64 - a_t * mu),
                    // s_0 = μ + c·(σ_max'·n − μ)
                    _ => mu + c * (*n as f64 / a_t - mu),
                };
                assert!(
                    (*g as f64 - want).abs() < 2e-4 * want.abs().max(1.0),
                    "{kind:?} μ={mu} σ={sigma}: {g} vs {want}"
                );
            }
        }
    }
}

#[test]
fn many_deterministic_steps_reach_the_data_statistics() {
    // With many steps DDIM approaches the probability-flow ODE, which maps N(0, I) onto N(μ, σ²).
    let plan = ScalePlan::single(Size::new(512, 512)); // 16384 values
    let (mu, sigma) = (0.5, 0.2);
    let out = run(
        SchedulerKind::Ddim,
        &plan,
        500,
        &gaussian(mu, sigma),
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let (m, s) = stats(&out.latent);
    assert!((m - mu).abs() < 0.01, "mean {m}");
    assert!((s - sigma).abs() < 0.02 * sigma + 0.003, "std {s}");
    // ... and a denoiser for another distribution does not pass the same check.
    let out = run(
        SchedulerKind::Ddim,
        &plan,
        500,
        &gaussian(mu, 0.4),
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert!((stats(&out.latent).1 - sigma).abs() > 0.1);
}

#[test]
fn cascade_runs_stage_sizes_and_step_counts() {
    let plan = ScalePlan::new(Size::new(256, 256), Size::new(1024, 1024), 64).unwrap();
    assert_eq!(plan.len(), 3);
    let mut reports = Vec::new();
    let out = run(
        SchedulerKind::Ddim,
        &plan,
        50,
        &gaussian(0.3, 0.5),
        &mut |p| {
            reports.push(*p);
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert_eq!(out.stages.len(), 3);
    assert_eq!(out.stages[1].dims(), [1, 4, 64, 64]);
    assert_eq!(out.latent.dims(), [1, 4, 128, 128]);
    // 50 steps at the base stage, 35 (strength 0.7) at each later one; the first later step is t = 681.
    assert_eq!(reports.len(), 50 + 35 + 35);
    assert!(reports.iter().all(|p| p.total == 120));
    let first_stage1 = reports.iter().find(|p| p.stage == 1).unwrap();
    assert_eq!(
        (first_stage1.timestep, first_stage1.steps_in_stage),
        (681.0, 35)
    );
    let (m, s) = stats(&out.latent);
    assert!((m - 0.3).abs() < 0.05, "cascade mean {m}");
    assert!(s < 0.55 && s > 0.3, "cascade std {s}");
}

#[test]
fn cancellation_stops_with_its_position() {
    let plan = ScalePlan::new(Size::new(256, 256), Size::new(512, 512), 64).unwrap();
    let err = run(
        SchedulerKind::Ddim,
        &plan,
        10,
        &gaussian(0.0, 1.0),
        &mut |p| {
            if p.stage == 1 && p.step == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Cancelled { stage: 1, step: 1 }),
        "{err}"
    );
}

struct Broken;
impl<Bk: Backend> Denoiser<Bk, 4> for Broken {
    fn prediction_type(&self) -> PredictionType {
        PredictionType::Epsilon
    }
    fn predict(
        &self,
        latents: Tensor<Bk, 4>,
        ctx: &StepContext<Bk, 4>,
    ) -> selfcascade_core::Result<Tensor<Bk, 4>> {
        Ok(if ctx.step == 3 {
            latents.mul_scalar(f32::NAN)
        } else {
            latents.mul_scalar(0.0)
        })
    }
}

#[test]
fn non_finite_latents_stop_the_run_with_stage_and_step() {
    let plan = ScalePlan::single(Size::new(64, 64));
    let err = run(SchedulerKind::Ddim, &plan, 10, &Broken, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFinite {
                stage: 0,
                step: 3,
                ..
            }
        ),
        "{err}"
    );
}

/// Returns, per batch row r, the constant r + 10·(has pivot) + 100·(pivot batch == latents batch).
struct RowIndex;
impl<Bk: Backend> Denoiser<Bk, 4> for RowIndex {
    fn prediction_type(&self) -> PredictionType {
        PredictionType::Epsilon
    }
    fn predict(
        &self,
        latents: Tensor<Bk, 4>,
        ctx: &StepContext<Bk, 4>,
    ) -> selfcascade_core::Result<Tensor<Bk, 4>> {
        let [b, c, h, w] = latents.dims();
        let rows: Vec<Tensor<Bk, 4>> = (0..b)
            .map(|r| {
                let extra = match &ctx.pivot {
                    Some(p) if p.dims()[0] == b => 110.0,
                    Some(_) => 10.0,
                    None => 0.0,
                };
                Tensor::<Bk, 4>::ones([1, c, h, w], &latents.device()).mul_scalar(r as f64 + extra)
            })
            .collect();
        Ok(Tensor::cat(rows, 0))
    }
}

#[test]
fn guidance_combines_halves_and_repeats_the_pivot() {
    let cfg = ClassifierFreeGuidance::new(RowIndex, 7.5);
    let dev = Default::default();
    let x = Tensor::<B, 4>::zeros([1, 2, 2, 2], &dev);
    let ctx = StepContext {
        stage: 1,
        step: 0,
        steps_in_stage: 1,
        timestep: 1.0,
        image_size: (16, 16),
        pivot: Some(x.clone()),
    };
    // uncond row 0 → 110, cond row 1 → 111: 110 + 7.5·1 = 117.5
    let v = cfg
        .predict(x.clone(), &ctx)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert!(v.iter().all(|x| (*x - 117.5).abs() < 1e-5), "{v:?}");
    let ctx = StepContext { pivot: None, ..ctx };
    let v = cfg
        .predict(x, &ctx)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert!(v.iter().all(|x| (*x - 7.5).abs() < 1e-5), "{v:?}");
}

#[test]
fn injected_noise_replaces_the_rng_and_is_checked() {
    let plan = ScalePlan::single(Size::new(64, 64));
    let cfg = SchedulerConfig::from_json(SD).unwrap();
    let mut s = scheduler::build::<B, 4>(&cfg, Some(SchedulerKind::Ddim), 0.0).unwrap();
    let dev = Default::default();
    let mut sampler = SelfCascadeSampler {
        scheduler: s.as_mut(),
        pivot_upsampler: &Interpolation::Bicubic,
        config: SelfCascadeConfig {
            steps: 5,
            ..Default::default()
        },
    };
    let den = gaussian(0.0, 1.0);
    let z = Tensor::<B, 4>::ones([1, 4, 8, 8], &dev);
    // N(0, 1) data: the exact ODE is the identity map, so constant noise stays (almost) constant.
    let out = sampler
        .sample(
            &plan,
            &den,
            &mut InjectedNoise::new(vec![z], 0),
            &dev,
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap();
    // N(0, 1) data: every step maps constant noise to a constant.
    let (m, s) = stats(&out.latent);
    assert!(m > 0.5 && m < 1.01 && s < 1e-5, "{m} {s}");
    let wrong = Tensor::<B, 4>::ones([1, 4, 8, 9], &dev);
    let err = sampler
        .sample(
            &plan,
            &den,
            &mut InjectedNoise::new(vec![wrong], 0),
            &dev,
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("stage0"), "{err}");
}

/// The finiteness check works element-wise: half latents of a 1024² image (131,072 values near 1, whose
/// sum overflows f16) are finite; one NaN or infinity anywhere is not.
#[test]
fn all_finite_checks_elements_not_a_sum() {
    use burn::tensor::FloatDType;
    use selfcascade_core::sampler::all_finite;
    let dev = Default::default();
    for dtype in [FloatDType::F32, FloatDType::F16, FloatDType::BF16] {
        let x = Tensor::<burn::backend::Flex, 4>::ones([2, 4, 128, 128], &dev).cast(dtype);
        assert!(all_finite(&x), "{dtype:?}");
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let y = x.clone().slice_assign(
                [1..2, 3..4, 100..101, 7..8],
                Tensor::<burn::backend::Flex, 4>::full([1, 1, 1, 1], bad, &dev).cast(dtype),
            );
            assert!(!all_finite(&y), "{dtype:?} {bad}");
        }
    }
}

/// A video cascade (5-D latents `[B, C, T, h, w]`) is, for a denoiser that treats every frame alone,
/// the image cascade run on each frame: φ resizes frame by frame, the frame order and count stay.
#[test]
fn video_cascade_is_the_image_cascade_per_frame() {
    let plan = ScalePlan::new(Size::new(32, 32), Size::new(64, 64), 8).unwrap();
    let cfg = SchedulerConfig::from_json(SD).unwrap();
    let dev = Default::default();
    let den = gaussian(0.3, 0.8);
    let (frames, batch) = (3, 2);
    let noise = |hw: usize| -> Tensor<B, 5> {
        Tensor::random(
            [batch, 4, frames, hw, hw],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        )
    };
    let stages = vec![noise(4), noise(8)];
    let config = SelfCascadeConfig {
        steps: 4,
        keep_stages: true,
        batch,
        frames,
        ..Default::default()
    };
    let mut s = scheduler::build::<B, 5>(&cfg, Some(SchedulerKind::Ddim), 0.0).unwrap();
    let mut video = SelfCascadeSampler::<B, 5> {
        scheduler: s.as_mut(),
        pivot_upsampler: &Interpolation::Bicubic,
        config: config.clone(),
    };
    let out = video
        .sample(
            &plan,
            &den,
            &mut InjectedNoise::new(stages.clone(), 0),
            &dev,
            &mut |_| ControlFlow::Continue(()),
        )
        .unwrap();
    assert_eq!(out.latent.dims(), [batch, 4, frames, 8, 8]);
    assert_eq!(out.stages[0].dims(), [batch, 4, frames, 4, 4]);
    for f in 0..frames {
        let frame = |x: &Tensor<B, 5>| {
            let [b, c, _, h, w] = x.dims();
            x.clone().narrow(2, f, 1).reshape([b, c, h, w])
        };
        let mut s = scheduler::build::<B, 4>(&cfg, Some(SchedulerKind::Ddim), 0.0).unwrap();
        let mut image = SelfCascadeSampler::<B, 4> {
            scheduler: s.as_mut(),
            pivot_upsampler: &Interpolation::Bicubic,
            config: SelfCascadeConfig {
                frames: 1,
                ..config.clone()
            },
        };
        let one = image
            .sample(
                &plan,
                &den,
                &mut InjectedNoise::new(stages.iter().map(frame).collect(), 0),
                &dev,
                &mut |_| ControlFlow::Continue(()),
            )
            .unwrap();
        let diff = (frame(&out.latent) - one.latent).abs().max().into_scalar();
        assert!(diff < 1e-5, "frame {f}: {diff}");
    }
}

//! Per-stage cost of the self-cascade machinery itself (scheduler steps, pivot interpolation,
//! re-noising) with an analytic denoiser, so model time is excluded. Run: `cargo bench --bench sampler`.

use burn::backend::Flex;
use criterion::{criterion_group, criterion_main, Criterion};
use selfcascade::cascade::scheduler::{DdimScheduler, NoiseSchedule, SchedulerConfig};
use selfcascade::cascade::{GaussianDenoiser, PivotUpsampler};
use selfcascade::{
    Interpolation, ScalePlan, SeededNoise, SelfCascadeConfig, SelfCascadeSampler, Size,
};
use std::ops::ControlFlow;

const SD: &str = r#"{"_class_name":"DDIMScheduler","beta_schedule":"scaled_linear","beta_start":0.00085,"beta_end":0.012,
    "clip_sample":false,"set_alpha_to_one":false,"steps_offset":1}"#;

fn bench(c: &mut Criterion) {
    let cfg = SchedulerConfig::from_json(SD).expect("valid config");
    let dev = Default::default();
    let mut group = c.benchmark_group("self-cascade machinery");
    group.sample_size(10);
    for (name, target) in [
        ("512->1024 (SD 2.1, 4x)", 1024),
        ("512->2048 (SD 2.1, 16x)", 2048),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut s = DdimScheduler::new(cfg.clone(), 0.0).expect("scheduler");
                let den = GaussianDenoiser::new(0.0, 1.0, s.alphas_cumprod());
                let plan = ScalePlan::new(Size::new(512, 512), Size::new(target, target), 64)
                    .expect("plan");
                let mut sampler = SelfCascadeSampler::<Flex> {
                    scheduler: &mut s,
                    pivot_upsampler: &Interpolation::Bicubic,
                    config: SelfCascadeConfig {
                        steps: 50,
                        ..Default::default()
                    },
                };
                sampler
                    .sample::<GaussianDenoiser>(
                        &plan,
                        &den,
                        &mut SeededNoise::new(0),
                        &dev,
                        &mut |_| ControlFlow::Continue(()),
                    )
                    .expect("sampling")
            })
        });
    }
    group.bench_function("bicubic pivot 4x64x64 -> 4x128x128", |b| {
        let x = burn::tensor::Tensor::<Flex, 4>::ones([1, 4, 64, 64], &dev);
        b.iter(|| PivotUpsampler::<Flex>::upsample(&Interpolation::Bicubic, x.clone(), 128, 128))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

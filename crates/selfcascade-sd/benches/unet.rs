//! UNet hot paths at SD 2.1 base widths on the CPU backend: one ResNet block and one transformer of
//! the first level (320 channels, 64×64 latent = 4096 tokens), the Attn-SF/re-dilated variants, and
//! a whole UNet of SD 2.1's structure at reduced width (block_out_channels 40/80/160/160).
//! Random weights (`Weights::random`); run: `cargo bench -p selfcascade-sd --bench unet`.

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use selfcascade_sd::load::Weights;
use selfcascade_sd::unet::{
    ResnetBlock2D, Transformer2DModel, UNet2DConditionConfig, UNet2DConditionModel, UNetHooks,
};

type B = Flex;

const SMALL_SD21: &str = r#"{
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [40, 80, 160, 160], "cross_attention_dim": 64,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 2, "norm_num_groups": 8, "use_linear_projection": true, "upcast_attention": true
}"#;

fn bench(c: &mut Criterion) {
    let dev = Default::default();
    let weights = Weights::random(1);
    let vb = weights.root::<B>(&dev);
    let x = || Tensor::<B, 4>::random([1, 320, 64, 64], Distribution::Normal(0.0, 1.0), &dev);
    let temb = Tensor::<B, 2>::random([1, 1280], Distribution::Normal(0.0, 1.0), &dev);
    let text = Tensor::<B, 3>::random([1, 77, 1024], Distribution::Normal(0.0, 1.0), &dev);
    let none = UNetHooks::default();

    let mut group = c.benchmark_group("unet blocks, SD 2.1 level 0 (320 ch, 64x64)");
    group.sample_size(10);
    let resnet =
        ResnetBlock2D::new(&vb.pp("resnet"), 320, 320, 1280, 32, 1e-5, 1.0).expect("resnet");
    group.bench_function("ResnetBlock2D", |b| {
        b.iter(|| resnet.forward(x(), &temb, &none).expect("forward"))
    });
    let dilate = |_: &str| Some(2.0);
    let dilated = UNetHooks {
        dilation: Some(&dilate),
        ..Default::default()
    };
    group.bench_function("ResnetBlock2D, re-dilated x2", |b| {
        b.iter(|| resnet.forward(x(), &temb, &dilated).expect("forward"))
    });
    let transformer =
        Transformer2DModel::new(&vb.pp("attn"), 320, 5, 1, 1024, 32, true).expect("transformer");
    group.bench_function("Transformer2DModel (4096 tokens)", |b| {
        b.iter(|| transformer.forward(x(), &text, &none).expect("forward"))
    });
    group.finish();

    let config = UNet2DConditionConfig::from_json(SMALL_SD21).expect("config");
    let small = Weights::random(2);
    let unet = UNet2DConditionModel::<B>::new(&small.root(&dev), &config).expect("unet");
    let text = Tensor::<B, 3>::random([1, 77, 64], Distribution::Normal(0.0, 1.0), &dev);
    let mut group = c.benchmark_group("UNet, SD 2.1 structure at 1/8 width");
    group.sample_size(10);
    for side in [32, 64] {
        let sample =
            Tensor::<B, 4>::random([1, 4, side, side], Distribution::Normal(0.0, 1.0), &dev);
        group.bench_function(format!("{side}x{side} latent"), |b| {
            b.iter(|| {
                unet.forward(sample.clone(), &[981.0], text.clone(), None, &none)
                    .expect("forward")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

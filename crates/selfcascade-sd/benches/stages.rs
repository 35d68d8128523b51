//! Per-stage cost of SD 2.1 base on the CPU backend, full size, random weights: text encoding (OpenCLIP
//! ViT-H text tower), one UNet step at a 64×64 latent (512²) and, with `SELFCASCADE_BENCH_LARGE=1`, at
//! 128×128 (1024²), and the VAE decode of a 512² image.
//!
//! `cargo bench -p selfcascade-sd --bench stages` (slow: each UNet step takes seconds).

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use selfcascade_sd::clip::config::CLIPTextConfig;
use selfcascade_sd::clip::text_model::CLIPTextModel;
use selfcascade_sd::load::Weights;
use selfcascade_sd::unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetHooks};
use selfcascade_sd::vae::{config::AutoencoderKLConfig, AutoencoderKL};

type B = Flex;

const UNET: &str = r#"{"attention_head_dim": [5, 10, 20, 20], "block_out_channels": [320, 640, 1280, 1280],
  "cross_attention_dim": 1024, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 64, "use_linear_projection": true}"#;

const TEXT: &str = r#"{"hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096, "num_attention_heads": 16,
  "num_hidden_layers": 23, "projection_dim": 512, "vocab_size": 49408, "max_position_embeddings": 77,
  "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "layer_norm_eps": 1e-05}"#;

const VAE: &str = r#"{"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D",
  "DownEncoderBlock2D", "DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D",
  "UpDecoderBlock2D"], "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "sample_size": 768}"#;

fn bench(c: &mut Criterion) {
    let dev = Default::default();
    let mut group = c.benchmark_group("SD 2.1 base stages (CPU, f32, random weights)");
    group.sample_size(10);

    let text_cfg = CLIPTextConfig::from_json(TEXT, "bench").expect("text config");
    let te = CLIPTextModel::<B>::new(&Weights::random(1).root::<B>(&dev), &text_cfg)
        .expect("text encoder");
    let ids: Vec<Vec<u32>> = vec![(0..77).map(|i| (i * 37 % 49000) as u32).collect(); 2];
    group.bench_function("text encoder, prompt + negative (2×77 tokens)", |b| {
        b.iter(|| te.forward(&ids).expect("encode"))
    });
    drop(te);

    let unet_cfg = UNet2DConditionConfig::from_json(UNET).expect("unet config");
    let unet = UNet2DConditionModel::<B>::new(&Weights::random(2).root::<B>(&dev), &unet_cfg)
        .expect("unet");
    let none = UNetHooks::default();
    let mut sides = vec![64];
    if std::env::var_os("SELFCASCADE_BENCH_LARGE").is_some() {
        sides.push(128);
    }
    for side in sides {
        let x = Tensor::<B, 4>::random([1, 4, side, side], Distribution::Normal(0.0, 1.0), &dev);
        let ctx = Tensor::<B, 3>::random([1, 77, 1024], Distribution::Normal(0.0, 1.0), &dev);
        group.bench_function(format!("UNet step, batch 1, {side}x{side} latent"), |b| {
            b.iter(|| {
                unet.forward(x.clone(), &[500.0], ctx.clone(), None, &none)
                    .expect("forward")
                    .into_data()
            })
        });
    }
    drop(unet);

    let vae_cfg = AutoencoderKLConfig::from_json(VAE, "bench").expect("vae config");
    let vae = AutoencoderKL::<B>::new(&Weights::random(3).root::<B>(&dev), &vae_cfg).expect("vae");
    let z = Tensor::<B, 4>::random([1, 4, 64, 64], Distribution::Normal(0.0, 1.0), &dev);
    group.bench_function("VAE decode 512x512", |b| {
        b.iter(|| vae.decode(z.clone()).expect("decode").into_data())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

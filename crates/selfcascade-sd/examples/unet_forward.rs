//! Times one forward pass of the full-size SD 2.1 base UNet (865.9M parameters, random weights) on the
//! CPU backend. Used by `tools/bench/unet_vs_torch.py`, which times PyTorch on the same machine in the
//! same run and prints the ratio.
//!
//! `cargo run --release -p selfcascade-sd --example unet_forward -- [LATENT_SIDE] [BATCH] [REPEATS]`

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use selfcascade_sd::load::Weights;
use selfcascade_sd::unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetHooks};
use std::time::Instant;

/// The `unet/config.json` of stabilityai/stable-diffusion-2-1-base.
pub const SD21_BASE_UNET: &str = r#"{
  "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
  "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": false, "cross_attention_dim": 1024,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1, "dual_cross_attention": false, "flip_sin_to_cos": true, "freq_shift": 0,
  "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
  "num_class_embeds": null, "only_cross_attention": false, "out_channels": 4, "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
  "use_linear_projection": true, "upcast_attention": false
}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let side = args.first().copied().unwrap_or(64);
    let batch = args.get(1).copied().unwrap_or(1);
    let repeats = args.get(2).copied().unwrap_or(1);
    let dev = Default::default();
    let config = UNet2DConditionConfig::from_json(SD21_BASE_UNET)?;
    let t0 = Instant::now();
    let unet = UNet2DConditionModel::<Flex>::new(&Weights::random(0).root::<Flex>(&dev), &config)?;
    let init = t0.elapsed().as_secs_f64();
    let sample =
        Tensor::<Flex, 4>::random([batch, 4, side, side], Distribution::Normal(0.0, 1.0), &dev);
    let context =
        Tensor::<Flex, 3>::random([batch, 77, 1024], Distribution::Normal(0.0, 1.0), &dev);
    let mut times = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let out = unet.forward(
            sample.clone(),
            &[500.0],
            context.clone(),
            None,
            &UNetHooks::default(),
        )?;
        let _ = out.into_data();
        times.push(t.elapsed().as_secs_f64());
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    println!("{{\"side\":{side},\"batch\":{batch},\"init_s\":{init:.3},\"forward_s\":{best:.3},\"all_s\":{times:?}}}");
    Ok(())
}

//! One step of the paper's video UNet (LVDM's `lvdm_short`, random weights) on the CPU: its peak resident
//! memory and time for a classifier-free-guidance batch of 2, printed as one JSON line. The LVDM side of
//! the memory budget (one step at 16 × 512² within this machine's 24 GB); no pip package
//! implements LVDM, so unlike `tools/bench/video_unet_step.py` (ModelScope) there is no PyTorch run here.
//!
//! `cargo run --release -p selfcascade-sd --example lvdm_step -- [FRAMES] [SIDE_PX] [BATCH]`

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use selfcascade_sd::load::Weights;
use selfcascade_sd::lvdm::{LvdmConfig, LvdmUNet};
use selfcascade_sd::unet::UNetHooks;
use std::time::Instant;

/// Peak resident memory of this process (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let frames = args.first().copied().unwrap_or(16);
    let side = args.get(1).copied().unwrap_or(512) / 8;
    let batch = args.get(2).copied().unwrap_or(2);
    let dev = Default::default();
    let config = LvdmConfig::lvdm_short();
    let t0 = Instant::now();
    let weights = Weights::random(0);
    let unet = LvdmUNet::<Flex>::new(&weights.root(&dev), &config)?;
    let init = t0.elapsed().as_secs_f64();
    let after_init = peak_rss().unwrap_or(0);
    let x = Tensor::<Flex, 5>::random(
        [batch, config.in_channels, frames, side, side],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let context = Tensor::<Flex, 3>::random(
        [batch, 77, config.context_dim],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let t = Instant::now();
    let out = unet.forward(x, &[981.0], context, &UNetHooks::default())?;
    let finite = out.is_finite().all().into_scalar();
    let forward = t.elapsed().as_secs_f64();
    let gb = |b: u64| b as f64 / 1e9;
    println!(
        "{{\"model\":\"lvdm_short\",\"frames\":{frames},\"latent\":{side},\"batch\":{batch},\
         \"init_s\":{init:.1},\"forward_s\":{forward:.1},\"peak_rss_after_init_gb\":{:.2},\
         \"peak_rss_gb\":{:.2},\"finite\":{finite}}}",
        gb(after_init),
        gb(peak_rss().unwrap_or(0))
    );
    Ok(())
}

//! Times forward passes of the full-size SD 2.1 base UNet (865.9M parameters) on a chosen backend, and
//! optionally checks one against a reference output. Used by `tools/bench/unet_vs_torch.py` (CPU) and
//! `tools/bench/gpu_vs_torch.py` (GPU), which time PyTorch in the same run and print the ratios.
//!
//! ```text
//! cargo run --release -p selfcascade-sd --example unet_forward -- [SIDES] [BATCH] [REPEATS]
//!     [--device cpu|cuda] [--dtype f32|f16|bf16] [--unet DIR] [--io FILE.safetensors]
//! ```
//! SIDES are latent sides, comma-separated (default 64); each is timed (best of REPEATS) on random input
//! and printed as a JSON line. Without `--unet` the weights are random (seeded). `--io` first runs the
//! file's `sample`, `timestep` and `encoder_hidden_states` through the UNet and prints the relative L2
//! error against its `out`. CUDA needs a build with `--features cuda`.

use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use selfcascade_sd::load::{TensorStore, Weights};
use selfcascade_sd::unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetHooks};
use std::path::PathBuf;
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

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    sides: Vec<usize>,
    batch: usize,
    repeats: usize,
    device: String,
    dtype: String,
    unet: Option<PathBuf>,
    io: Option<PathBuf>,
}

fn parse() -> Res<Args> {
    let mut a = Args {
        sides: vec![64],
        batch: 1,
        repeats: 1,
        device: "cpu".into(),
        dtype: "f32".into(),
        unet: None,
        io: None,
    };
    let mut positional = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--device" => a.device = value()?,
            "--dtype" => a.dtype = value()?,
            "--unet" => a.unet = Some(value()?.into()),
            "--io" => a.io = Some(value()?.into()),
            _ => positional.push(arg),
        }
    }
    if let Some(v) = positional.first() {
        a.sides = v.split(',').map(str::parse).collect::<Result<_, _>>()?;
    }
    if let Some(v) = positional.get(1) {
        a.batch = v.parse()?;
    }
    if let Some(v) = positional.get(2) {
        a.repeats = v.parse::<usize>()?.max(1);
    }
    Ok(a)
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    (num / den.max(1e-30)).sqrt()
}

/// Runs `repeats` forward passes; returns the output of the last (as f32) and the times.
fn time_forward<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    sample: Tensor<B, 4>,
    timestep: f64,
    context: Tensor<B, 3>,
    repeats: usize,
) -> Res<(Vec<f32>, Vec<f64>)> {
    let batch = sample.dims()[0];
    let mut times = Vec::new();
    let mut last = Vec::new();
    for _ in 0..repeats {
        let t = Instant::now();
        let out = unet.forward(
            sample.clone(),
            &vec![timestep; batch],
            context.clone(),
            None,
            &UNetHooks::default(),
        )?;
        let data = out.into_data().convert::<f32>();
        times.push(t.elapsed().as_secs_f64());
        last = data.to_vec::<f32>().map_err(|e| format!("{e:?}"))?;
    }
    Ok((last, times))
}

fn report(a: &Args, what: &str, dims: [usize; 4], init: f64, times: &[f64], err: Option<f64>) {
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    let err = err.map_or("null".to_string(), |e| format!("{e:.3e}"));
    println!(
        "{{\"run\":\"{what}\",\"device\":\"{}\",\"dtype\":\"{}\",\"side\":{},\"batch\":{},\"init_s\":{init:.3},\
         \"first_s\":{:.4},\"forward_s\":{best:.4},\"rel_l2\":{err},\"all_s\":{times:?}}}",
        a.device, a.dtype, dims[2], dims[0], times[0]
    );
}

fn run<B: Backend>(a: &Args) -> Res<()> {
    let dev = B::Device::default();
    let t0 = Instant::now();
    let unet = match &a.unet {
        Some(dir) => UNet2DConditionModel::<B>::load(dir, None, &dev)?,
        None => UNet2DConditionModel::<B>::new(
            &Weights::random(0).root::<B>(&dev),
            &UNet2DConditionConfig::from_json(SD21_BASE_UNET)?,
        )?,
    };
    let init = t0.elapsed().as_secs_f64();
    if let Some(path) = &a.io {
        let io = TensorStore::open(std::slice::from_ref(path))?;
        let (s, c) = (io.read("sample")?, io.read("encoder_hidden_states")?);
        let dims = [s.shape[0], s.shape[1], s.shape[2], s.shape[3]];
        let sample = Tensor::<B, 4>::from_data(TensorData::new(s.data, dims), &dev);
        let context = Tensor::<B, 3>::from_data(
            TensorData::new(c.data, [c.shape[0], c.shape[1], c.shape[2]]),
            &dev,
        );
        let timestep = io.read("timestep")?.data[0] as f64;
        let (out, times) = time_forward(&unet, sample, timestep, context, a.repeats)?;
        let err = rel_l2(&out, &io.read("out")?.data);
        report(a, "parity", dims, init, &times, Some(err));
    }
    for &side in &a.sides {
        let dims = [a.batch, 4, side, side];
        let sample = Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, 1.0), &dev);
        let context =
            Tensor::<B, 3>::random([a.batch, 77, 1024], Distribution::Normal(0.0, 1.0), &dev);
        let (_, times) = time_forward(&unet, sample, 500.0, context, a.repeats)?;
        report(a, "time", dims, init, &times, None);
    }
    Ok(())
}

fn main() -> Res<()> {
    let a = parse()?;
    match (a.device.as_str(), a.dtype.as_str()) {
        ("cpu", "f32") => run::<burn::backend::Flex>(&a),
        #[cfg(feature = "cuda")]
        ("cuda", "f32") => run::<burn::backend::Cuda<f32>>(&a),
        #[cfg(feature = "cuda")]
        ("cuda", "f16") => run::<burn::backend::Cuda<half::f16>>(&a),
        #[cfg(feature = "cuda")]
        ("cuda", "bf16") => run::<burn::backend::Cuda<half::bf16>>(&a),
        (d, t) => Err(format!(
            "unsupported --device {d} --dtype {t} (cpu: f32; cuda: f32, f16, bf16 with --features cuda)"
        )
        .into()),
    }
}

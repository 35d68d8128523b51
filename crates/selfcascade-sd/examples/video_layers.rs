//! Time of the video UNet's layers at ModelScope's first level for a 16 × 512² video with CFG
//! (`[32, 320, 64, 64]` frames-folded activations), next to a spatial ResNet and transformer of the same
//! level, so that the temporal layers' share of a step is visible:
//!
//! `cargo run --release -p selfcascade-sd --example video_layers -- [FRAMES] [SIDE] [CHANNELS]`

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use selfcascade_sd::load::Weights;
use selfcascade_sd::unet::{
    ResnetBlock2D, TemporalConvLayer, Transformer2DModel, TransformerTemporalModel, UNetHooks,
};
use std::time::Instant;

type B = Flex;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let frames = args.first().copied().unwrap_or(16);
    let side = args.get(1).copied().unwrap_or(64);
    let c = args.get(2).copied().unwrap_or(320);
    let dev = Default::default();
    let weights = Weights::random(1);
    let vb = weights.root::<B>(&dev);
    let n = 2 * frames;
    let x = Tensor::<B, 4>::random([n, c, side, side], Distribution::Normal(0.0, 1.0), &dev);
    let temb = Tensor::<B, 2>::random([n, 4 * c], Distribution::Normal(0.0, 1.0), &dev);
    let text = Tensor::<B, 3>::random([n, 77, 1024], Distribution::Normal(0.0, 1.0), &dev);
    let hooks = UNetHooks::default();
    let heads = c / 64;
    let conv = TemporalConvLayer::new(&vb.pp("tc"), c, 32)?;
    let tattn = TransformerTemporalModel::new(&vb.pp("ta"), c, heads, 64, 32)?;
    let resnet = ResnetBlock2D::new(&vb.pp("r"), c, c, 4 * c, 32, 1e-5, 1.0)?;
    let sattn = Transformer2DModel::new(&vb.pp("sa"), c, heads, 1, 1024, 32, true)?;
    let time = |name: &str, f: &dyn Fn() -> Tensor<B, 4>| {
        let _ = f().into_data(); // warm-up
        let t = Instant::now();
        let y = f();
        let _ = y.into_data();
        println!("{name:>26}: {:8.3} s", t.elapsed().as_secs_f64());
    };
    println!("[{n}, {c}, {side}, {side}] ({frames} frames × batch 2)");
    time("TemporalConvLayer", &|| {
        conv.forward(x.clone(), frames).unwrap()
    });
    let v = Tensor::<B, 4>::random(
        [2, c, frames, side * side],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let stage = &conv.conv1;
    time("  one temporal conv", &|| stage.conv.forward(v.clone()));
    time("  same, burn's conv2d (3×1)", &|| {
        burn::tensor::module::conv2d(
            v.clone(),
            stage.conv.weight.val(),
            Some(stage.conv.bias.val()),
            burn::tensor::ops::ConvOptions::new([1, 1], [1, 0], [1, 1], 1),
        )
    });
    time("  one GroupNorm+SiLU (video)", &|| {
        stage.norm.forward_silu(v.clone())
    });
    let q = Tensor::<B, 4>::random(
        [2 * side * side, heads, frames, 64],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    time("  temporal attention core", &|| {
        selfcascade_sd::nn::kernels::attention(q.clone(), q.clone(), q.clone(), 0.125, false)
    });
    time("  same, matmul + softmax", &|| {
        let a = burn::tensor::activation::softmax(
            q.clone()
                .matmul(q.clone().swap_dims(2, 3))
                .mul_scalar(0.125),
            3,
        );
        a.matmul(q.clone())
    });
    time("TransformerTemporalModel", &|| {
        tattn.forward(x.clone(), frames).unwrap()
    });
    time("ResnetBlock2D", &|| {
        resnet.forward(x.clone(), &temb, &hooks).unwrap()
    });
    time("Transformer2DModel", &|| {
        sattn.forward(x.clone(), &text, &hooks).unwrap()
    });
    Ok(())
}

//! Times one 2-D convolution on the CPU: the owned kernel (`nn::cpu::conv2d`, what the models use on
//! burn-flex) against burn's `conv2d` op, best of REPEATS, as one JSON line (padding keeps the size:
//! dilation·(K − 1)/2). `tools/bench/conv_vs_torch.py` adds PyTorch's `conv2d` in the same run.
//!
//! `cargo run --release -p selfcascade-sd --example conv_speed -- IN OUT SIDE [K] [STRIDE] [DILATION] [BATCH] [REPEATS]`

use burn::backend::Flex;
use burn::tensor::module::conv2d as burn_conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};
use selfcascade_sd::nn::cpu;
#[path = "common/timing.rs"]
mod timing;
use timing::{best, NumericArgs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = NumericArgs::parse()?;
    let arg = |i, default| args.arg(i, default);
    let (c_in, c_out, side) = (arg(0, 320), arg(1, 320), arg(2, 64));
    let (k, stride, dilation) = (arg(3, 3), arg(4, 1), arg(5, 1));
    let (batch, repeats) = (arg(6, 1), arg(7, 3));
    let padding = dilation * (k - 1) / 2;
    let dev = Default::default();
    let x = Tensor::<Flex, 4>::random(
        [batch, c_in, side, side],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let w = Tensor::<Flex, 4>::random([c_out, c_in, k, k], Distribution::Normal(0.0, 0.05), &dev);
    let b = Tensor::<Flex, 1>::random([c_out], Distribution::Normal(0.0, 1.0), &dev);
    let owned = best(repeats, || {
        let out = cpu::conv2d(&x, &w, Some(&b), stride, padding, dilation).expect("flex f32");
        let _ = out.into_data();
    });
    let options = ConvOptions::new([stride; 2], [padding; 2], [dilation; 2], 1);
    let burn = best(repeats, || {
        let out = burn_conv2d(x.clone(), w.clone(), Some(b.clone()), options.clone());
        let _ = out.into_data();
    });
    println!(
        "{{\"in\":{c_in},\"out\":{c_out},\"side\":{side},\"k\":{k},\"stride\":{stride},\"dilation\":{dilation},\"batch\":{batch},\"owned_s\":{owned:.5},\"burn_s\":{burn:.5},\"threads\":{}}}",
        rayon::current_num_threads()
    );
    Ok(())
}

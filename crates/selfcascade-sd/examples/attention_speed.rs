//! Times self-attention on the CPU: the owned kernel (`nn::cpu::attention`, what the models use on
//! burn-flex) against burn's fused `attention` op, best of REPEATS, as one JSON line.
//! `tools/bench/attention_vs_torch.py` adds PyTorch's `scaled_dot_product_attention` in the same run.
//!
//! `cargo run --release -p selfcascade-sd --example attention_speed -- [TOKENS] [HEADS] [HEAD_DIM] [REPEATS]`

use burn::backend::Flex;
use burn::tensor::module::attention as burn_attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Distribution, Tensor};
use selfcascade_sd::nn::cpu;
#[path = "common/timing.rs"]
mod timing;
use timing::{best, NumericArgs};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = NumericArgs::parse()?;
    let (tokens, heads) = (args.arg(0, 4096), args.arg(1, 5));
    let (head_dim, repeats) = (args.arg(2, 64), args.arg(3, 3));
    let dev = Default::default();
    let shape = [1, heads, tokens, head_dim];
    let [q, k, v] =
        [0; 3].map(|_| Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &dev));
    let scale = 1.0 / (head_dim as f64).sqrt();
    let owned = best(repeats, || {
        let out = cpu::attention(&q, &k, &v, scale, false).expect("flex f32");
        let _ = out.into_data();
    });
    let options = AttentionModuleOptions {
        scale: Some(scale),
        softcap: None,
        is_causal: false,
    };
    let burn = best(repeats, || {
        let out = burn_attention(q.clone(), k.clone(), v.clone(), None, None, options);
        let _ = out.into_data();
    });
    println!(
        "{{\"tokens\":{tokens},\"heads\":{heads},\"head_dim\":{head_dim},\"owned_s\":{owned:.4},\"burn_s\":{burn:.4},\"threads\":{}}}",
        rayon::current_num_threads()
    );
    Ok(())
}

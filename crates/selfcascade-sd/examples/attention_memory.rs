//! Self-attention over the token count of SD 2.1's first level at a 256×256 latent (2048² image):
//! 65,536 queries and keys. A plain implementation would hold a 65,536² score matrix (17 GB in f32 per
//! head); `nn::kernels::attention` processes queries in chunks so at most
//! `ATTENTION_SCORE_BUDGET` scores exist at once. Run under `/usr/bin/time -v` to see the peak memory:
//!
//! `cargo run --release -p selfcascade-sd --example attention_memory -- [TOKENS] [HEADS] [HEAD_DIM]`

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use selfcascade_sd::nn::kernels::{attention, ATTENTION_SCORE_BUDGET};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let tokens = args.first().copied().unwrap_or(65536);
    let heads = args.get(1).copied().unwrap_or(1);
    let head_dim = args.get(2).copied().unwrap_or(8);
    let dev = Default::default();
    let q = Tensor::<Flex, 4>::random(
        [1, heads, tokens, head_dim],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let k = Tensor::<Flex, 4>::random(
        [1, heads, tokens, head_dim],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let v = Tensor::<Flex, 4>::random(
        [1, heads, tokens, head_dim],
        Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let t = Instant::now();
    let out = attention(q, k, v, 1.0 / (head_dim as f64).sqrt(), false);
    let sum: f32 = out.sum().into_scalar();
    let full_gb = (heads * tokens * tokens * 4) as f64 / 1e9;
    println!(
        "{{\"tokens\":{tokens},\"heads\":{heads},\"head_dim\":{head_dim},\"seconds\":{:.2},\"checksum\":{sum},\"full_score_matrix_gb\":{full_gb:.1},\"score_budget_gb\":{:.2}}}",
        t.elapsed().as_secs_f64(),
        (ATTENTION_SCORE_BUDGET * 4) as f64 / 1e9
    );
    Ok(())
}

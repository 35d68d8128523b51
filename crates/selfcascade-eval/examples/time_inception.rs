//! Seconds per image of the FID Inception's features on the CPU (burn-flex, float32), random weights
//! and inputs: `cargo run --release -p selfcascade-eval --example time_inception [-- BATCH ROUNDS]`.
//! `tools/oracle/time_inception.py` times pytorch-fid's network on the same shapes.

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use selfcascade_eval::inception::InceptionV3;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let batch = args.next().flatten().unwrap_or(8);
    let rounds = args.next().flatten().unwrap_or(3);
    let device = Default::default();
    let net = InceptionV3::<Flex>::random(0, &device).expect("random weights");
    let x = Tensor::<Flex, 4>::random(
        [batch, 3, 299, 299],
        Distribution::Uniform(0.0, 255.0),
        &device,
    );
    let _ = net.features(x.clone()).expect("warm-up").into_data();
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let t = Instant::now();
        let _ = net.features(x.clone()).expect("features").into_data();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "burn-flex: {:.4} s/image (batch {batch}, best of {rounds})",
        best / batch as f64
    );
}

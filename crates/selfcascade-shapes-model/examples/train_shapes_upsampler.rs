//! Trains the tuned self-cascade's light feature upsampler for the embedded shapes model on the CPU
//! (Algorithm 1: the model frozen, only Φ learns; 32² pivots → 64² targets).
//!
//! ```text
//! cargo run --release -p selfcascade-shapes-model --example train_shapes_upsampler -- \
//!     --out runs/shapes-tuned [--steps 400] [--batch 8] [--lr 1e-3] [--examples 512] [--seed 0] \
//!     [--checkpoint-every 100] [--resume]
//! ```
//! Writes `upsampler.safetensors`, `loss.csv` and `checkpoints/` to `--out`.

use burn::backend::{Autodiff, Flex};
use selfcascade_sd::train::{RunDir, UpsamplerTrainConfig};
use selfcascade_shapes_model::{default_model, tuned::train_light_upsampler};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut config = UpsamplerTrainConfig {
        steps: 400,
        batch_size: 8,
        learning_rate: 1e-3,
        checkpoint_every: 100,
        ..Default::default()
    };
    let (mut examples, mut out, mut resume) = (512usize, None, false);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--resume" {
            resume = true;
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--steps" => config.steps = value.parse().map_err(|e| bad(&e))?,
            "--batch" => config.batch_size = value.parse().map_err(|e| bad(&e))?,
            "--lr" => config.learning_rate = value.parse().map_err(|e| bad(&e))?,
            "--seed" => config.seed = value.parse().map_err(|e| bad(&e))?,
            "--examples" => examples = value.parse().map_err(|e| bad(&e))?,
            "--checkpoint-every" => config.checkpoint_every = value.parse().map_err(|e| bad(&e))?,
            "--out" => out = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let out = out.ok_or("--out DIR is required")?;
    let (model, _) = default_model::<Flex>(&Default::default()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let (up, reports) = train_light_upsampler::<Autodiff<Flex>>(
        &model,
        config,
        examples,
        0,
        &RunDir::new(&out),
        resume,
        &mut |r| {
            if r.step % 10 == 0 {
                eprintln!(
                    "step {:>5}  loss {:.5}  {:.1} s",
                    r.step,
                    r.loss,
                    start.elapsed().as_secs_f64()
                );
            }
        },
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "{} steps in {:.0} s; {} trainable parameters; weights in {}",
        reports.len(),
        start.elapsed().as_secs_f64(),
        up.config().num_params(),
        out.join("upsampler.safetensors").display()
    );
    Ok(())
}

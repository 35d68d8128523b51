//! Trains the shapes-world classifier whose features score FID/KID in `shapes eval` (the embedded
//! `assets/shapes-classifier.safetensors`), on the CPU:
//!
//! ```text
//! cargo run --release -p selfcascade-shapes-model --example train_shapes_classifier -- \
//!     --out crates/selfcascade-shapes-model/assets/shapes-classifier.safetensors [--steps 1500] [--seed 0]
//! ```
//! Prints the loss and batch accuracy every 50 steps, then the accuracy on fresh renders at 32², 64² and
//! 128².

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use selfcascade_shapes_model::classifier::{
    classifier_accuracy, train_classifier, ClassifierTrainConfig,
};
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
    let mut config = ClassifierTrainConfig::default();
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--steps" => config.steps = value.parse().map_err(|e| bad(&e))?,
            "--seed" => config.seed = value.parse().map_err(|e| bad(&e))?,
            "--out" => out = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let out = out.ok_or("--out FILE is required")?;
    let device = Default::default();
    let start = Instant::now();
    let model = train_classifier::<Autodiff<Flex>>(&config, &device, &mut |step, loss, acc| {
        if step % 50 == 0 {
            println!(
                "step {step:5}  loss {loss:.4}  batch accuracy {:.0}%",
                acc * 100.0
            );
        }
    })
    .map_err(|e| e.to_string())?;
    let model = model.valid();
    for side in [32, 64, 128] {
        let acc = classifier_accuracy(&model, side, 450, &device).map_err(|e| e.to_string())?;
        println!(
            "accuracy on 450 fresh renders at {side}²: {:.1}%",
            acc * 100.0
        );
    }
    model.save(&out).map_err(|e| e.to_string())?;
    println!(
        "{} steps in {:.0} s; weights in {}",
        config.steps,
        start.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

//! The paper's LoRA fine-tuning baseline on the shapes world: rank-r adapters on every attention
//! projection of the frozen embedded model, trained on scenes rendered at a higher resolution, on the
//! CPU (`Autodiff<Flex>`). The adapters are merged into the weights when saved.
//!
//! ```text
//! cargo run --release -p selfcascade-shapes-model --example lora_shapes -- \
//!     --out runs/shapes-lora64 [--size 64] [--rank 4] [--steps 400] [--batch 8] [--lr 1e-3] [--seed 0]
//! ```
//! Writes `model.safetensors` (EMA weights, adapters merged; metadata `trainable_parameters`);
//! `selfcascade shapes eval --fine-tuned runs/shapes-lora64/model.safetensors:4:lora-r4` adds its row.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use selfcascade_shapes_model::{default_model, save_checkpoint, ShapesModel, TrainConfig, Trainer};
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
    let mut config = TrainConfig {
        steps: 400,
        batch_size: 8,
        learning_rate: 1e-3,
        warmup_steps: 0,
        ema_decay: 0.99,
        image_size: Some(64),
        ..Default::default()
    };
    let (mut out, mut rank) = (None, 4usize);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--size" => config.image_size = Some(value.parse().map_err(|e| bad(&e))?),
            "--rank" => rank = value.parse().map_err(|e| bad(&e))?,
            "--steps" => config.steps = value.parse().map_err(|e| bad(&e))?,
            "--batch" => config.batch_size = value.parse().map_err(|e| bad(&e))?,
            "--lr" => config.learning_rate = value.parse().map_err(|e| bad(&e))?,
            "--seed" => config.seed = value.parse().map_err(|e| bad(&e))?,
            "--out" => out = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let out = out.ok_or("--out DIR is required")?;
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let device = Default::default();
    let (model, _) = default_model::<Flex>(&device).map_err(|e| e.to_string())?;
    // Freeze everything, then add the adapters: only they require gradients.
    let mut model = ShapesModel::<Autodiff<Flex>>::from_inner(model).no_grad();
    model.unet = model.unet.with_lora(rank, rank as f64, config.seed);
    let trainable = model.unet.lora_params();
    let mut trainer = Trainer::from_model(model, config, &device).map_err(|e| e.to_string())?;
    let start = Instant::now();
    while trainer.step_count() < trainer.config().steps {
        let rec = trainer.step().map_err(|e| e.to_string())?;
        if rec.step % 10 == 0 {
            eprintln!(
                "step {:>5}  loss {:.5}  {:.1} s",
                rec.step,
                rec.loss,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let mut merged = trainer.ema().clone();
    merged.unet = merged.unet.merge_lora();
    let extra = [
        ("trainable_parameters", trainable.to_string()),
        ("lora_rank", rank.to_string()),
    ];
    save_checkpoint(
        &out.join("model.safetensors"),
        &merged,
        trainer.step_count(),
        &extra,
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "{} steps in {:.0} s; {trainable} trainable parameters (rank {rank}); weights in {}",
        trainer.step_count(),
        start.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

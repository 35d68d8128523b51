//! The paper's full fine-tuning baseline on the shapes world: every parameter of the embedded model
//! trained further on scenes rendered at a higher resolution, on the CPU (`Autodiff<Flex>`).
//!
//! ```text
//! cargo run --release -p selfcascade-shapes-model --example finetune_shapes -- \
//!     --out runs/shapes-ft64 [--size 64] [--steps 400] [--batch 8] [--lr 1e-4] [--ema 0.99] [--seed 0]
//! ```
//! Writes `model.safetensors` (EMA weights) and `model-raw.safetensors`; `selfcascade shapes eval
//! --fine-tuned runs/shapes-ft64/model.safetensors:4` adds its row (direct sampling at 64², 4× pixels).

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::tensor::{backend::AutodiffBackend, Tensor};
use selfcascade_shapes_model::{default_model, ShapesModel, TrainConfig, Trainer};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Marks every float parameter as trainable.
struct RequireGrad;

impl<B: AutodiffBackend> ModuleMapper<B> for RequireGrad {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

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
        learning_rate: 1e-4,
        warmup_steps: 0,
        ema_decay: 0.99,
        image_size: Some(64),
        ..Default::default()
    };
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--size" => config.image_size = Some(value.parse().map_err(|e| bad(&e))?),
            "--steps" => config.steps = value.parse().map_err(|e| bad(&e))?,
            "--batch" => config.batch_size = value.parse().map_err(|e| bad(&e))?,
            "--lr" => config.learning_rate = value.parse().map_err(|e| bad(&e))?,
            "--ema" => config.ema_decay = value.parse().map_err(|e| bad(&e))?,
            "--seed" => config.seed = value.parse().map_err(|e| bad(&e))?,
            "--out" => out = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let out = out.ok_or("--out DIR is required")?;
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let device = Default::default();
    let (model, _) = default_model::<Flex>(&device).map_err(|e| e.to_string())?;
    // Parameters loaded on the inner backend carry `require_grad = false`, which `from_inner` keeps:
    // switch every one on, or nothing would train.
    let model = ShapesModel::<Autodiff<Flex>>::from_inner(model).map(&mut RequireGrad);
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
    trainer
        .save(&out.join("model.safetensors"), true)
        .and_then(|()| trainer.save(&out.join("model-raw.safetensors"), false))
        .map_err(|e| e.to_string())?;
    eprintln!(
        "{} steps in {:.0} s; {} trainable parameters; weights in {}",
        trainer.step_count(),
        start.elapsed().as_secs_f64(),
        trainer.model().num_params(),
        out.display()
    );
    Ok(())
}

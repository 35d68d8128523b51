//! The paper's fine-tuning baselines on the shapes world, on the CPU (`Autodiff<Flex>`): the embedded
//! model trained further on scenes rendered at a higher resolution — every parameter (full fine-tuning),
//! or, with `--lora-rank R`, only rank-R adapters (α = R) on every attention projection of the frozen
//! model, merged into the weights when saved.
//!
//! ```text
//! cargo run --release -p selfcascade-shapes-model --example finetune_shapes -- \
//!     --out runs/shapes-ft64 [--size 64] [--steps 400] [--batch 8] [--lr 1e-4] [--ema 0.99] [--seed 0]
//! cargo run --release -p selfcascade-shapes-model --example finetune_shapes -- \
//!     --out runs/shapes-lora64 --lora-rank 4 --lr 1e-3
//! ```
//! Writes `model.safetensors` (EMA weights; metadata `trainable_parameters`). `selfcascade shapes eval
//! --fine-tuned runs/shapes-ft64/model.safetensors:4` adds its row (direct sampling at 64², 4× pixels);
//! `…/shapes-lora64/model.safetensors:4:lora-r4` names the LoRA row.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::tensor::{backend::AutodiffBackend, Tensor};
use selfcascade_shapes_model::{default_model, save_checkpoint, ShapesModel, TrainConfig, Trainer};
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
    let (mut out, mut lora_rank) = (None, None::<usize>);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--size" => config.image_size = Some(value.parse().map_err(|e| bad(&e))?),
            "--lora-rank" => lora_rank = Some(value.parse().map_err(|e| bad(&e))?),
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
    let model = ShapesModel::<Autodiff<Flex>>::from_inner(model);
    let (model, trainable) = match lora_rank {
        // Parameters loaded on the inner backend carry `require_grad = false`, which `from_inner`
        // keeps: switch every one on, or nothing would train.
        None => {
            let model = model.map(&mut RequireGrad);
            let n = model.num_params();
            (model, n)
        }
        // Frozen base (as loaded); the fresh adapters are the only parameters that train.
        Some(rank) => {
            let mut model = model.no_grad();
            model.unet = model
                .unet
                .with_lora(rank, rank as f64, config.seed)
                .map_err(|e| e.to_string())?;
            let n = model.unet.lora_params();
            (model, n)
        }
    };
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
    let mut weights = trainer.ema().clone();
    weights.unet = weights.unet.merge_lora();
    let mut extra = vec![("trainable_parameters", trainable.to_string())];
    if let Some(rank) = lora_rank {
        extra.push(("lora_rank", rank.to_string()));
    }
    save_checkpoint(
        &out.join("model.safetensors"),
        &weights,
        trainer.step_count(),
        &extra,
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "{} steps in {:.0} s; {trainable} trainable parameters; weights in {}",
        trainer.step_count(),
        start.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

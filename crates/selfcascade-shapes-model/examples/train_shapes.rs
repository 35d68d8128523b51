//! Trains the shapes model on the CPU (`Autodiff<Flex>`).
//!
//! ```text
//! cargo run --release -p selfcascade-shapes-model --example train_shapes -- \
//!     --steps 1500 --out runs/shapes [--batch 32] [--lr 1e-3] [--warmup 100] [--seed 0] \
//!     [--checkpoint-every 250] [--tiny]
//! ```
//! Writes `model.safetensors` (EMA weights), `model-raw.safetensors` and `loss.csv` to `--out`, and
//! `model-f16.safetensors` (the EMA weights in float16: what the crate ships in
//! `assets/shapes-default.safetensors`). `train_shapes --export-f16 IN OUT` converts a checkpoint.

use burn::backend::{Autodiff, Flex};
use selfcascade_shapes_model::{
    load_checkpoint, save_checkpoint_as, train, Precision, RunOptions, ShapesModelConfig,
    TrainConfig,
};
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

fn parse() -> Result<(ShapesModelConfig, TrainConfig, RunOptions), String> {
    let mut model = ShapesModelConfig::reference();
    let mut cfg = TrainConfig::default();
    let mut out: Option<PathBuf> = None;
    let mut every = 250;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--tiny" {
            model = ShapesModelConfig::tiny();
            continue;
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--steps" => cfg.steps = value.parse().map_err(|e| bad(&e))?,
            "--batch" => cfg.batch_size = value.parse().map_err(|e| bad(&e))?,
            "--lr" => cfg.learning_rate = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => cfg.warmup_steps = value.parse().map_err(|e| bad(&e))?,
            "--seed" => cfg.seed = value.parse().map_err(|e| bad(&e))?,
            "--ema" => cfg.ema_decay = value.parse().map_err(|e| bad(&e))?,
            "--checkpoint-every" => every = value.parse().map_err(|e| bad(&e))?,
            "--out" => out = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let out_dir = out.ok_or("--out DIR is required")?;
    Ok((
        model,
        cfg,
        RunOptions {
            out_dir,
            checkpoint_every: every,
        },
    ))
}

/// Rewrites checkpoint `input` as float16 at `output`.
fn export_f16(input: &Path, output: &Path) -> selfcascade_shapes_model::Result<()> {
    let (model, info) = load_checkpoint::<Flex>(input, &Default::default())?;
    let extra: Vec<(&str, String)> = info
        .metadata
        .iter()
        .filter(|(k, _)| !["format", "config", "unet_config", "step"].contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    save_checkpoint_as(output, &model, info.step, &extra, Precision::F16)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--export-f16") {
        let (Some(input), Some(output)) = (args.get(2), args.get(3)) else {
            eprintln!("usage: train_shapes --export-f16 IN.safetensors OUT.safetensors");
            return ExitCode::FAILURE;
        };
        return match export_f16(Path::new(input), Path::new(output)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (model, cfg, options) = match parse() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}\nusage: train_shapes --steps N --out DIR [--batch B] [--lr LR] [--warmup W] [--seed S] [--ema D] [--checkpoint-every K] [--tiny]");
            return ExitCode::FAILURE;
        }
    };
    let steps = cfg.steps;
    let device = Default::default();
    let start = std::time::Instant::now();
    let result = train::<Autodiff<Flex>>(&model, cfg, &options, &device, |r| {
        if r.step == 1 || r.step.is_multiple_of(10) || r.step == steps {
            eprintln!(
                "step {:>5}/{steps}  loss {:.4}  lr {:.2e}  {:.3} s/step  elapsed {:.0} s",
                r.step,
                r.loss,
                r.lr,
                r.seconds,
                start.elapsed().as_secs_f64()
            );
        }
    });
    match result {
        Ok(_) => {
            let ema = options.out_dir.join("model.safetensors");
            let half = options.out_dir.join("model-f16.safetensors");
            if let Err(e) = export_f16(&ema, &half) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            eprintln!("done: {} and {}", ema.display(), half.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

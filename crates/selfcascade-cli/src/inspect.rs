//! `selfcascade inspect`: schedules (and, later, model components).

use crate::CliResult;
use clap::{Args, Subcommand};
use selfcascade_core::scheduler::{self, SchedulerConfig, SchedulerKind};
use std::path::PathBuf;

/// `selfcascade inspect …`
#[derive(Subcommand, Debug)]
pub enum InspectCommand {
    /// Print the timesteps a scheduler runs and ᾱ at each, as JSON.
    Schedule(ScheduleArgs),
}

/// Arguments of `selfcascade inspect schedule`.
#[derive(Args, Debug)]
pub struct ScheduleArgs {
    /// A diffusers `scheduler_config.json`.
    #[arg(long)]
    config: PathBuf,
    /// Number of inference steps.
    #[arg(long)]
    steps: usize,
    /// Keep only the last int(steps·strength) timesteps (img2img / later self-cascade stages).
    #[arg(long)]
    strength: Option<f64>,
    /// Scheduler to build from the config: ddim, ddpm or euler (default: the config's `_class_name`).
    #[arg(long)]
    scheduler: Option<String>,
}

/// Runs an inspect subcommand.
pub fn run(cmd: InspectCommand) -> CliResult {
    match cmd {
        InspectCommand::Schedule(args) => schedule(args),
    }
}

fn number(v: f64) -> serde_json::Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        serde_json::Value::from(v as i64)
    } else {
        serde_json::Value::from(v)
    }
}

fn schedule(args: ScheduleArgs) -> CliResult {
    let config = SchedulerConfig::from_file(&args.config).map_err(|e| e.to_string())?;
    let kind: Option<SchedulerKind> = args
        .scheduler
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: selfcascade_core::Error| e.to_string())?;
    let mut s = scheduler::build::<burn::backend::Flex, 4>(&config, kind, 0.0)
        .map_err(|e| format!("{e} (with --scheduler ddim|ddpm|euler)"))?;
    s.set_timesteps(args.steps).map_err(|e| e.to_string())?;
    let start = match args.strength {
        Some(strength) => s.strength_start(strength).map_err(|e| e.to_string())?,
        None => 0,
    };
    let mut timesteps = Vec::new();
    let mut alphas = Vec::new();
    for i in start..s.timesteps().len() {
        timesteps.push(number(s.timesteps()[i]));
        alphas.push(serde_json::Value::from(
            s.alpha_cumprod_at(i).map_err(|e| e.to_string())?,
        ));
    }
    println!(
        "{}",
        serde_json::json!({ "timesteps": timesteps, "alphas_cumprod": alphas })
    );
    Ok(())
}

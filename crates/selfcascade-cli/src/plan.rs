//! `selfcascade plan`: the stage sizes of a run.

use crate::CliResult;
use clap::Args;
use selfcascade_core::{ScalePlan, Size};

/// Arguments of `selfcascade plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// The model's base (training) size, WxH (512x512 for SD 2.1 base, 1024x1024 for SDXL).
    #[arg(long)]
    base: Size,
    /// The size to generate, WxH.
    #[arg(long)]
    target: Size,
    /// Every side must be a multiple of this (VAE factor × UNet down-sampling: 64 for SD).
    #[arg(long, default_value_t = 64)]
    align: usize,
}

/// Prints `{"stages":[{"width":W,"height":H},...]}`.
pub fn run(args: PlanArgs) -> CliResult {
    let plan = ScalePlan::new(args.base, args.target, args.align).map_err(|e| e.to_string())?;
    let json = serde_json::json!({ "stages": plan.stages() });
    println!("{json}");
    Ok(())
}

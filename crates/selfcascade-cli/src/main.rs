//! `selfcascade`: higher-resolution Stable Diffusion by the self-cascade method.

mod backend;
mod bench;
mod eval;
mod generate;
mod inspect;
mod output;
mod plan;
mod shapes;
mod tensors;
mod train;
mod video;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Generate images larger than a diffusion model was trained for, by the self-cascade method
/// (Guo et al., ECCV 2024).
#[derive(Parser, Debug)]
#[command(name = "selfcascade", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate an image from a prompt at a size the model was not trained for.
    Generate(generate::GenerateArgs),
    /// Generate a video from a prompt at a frame size the model was not trained for (ModelScope
    /// text-to-video): an animated GIF or APNG.
    GenerateVideo(video::VideoArgs),
    /// Print the stage sizes of a self-cascade run as JSON.
    Plan(plan::PlanArgs),
    /// Look inside models and schedules.
    #[command(subcommand)]
    Inspect(inspect::InspectCommand),
    /// The shapes world: evaluate every method on the embedded model.
    #[command(subcommand)]
    Shapes(shapes::ShapesCommand),
    /// Image quality: Inception features, FID and KID (clean-fid's protocol).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Table 1 for a prompt list: every method's images, the base-size images, FID/KID and timings.
    BenchQuality(bench::BenchArgs),
    /// Train the tuned method's feature upsamplers on captioned images (the model stays frozen).
    TrainUpsampler(train::TrainArgs),
}

/// A command's failure: one line for the user.
pub type CliResult<T = ()> = Result<T, String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::GenerateVideo(args) => video::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Inspect(cmd) => inspect::run(cmd),
        Command::Shapes(cmd) => shapes::run(cmd),
        Command::TrainUpsampler(args) => train::run(args),
        Command::Eval(cmd) => eval::run(cmd),
        Command::BenchQuality(args) => bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

//! `selfcascade inspect`: schedules (and, later, model components).

use crate::tensors::{Inputs, Outputs};
use crate::CliResult;
use burn::backend::Flex;
use clap::{Args, Subcommand, ValueEnum};
use selfcascade_core::scheduler::{self, SchedulerConfig, SchedulerKind};
use selfcascade_sd::clip::text_model::{CLIPTextModel, CLIPTextModelWithProjection};
use selfcascade_sd::clip::ClipTokenizer;
use selfcascade_sd::unet::{
    fold_frames, PivotInjection, UNet2DConditionModel, UNet3DConditionModel, UNetHooks,
};
use selfcascade_sd::vae::AutoencoderKL;
use std::path::PathBuf;

/// `selfcascade inspect …`
#[derive(Subcommand, Debug)]
pub enum InspectCommand {
    /// Print the timesteps a scheduler runs and ᾱ at each, as JSON.
    Schedule(ScheduleArgs),
    /// Run one component of a pipeline folder on tensors from a safetensors file.
    Run(RunArgs),
    /// Print the token ids of each prompt line as JSON arrays.
    Tokenize(TokenizeArgs),
}

/// The components `inspect run` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Component {
    /// `unet/`: in `sample`, `timestep`, `encoder_hidden_states` (+ `text_embeds`, `time_ids`); out `out`.
    /// A `UNet3DConditionModel` folder (video) takes a 5-D `sample` `[B, C, T, h, w]`.
    Unet,
    /// `vae/` encoder: in `image`; out `mean`, `logvar`.
    VaeEncode,
    /// `vae/` decoder: in `latent` (unscaled); out `decoded`.
    VaeDecode,
    /// `text_encoder/`: in `input_ids`; out `last_hidden_state`, `penultimate_hidden_state`, `pooler_output`.
    TextEncoder,
    /// `text_encoder_2/`: in `input_ids`; out `last_hidden_state`, `penultimate_hidden_state`, `text_embeds`.
    #[value(name = "text-encoder-2")]
    TextEncoder2,
}

/// Arguments of `selfcascade inspect run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A diffusers pipeline folder (components other than the one run may be absent).
    #[arg(long)]
    model: PathBuf,
    /// Which component.
    #[arg(long, value_enum)]
    component: Component,
    /// Input tensors (safetensors).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the output tensors (safetensors).
    #[arg(long)]
    output: PathBuf,
    /// Weight variant (e.g. fp16).
    #[arg(long)]
    variant: Option<String>,
    /// With `--component unet`: feature upsamplers (as `generate --upsamplers`) applied to the input
    /// tensor `pivot` (the clean previous-stage latent, half the sample's size): the tuned UNet.
    #[arg(long)]
    upsamplers: Option<PathBuf>,
}

/// Arguments of `selfcascade inspect tokenize`.
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// A diffusers pipeline folder with `tokenizer/` (and `tokenizer_2/` for `--second`).
    #[arg(long)]
    model: PathBuf,
    /// Use `tokenizer_2/`.
    #[arg(long)]
    second: bool,
    /// A text file with one prompt per line; a literal `\n` or `\t` in a line stands for newline or tab.
    #[arg(long)]
    prompts: PathBuf,
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
        InspectCommand::Run(args) => run_component(args),
        InspectCommand::Tokenize(args) => tokenize(args),
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

fn component_dir(model: &std::path::Path, name: &str) -> CliResult<PathBuf> {
    let dir = model.join(name);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!("{} has no `{name}/` folder", model.display()))
    }
}

fn run_component(args: RunArgs) -> CliResult {
    let dev = Default::default();
    let folder = match args.component {
        Component::Unet => "unet",
        Component::VaeEncode | Component::VaeDecode => "vae",
        Component::TextEncoder => "text_encoder",
        Component::TextEncoder2 => "text_encoder_2",
    };
    component_dir(&args.model, folder)?;
    let inputs = Inputs::open(&args.input)?;
    let variant = args.variant.as_deref();
    let e = |e: selfcascade_sd::Error| e.to_string();
    let mut out = Outputs::default();
    match args.component {
        Component::Unet if crate::video::is_unet3d(&args.model.join("unet")) => {
            let unet = UNet3DConditionModel::<Flex>::load(&args.model.join("unet"), variant, &dev)
                .map_err(e)?;
            let upsampler = match (&args.upsamplers, inputs.has("pivot")) {
                (Some(path), true) => Some(crate::video::load_video_upsamplers::<Flex>(
                    path,
                    unet.injection_channels(),
                    unet.time_embed_dim(),
                    unet.arch().groups,
                    &dev,
                )?),
                (None, false) => None,
                _ => {
                    return Err(format!(
                        "the tuned video UNet needs both --upsamplers and the input tensor `pivot` \
                         ([B, C, T, h/2, w/2]) in {}",
                        args.input.display()
                    ))
                }
            };
            let (_, timesteps) = inputs.values("timestep")?;
            let timesteps: Vec<f64> = timesteps.iter().map(|t| *t as f64).collect();
            let hooks = UNetHooks {
                pivot: match &upsampler {
                    Some(up) => Some(PivotInjection {
                        latent: fold_frames(inputs.float::<Flex, 5>("pivot", &dev)?),
                        upsampler: up.as_ref(),
                    }),
                    None => None,
                },
                ..Default::default()
            };
            let y = unet
                .forward(
                    inputs.float::<Flex, 5>("sample", &dev)?,
                    &timesteps,
                    inputs.float::<Flex, 3>("encoder_hidden_states", &dev)?,
                    &hooks,
                )
                .map_err(e)?;
            out.add("out", y)?;
        }
        Component::Unet => {
            let unet = UNet2DConditionModel::<Flex>::load(
                &component_dir(&args.model, "unet")?,
                variant,
                &dev,
            )
            .map_err(e)?;
            let sample = inputs.float::<Flex, 4>("sample", &dev)?;
            let (_, timesteps) = inputs.values("timestep")?;
            let timesteps: Vec<f64> = timesteps.iter().map(|t| *t as f64).collect();
            let context = inputs.float::<Flex, 3>("encoder_hidden_states", &dev)?;
            let added = match (inputs.has("text_embeds"), inputs.has("time_ids")) {
                (true, true) => Some((
                    inputs.float("text_embeds", &dev)?,
                    inputs.float("time_ids", &dev)?,
                )),
                (false, false) => None,
                _ => {
                    return Err(format!(
                        "{}: SDXL inputs need both `text_embeds` and `time_ids`",
                        args.input.display()
                    ))
                }
            };
            let upsampler = match (&args.upsamplers, inputs.has("pivot")) {
                (Some(path), true) => {
                    Some(crate::generate::load_upsamplers::<Flex>(path, &unet, &dev)?)
                }
                (None, false) => None,
                (Some(_), false) => {
                    return Err(format!(
                        "--upsamplers needs the input tensor `pivot` (the clean latent at half the \
                         sample's size) in {}",
                        args.input.display()
                    ))
                }
                (None, true) => {
                    return Err(format!(
                    "{} has a `pivot` tensor: give the feature upsamplers with --upsamplers PATH",
                    args.input.display()
                ))
                }
            };
            let hooks = UNetHooks {
                pivot: match &upsampler {
                    Some(up) => Some(PivotInjection {
                        latent: inputs.float("pivot", &dev)?,
                        upsampler: up.as_ref(),
                    }),
                    None => None,
                },
                ..Default::default()
            };
            let y = unet
                .forward(sample, &timesteps, context, added, &hooks)
                .map_err(e)?;
            out.add("out", y)?;
        }
        Component::VaeEncode | Component::VaeDecode => {
            let vae =
                AutoencoderKL::<Flex>::load(&component_dir(&args.model, "vae")?, variant, &dev)
                    .map_err(e)?;
            if args.component == Component::VaeEncode {
                let (mean, logvar) = vae.encode(inputs.float("image", &dev)?).map_err(e)?;
                out.add("mean", mean)?;
                out.add("logvar", logvar)?;
            } else {
                out.add(
                    "decoded",
                    vae.decode(inputs.float("latent", &dev)?).map_err(e)?,
                )?;
            }
        }
        Component::TextEncoder => {
            let te = CLIPTextModel::<Flex>::load(
                &component_dir(&args.model, "text_encoder")?,
                variant,
                &dev,
            )
            .map_err(e)?;
            let o = te.forward(&inputs.int_rows("input_ids")?).map_err(e)?;
            out.add("last_hidden_state", o.last_hidden_state)?;
            out.add("penultimate_hidden_state", o.penultimate_hidden_state)?;
            out.add("pooler_output", o.pooled)?;
        }
        Component::TextEncoder2 => {
            let te = CLIPTextModelWithProjection::<Flex>::load(
                &component_dir(&args.model, "text_encoder_2")?,
                variant,
                &dev,
            )
            .map_err(e)?;
            let o = te.forward(&inputs.int_rows("input_ids")?).map_err(e)?;
            out.add("last_hidden_state", o.last_hidden_state)?;
            out.add("penultimate_hidden_state", o.penultimate_hidden_state)?;
            out.add("text_embeds", o.pooled)?;
        }
    }
    out.write(&args.output)
}

fn tokenize(args: TokenizeArgs) -> CliResult {
    let name = if args.second {
        "tokenizer_2"
    } else {
        "tokenizer"
    };
    let tok =
        ClipTokenizer::from_dir(&component_dir(&args.model, name)?).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&args.prompts)
        .map_err(|e| format!("cannot read {}: {e}", args.prompts.display()))?;
    for line in text.lines() {
        let prompt = line.replace("\\n", "\n").replace("\\t", "\t");
        let ids = tok.encode(&prompt).map_err(|e| e.to_string())?;
        println!(
            "{}",
            serde_json::to_string(&ids).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

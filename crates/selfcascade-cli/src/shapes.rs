//! The shapes world: `generate` with the embedded default model, and `selfcascade shapes eval` (the
//! paper's Table 1 in miniature).

use crate::backend::{dispatch, BackendJob, DeviceArg, DtypeArg};
use crate::generate::{
    metadata, progress_bar, save_latents, stage_path, write_final, GenerateArgs,
};
use crate::output::{write_atomic, write_png};
use crate::CliResult;
use burn::module::Module;
use burn::tensor::backend::Backend;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use selfcascade_core::scheduler::SchedulerKind;
use selfcascade_sd::pipeline::{FeatureInjection, Method};
use selfcascade_sd::upsampler::{LightUpsampler, LightUpsamplerConfig};
use selfcascade_shapes::{caption_vocabulary, grid_with_gap, RgbImage, SceneLabel};
use selfcascade_shapes_model::{
    add_fid_kid, default_model, default_upsampler, evaluate, load_checkpoint, to_images,
    ClassifierFeatures, EvalOptions, FineTuned, QualityOptions, ShapesModel, TunedUpsampler,
    DEFAULT_GUIDANCE, DEFAULT_MODEL_NAME, DEFAULT_STEPS, DEFAULT_UPSAMPLER_STEPS,
};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Default side of `generate` with the shapes model (4× the base side: 16× the pixels).
const DEFAULT_SIDE: usize = 128;

/// The caption's label, or an error that shows what the model understands.
fn parse_caption(prompt: &str) -> CliResult<SceneLabel> {
    SceneLabel::from_caption(&prompt.trim().to_lowercase()).ok_or_else(|| {
        format!(
            "the embedded shapes model draws captions of the form \"a <colour> <shape> on a <colour> background\" \
             (e.g. \"a red circle on a blue background\"; words: {}), not \"{prompt}\"; pass --model DIR for \
             Stable Diffusion",
            caption_vocabulary().join(" ")
        )
    })
}

fn load<B: Backend>(
    path: Option<&Path>,
    device: &B::Device,
) -> CliResult<(ShapesModel<B>, String)> {
    match path {
        None => Ok((
            default_model::<B>(device).map_err(|e| e.to_string())?.0,
            DEFAULT_MODEL_NAME.to_string(),
        )),
        Some(p) => Ok((
            load_checkpoint::<B>(p, device)
                .map_err(|e| e.to_string())?
                .0,
            p.display().to_string(),
        )),
    }
}

/// The tuned method's feature upsamplers for `model`: a light-upsampler safetensors file at `path`,
/// or the embedded one (trained for the embedded model); with the training steps when known.
fn load_upsampler<B: Backend>(
    path: Option<&Path>,
    model: &ShapesModel<B>,
    device: &B::Device,
) -> CliResult<(LightUpsampler<B>, usize)> {
    match path {
        None => Ok((
            default_upsampler(model, device).map_err(|e| e.to_string())?,
            DEFAULT_UPSAMPLER_STEPS,
        )),
        Some(p) => {
            let config = LightUpsamplerConfig::for_unet(&model.unet);
            let up = LightUpsampler::load_safetensors(p, &config, device)
                .map_err(|e| format!("{}: {e}", p.display()))?;
            Ok((up, 0))
        }
    }
}

/// `CHECKPOINT:SCALE[:NAME]` of `--fine-tuned` (NAME defaults to `full-fine-tune`).
fn parse_fine_tuned(spec: &str) -> CliResult<(&str, usize, String)> {
    let bad = || {
        format!(
            "--fine-tuned {spec}: expected CHECKPOINT:SCALE or CHECKPOINT:SCALE:NAME, e.g. \
             runs/ft/model.safetensors:4"
        )
    };
    let (rest, last) = spec.rsplit_once(':').ok_or_else(bad)?;
    if let Ok(scale) = last.parse() {
        return Ok((rest, scale, "full-fine-tune".into()));
    }
    let (path, scale) = rest.rsplit_once(':').ok_or_else(bad)?;
    let scale = scale.parse().map_err(|_| bad())?;
    if last.is_empty() {
        return Err(bad());
    }
    Ok((path, scale, last.to_string()))
}

/// `selfcascade generate` without `--model`: the embedded shapes model.
pub fn generate<B: Backend>(
    args: &GenerateArgs,
    method: Method,
    scheduler: Option<SchedulerKind>,
    device: B::Device,
) -> CliResult {
    let label = parse_caption(&args.prompt)?;
    if !args.negative_prompt.is_empty() {
        eprintln!(
            "warning: the shapes model has no negative prompts; --negative-prompt is ignored"
        );
    }
    let (model, name) = load::<B>(None, &device)?;
    let upsampler = match method {
        Method::SelfCascadeTuned => {
            Some(load_upsampler(args.upsamplers.as_deref(), &model, &device)?.0)
        }
        _ => None,
    };
    let request = args.request(
        method,
        Some(scheduler.unwrap_or(SchedulerKind::Ddim)),
        DEFAULT_SIDE,
        DEFAULT_STEPS,
        DEFAULT_GUIDANCE,
    );
    let plan = model.plan(&request).map_err(|e| e.to_string())?;
    let mut source = args.noise_source::<B>(&plan, &device)?;
    let bar = progress_bar(args.quiet)?;
    let out = model
        .sample_with(
            &[label],
            &request,
            upsampler.as_ref().map(|u| FeatureInjection {
                upsampler: u,
                t_min: args.t_min,
            }),
            source.as_mut(),
            &mut |p| bar.tick(&plan, p),
        )
        .map_err(|e| e.to_string())?;
    bar.finish();
    let mut meta = metadata(args, &request, &plan, &name);
    save_latents(args, &out)?;
    if args.save_stages {
        for (r, stage) in out.stages.iter().enumerate().take(plan.len() - 1) {
            let img = first_image(stage.clone())?;
            meta.push(("stage".to_string(), r.to_string()));
            write_png(
                &stage_path(&args.out, r),
                img.width(),
                img.height(),
                img.as_raw(),
                &meta,
            )?;
            meta.pop();
        }
    }
    let img = first_image(out.latent)?;
    write_final(args, &plan, img.width(), img.height(), img.as_raw(), &meta)
}

fn first_image<B: Backend>(x: burn::tensor::Tensor<B, 4>) -> CliResult<RgbImage> {
    to_images(x)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .ok_or_else(|| "the sampler returned no image".to_string())
}

/// `selfcascade shapes …`.
#[derive(Subcommand, Debug)]
pub enum ShapesCommand {
    /// Every method at 4× and 16× the base pixels on the same seeds: single-object rate, objects per
    /// image, size error, caption accuracy, time (the paper's Table 1 in miniature).
    Eval(EvalArgs),
}

/// Arguments of `selfcascade shapes eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Comma-separated methods (direct, attn-sf, scalecrafter, self-cascade, self-cascade-tuned).
    #[arg(
        long,
        default_value = "direct,attn-sf,scalecrafter,self-cascade,self-cascade-tuned"
    )]
    methods: String,
    /// Comma-separated target pixel scales (perfect squares: 4 = 2× the side, 16 = 4×).
    #[arg(long, default_value = "4,16")]
    scales: String,
    /// Images per method and scale.
    #[arg(long, default_value_t = 32)]
    samples: usize,
    /// Seed of the labels and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images sampled together (results do not depend on it).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// DDIM steps.
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = DEFAULT_GUIDANCE)]
    guidance: f64,
    /// A shapes-model checkpoint (default: the embedded model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Light feature upsamplers of self-cascade-tuned (safetensors; default: the embedded ones,
    /// trained for the embedded model).
    #[arg(long)]
    upsamplers: Option<PathBuf>,
    /// A copy of the model fine-tuned at a higher resolution, as CHECKPOINT:SCALE[:NAME] (e.g.
    /// runs/shapes-ft64/model.safetensors:4): adds a row (named NAME, default `full-fine-tune`) that
    /// samples it directly at that pixel scale (repeatable).
    #[arg(long)]
    fine_tuned: Vec<String>,
    /// Print the table as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the table as JSON to this file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Write a picture grid per method and scale (same seeds side by side) into this folder.
    #[arg(long)]
    grids: Option<PathBuf>,
    /// Skip the base-size row (and with it FID_b/KID_b).
    #[arg(long)]
    no_base: bool,
    /// Skip the FID/KID columns (features of the embedded shapes classifier).
    #[arg(long)]
    no_fid: bool,
    /// Reference renders per size for FID_r/KID_r.
    #[arg(long, default_value_t = 256)]
    reference_samples: usize,
    /// Whitened principal components of the classifier's 64 features used for FID/KID (0: all,
    /// unwhitened), fitted on the reference renders.
    #[arg(long, default_value_t = 8)]
    fid_components: usize,
    /// cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Do not draw a progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs `selfcascade shapes …`.
pub fn run(cmd: ShapesCommand) -> CliResult {
    match cmd {
        ShapesCommand::Eval(args) => {
            let methods = args
                .methods
                .split(',')
                .map(|m| m.trim().parse::<Method>().map_err(|e| e.to_string()))
                .collect::<CliResult<Vec<_>>>()?;
            let pixel_scales = args
                .scales
                .split(',')
                .map(|k| {
                    k.trim().parse::<usize>().map_err(|_| {
                        format!("--scales: `{k}` is not a whole number (expected e.g. 4,16)")
                    })
                })
                .collect::<CliResult<Vec<_>>>()?;
            if let Some(dir) = &args.grids {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let options = EvalOptions {
                methods,
                pixel_scales,
                samples: args.samples,
                seed: args.seed,
                batch: args.batch,
                include_base: !args.no_base,
                steps: args.steps,
                guidance: args.guidance,
            };
            let device = args.device;
            dispatch(device, DtypeArg::F32, EvalJob { args, options })
        }
    }
}

struct EvalJob {
    args: EvalArgs,
    options: EvalOptions,
}

impl BackendJob for EvalJob {
    fn run<B: Backend>(self, device: B::Device) -> CliResult {
        let (model, name) = load::<B>(self.args.model.as_deref(), &device)?;
        let bar = if self.args.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {elapsed}")
                .map_err(|e| e.to_string())?,
        );
        let tuned = if self.options.methods.contains(&Method::SelfCascadeTuned) {
            if self.args.model.is_some() && self.args.upsamplers.is_none() {
                return Err(
                    "self-cascade-tuned with --model needs --upsamplers trained for that model \
                     (the embedded ones belong to the embedded model)"
                        .into(),
                );
            }
            Some(load_upsampler(
                self.args.upsamplers.as_deref(),
                &model,
                &device,
            )?)
        } else {
            None
        };
        let tuned = tuned.as_ref().map(|(u, steps)| TunedUpsampler {
            upsampler: u,
            trainable_parameters: u.config().num_params(),
            training_steps: *steps,
        });
        let mut fine_tuned_models = Vec::new();
        for spec in &self.args.fine_tuned {
            let (path, scale, name) = parse_fine_tuned(spec)?;
            let (m, info) = load_checkpoint::<B>(Path::new(path), &device)
                .map_err(|e| format!("--fine-tuned {path}: {e}"))?;
            if m.config() != model.config() {
                return Err(format!(
                    "--fine-tuned {path}: its architecture differs from the evaluated model's"
                ));
            }
            // LoRA checkpoints record their adapters' size; full fine-tuning trains everything.
            let trainable = match info.metadata.get("trainable_parameters") {
                Some(v) => v
                    .parse()
                    .map_err(|_| format!("--fine-tuned {path}: bad trainable_parameters `{v}`"))?,
                None => m.num_params(),
            };
            fine_tuned_models.push((m, scale, name, trainable, info.step as usize));
        }
        let fine_tuned: Vec<FineTuned<'_, B>> = fine_tuned_models
            .iter()
            .map(|(m, scale, name, trainable, steps)| FineTuned {
                name: name.clone(),
                model: m,
                pixel_scale: *scale,
                trainable_parameters: *trainable,
                training_steps: *steps,
            })
            .collect();
        let (mut report, pictures) = evaluate(
            &model,
            &self.options,
            tuned.as_ref(),
            &fine_tuned,
            &mut |p| {
                bar.set_length(p.step.total as u64);
                bar.set_position(p.step.done as u64);
                bar.set_message(format!(
                    "{} at {}× pixels, images {}/{}",
                    p.method, p.pixel_scale, p.images_done, p.images_total
                ));
            },
        )
        .map_err(|e| e.to_string())?;
        if !self.args.no_fid {
            bar.set_message("FID/KID on the shapes classifier's features");
            let net = ClassifierFeatures::<B>::embedded(&device).map_err(|e| e.to_string())?;
            let options = QualityOptions {
                reference_samples: self.args.reference_samples,
                components: self.args.fid_components,
                ..Default::default()
            };
            add_fid_kid(&mut report, &pictures, &net, &options).map_err(|e| e.to_string())?;
        }
        bar.finish_and_clear();
        let json = serde_json::to_string_pretty(&serde_json::json!({
            "model": name,
            "base_side": report.base_side,
            "steps": report.steps,
            "guidance": report.guidance,
            "seed": report.seed,
            "rows": report.rows,
        }))
        .map_err(|e| e.to_string())?;
        if let Some(path) = &self.args.output {
            write_atomic(path, |f| f.write_all(json.as_bytes()))?;
        }
        if let Some(dir) = &self.args.grids {
            for row in &pictures {
                let path = dir.join(format!("{}-x{}.png", row.method, row.pixel_scale));
                let cols = (row.images.len() as f64).sqrt().ceil().max(1.0) as usize;
                let img = grid_with_gap(&row.images, cols, 2, [255, 255, 255])
                    .map_err(|e| e.to_string())?;
                let meta = vec![
                    ("method".to_string(), row.method.clone()),
                    ("pixel_scale".to_string(), row.pixel_scale.to_string()),
                    ("model".to_string(), name.clone()),
                    ("seed".to_string(), report.seed.to_string()),
                ];
                write_png(&path, img.width(), img.height(), img.as_raw(), &meta)?;
            }
        }
        if self.args.json {
            println!("{json}");
        } else {
            println!(
                "{:<14} {:>5} {:>9} {:>15} {:>13} {:>10} {:>9} {:>10} {:>8} {:>8}",
                "method",
                "scale",
                "size",
                "single-object",
                "objects",
                "size-err",
                "caption",
                "time",
                "FID_r",
                "FID_b"
            );
            for r in &report.rows {
                println!(
                    "{:<14} {:>4}× {:>9} {:>8.1}% ±{:>4.1} {:>6.2} ±{:>4.2} {:>10} {:>8.1}% {:>10} {:>8} {:>8}",
                    r.method,
                    r.pixel_scale,
                    format!("{}x{}", r.width, r.height),
                    100.0 * r.single_object_rate,
                    100.0 * r.single_object_stderr,
                    r.mean_objects,
                    r.mean_objects_stderr,
                    r.mean_size_error
                        .map(|e| format!("{e:.3}"))
                        .unwrap_or_else(|| "-".into()),
                    100.0 * r.caption_accuracy,
                    r.time_vs_direct
                        .map(|t| format!("{t:.2}×"))
                        .unwrap_or_else(|| format!("{:.2} s", r.seconds_per_image)),
                    r.quality.fid_r.map_or("-".into(), |v| format!("{v:.2}")),
                    r.quality.fid_b.map_or("-".into(), |v| format!("{v:.2}")),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_fine_tuned;

    #[test]
    fn fine_tuned_specs_parse() {
        assert_eq!(
            parse_fine_tuned("a/b.safetensors:4").unwrap(),
            ("a/b.safetensors", 4, "full-fine-tune".to_string())
        );
        assert_eq!(
            parse_fine_tuned("a/b.safetensors:16:lora-r4").unwrap(),
            ("a/b.safetensors", 16, "lora-r4".to_string())
        );
        assert!(parse_fine_tuned("a/b.safetensors").is_err());
        assert!(parse_fine_tuned("a/b.safetensors:x:lora").is_err());
    }
}

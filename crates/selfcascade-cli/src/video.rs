//! `selfcascade generate-video`: a prompt in, an animated GIF or APNG out (ModelScope text-to-video).

use crate::backend::{dispatch, BackendJob, DeviceArg, DtypeArg};
use crate::generate::{check_writable, load_upsamplers_for, progress_bar, resolve_model};
use crate::output::{write_atomic, write_png};
use crate::CliResult;
use burn::tensor::backend::Backend;
use clap::Args;
use selfcascade_core::scheduler::SchedulerKind;
use selfcascade_core::{FeatureUpsampler, SeededNoise};
use selfcascade_sd::pipeline::{GenerateRequest, LvdmParts, Method, RgbImage, TextToVideo};
use selfcascade_sd::upsampler::{LightUpsamplerConfig, ResBlockUpsamplerConfig};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of `selfcascade generate-video`.
#[derive(Args, Debug, Clone)]
pub struct VideoArgs {
    /// A diffusers text-to-video folder (`unet/` holding a UNet3DConditionModel, `vae/`,
    /// `text_encoder/`, `tokenizer/`, `scheduler/`), a Hugging Face repo id such as
    /// ali-vilab/text-to-video-ms-1.7b already in the local cache, or an LVDM checkpoint file
    /// (`.ckpt`, e.g. lvdm_short's `t2v.ckpt`; needs --tokenizer).
    #[arg(long)]
    pub(crate) model: PathBuf,
    /// With an LVDM checkpoint: a CLIP ViT-L/14 tokenizer folder (`vocab.json`, `merges.txt`; e.g.
    /// Stable Diffusion 1.5's `tokenizer/`).
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
    /// With an LVDM checkpoint: a JSON file with `unet`, `vae` and/or `text_encoder` settings replacing
    /// lvdm_short's (for other LVDM-shaped checkpoints).
    #[arg(long)]
    pub(crate) lvdm_config: Option<PathBuf>,
    /// What to show.
    #[arg(long)]
    pub(crate) prompt: String,
    /// What to avoid (used with guidance > 1).
    #[arg(long, default_value = "")]
    pub(crate) negative_prompt: String,
    /// Frames (the count stays the same across self-cascade stages).
    #[arg(long, default_value_t = 16)]
    pub(crate) frames: usize,
    /// Frame width in pixels (a multiple of the model's alignment, 64 for ModelScope).
    #[arg(long, default_value_t = 512)]
    pub(crate) width: usize,
    /// Frame height in pixels (default as the width).
    #[arg(long)]
    pub(crate) height: Option<usize>,
    /// direct | attn-sf | self-cascade | self-cascade-tuned (needs --upsamplers).
    #[arg(long, default_value = "self-cascade")]
    pub(crate) method: String,
    /// Feature upsamplers of the tuned method, trained for this video UNet (ResBlock `.pth` /
    /// safetensors, or light safetensors), applied to every frame.
    #[arg(long)]
    pub(crate) upsamplers: Option<PathBuf>,
    /// The tuned method injects features while the timestep t > t_min.
    #[arg(long, default_value_t = 100.0)]
    pub(crate) t_min: f64,
    /// Inference steps of the full schedule.
    #[arg(long, default_value_t = 50)]
    pub(crate) steps: usize,
    /// Classifier-free guidance scale (diffusers' text-to-video default is 9).
    #[arg(long, default_value_t = 9.0)]
    pub(crate) guidance: f64,
    /// Re-noising strength of the later self-cascade stages.
    #[arg(long, default_value_t = 0.7)]
    pub(crate) strength: f64,
    /// ddim | ddpm | euler (default: the model's scheduler config).
    #[arg(long)]
    pub(crate) scheduler: Option<String>,
    /// DDIM η.
    #[arg(long)]
    pub(crate) eta: Option<f64>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub(crate) device: DeviceArg,
    /// f32, f16 or bf16.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub(crate) dtype: DtypeArg,
    /// Weight variant to load (e.g. fp16 for `*.fp16.safetensors`).
    #[arg(long)]
    pub(crate) variant: Option<String>,
    /// Output: an animated GIF (`.gif`) or APNG (`.png`, `.apng`).
    #[arg(long, default_value = "out.gif")]
    pub(crate) out: PathBuf,
    /// Frames per second of the animation.
    #[arg(long, default_value_t = 8)]
    pub(crate) fps: u16,
    /// Also write every frame as a PNG (OUT-frame000.png, …).
    #[arg(long)]
    pub(crate) save_frames: bool,
    /// Frames the VAE decodes per call (memory against speed; the frames do not depend on it).
    #[arg(long, default_value_t = 4)]
    pub(crate) frame_batch: usize,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub(crate) quiet: bool,
    /// Print the seconds spent loading, encoding, sampling and decoding as one JSON line on stderr.
    #[arg(long)]
    pub(crate) timings: bool,
}

/// The animation format, from the output's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Gif,
    Apng,
}

fn format_of(path: &Path) -> CliResult<Format> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "gif" => Ok(Format::Gif),
        "png" | "apng" => Ok(Format::Apng),
        _ => Err(format!(
            "--out {}: the extension must be .gif (animated GIF) or .png / .apng (animated PNG)",
            path.display()
        )),
    }
}

/// Runs `selfcascade generate-video`.
pub fn run(args: VideoArgs) -> CliResult {
    let method: Method = args
        .method
        .parse()
        .map_err(|e: selfcascade_sd::Error| e.to_string())?;
    let scheduler: Option<SchedulerKind> = args
        .scheduler
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: selfcascade_core::Error| e.to_string())?;
    format_of(&args.out)?;
    if args.frames == 0 || args.fps == 0 {
        return Err("--frames and --fps must be at least 1".into());
    }
    check_writable(&args.out)?;
    let mut args = args;
    if !args.model.is_file() {
        args.model = resolve_model(&args.model, args.variant.as_deref())?;
    }
    dispatch(
        args.device,
        args.dtype,
        VideoJob {
            args: args.clone(),
            method,
            scheduler,
        },
    )
}

struct VideoJob {
    args: VideoArgs,
    method: Method,
    scheduler: Option<SchedulerKind>,
}

impl BackendJob for VideoJob {
    fn run<B: Backend>(self, device: B::Device) -> CliResult {
        let args = self.args;
        let t_start = Instant::now();
        let mut t2v = load_text_to_video::<B>(
            &args.model,
            args.variant.as_deref(),
            args.tokenizer.as_deref(),
            args.lvdm_config.as_deref(),
            &device,
        )?;
        match (&args.upsamplers, self.method) {
            (Some(path), _) => {
                let unet = &t2v.unet;
                let up = load_video_upsamplers::<B>(
                    path,
                    unet.injection_channels(),
                    unet.time_embed_dim(),
                    unet.groups(),
                    &device,
                )?;
                t2v.set_feature_upsampler(up, args.t_min)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            (None, Method::SelfCascadeTuned) => {
                return Err("--method self-cascade-tuned needs --upsamplers PATH".into())
            }
            _ => {}
        }
        let request = GenerateRequest {
            width: args.width,
            height: args.height.unwrap_or(args.width),
            method: self.method,
            steps: args.steps,
            guidance: args.guidance,
            strength: args.strength,
            scheduler: self.scheduler,
            eta: args.eta,
            keep_stages: false,
        };
        let plan = t2v.plan(&request).map_err(|e| e.to_string())?;
        if t2v.vae.is_none() {
            return Err(format!(
                "{} has no vae/ folder: cannot decode the video",
                args.model.display()
            ));
        }
        let t_loaded = Instant::now();
        let embeds = t2v
            .encode_prompt(&args.prompt, &args.negative_prompt)
            .map_err(|e| e.to_string())?;
        t2v.release_text_encoder();
        if embeds.truncated {
            eprintln!("warning: the prompt is longer than the text encoder's 77 tokens and was truncated (as diffusers does)");
        }
        let t_encoded = Instant::now();
        let bar = progress_bar(args.quiet)?;
        let out = t2v
            .generate_latents(
                &embeds,
                &request,
                args.frames,
                &mut SeededNoise::new(args.seed),
                &mut |p| bar.tick(&plan, p),
            )
            .map_err(|e| e.to_string())?;
        bar.finish();
        let t_sampled = Instant::now();
        let videos = t2v
            .decode(out.latent, args.frame_batch)
            .map_err(|e| e.to_string())?;
        let frames = videos
            .into_iter()
            .next()
            .ok_or("the pipeline returned no video")?;
        if args.timings {
            let secs = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64();
            eprintln!(
                "{{\"load_s\":{:.3},\"encode_s\":{:.3},\"sample_s\":{:.3},\"decode_s\":{:.3}}}",
                secs(t_start, t_loaded),
                secs(t_loaded, t_encoded),
                secs(t_encoded, t_sampled),
                secs(t_sampled, Instant::now())
            );
        }
        if args.save_frames {
            for (i, f) in frames.iter().enumerate() {
                write_png(
                    &frame_path(&args.out, i),
                    f.width as u32,
                    f.height as u32,
                    &f.pixels,
                    &[("prompt".to_string(), args.prompt.clone())],
                )?;
            }
        }
        write_animation(&args.out, &frames, args.fps)?;
        eprintln!(
            "wrote {} ({} frames of {}x{}, {})",
            args.out.display(),
            frames.len(),
            request.width,
            request.height,
            self.method.name()
        );
        Ok(())
    }
}

/// Feature upsamplers for a video UNet from `path` (as `generate --upsamplers`: ResBlock `.pth` or
/// safetensors, or light safetensors), sized by its injection `channels`, time embedding width and
/// GroupNorm groups.
pub(crate) fn load_video_upsamplers<B: Backend>(
    path: &Path,
    channels: Vec<usize>,
    time_embed_dim: usize,
    groups: usize,
    device: &B::Device,
) -> CliResult<Box<dyn FeatureUpsampler<B>>> {
    let resblock = ResBlockUpsamplerConfig {
        channels: channels.clone(),
        time_embed_dim,
        groups,
        eps: ResBlockUpsamplerConfig::RELEASED_EPS,
    };
    let light = LightUpsamplerConfig {
        channels,
        time_embed_dim,
    };
    load_upsamplers_for::<B>(path, &resblock, &light, device)
}

/// Loads a text-to-video model: an LVDM checkpoint file (with its CLIP `tokenizer` folder and optional
/// `lvdm_config` settings) or a diffusers text-to-video folder.
pub(crate) fn load_text_to_video<B: Backend>(
    model: &Path,
    variant: Option<&str>,
    tokenizer: Option<&Path>,
    lvdm_config: Option<&Path>,
    device: &B::Device,
) -> CliResult<TextToVideo<B>> {
    if model.is_file() {
        let tokenizer = tokenizer.ok_or_else(|| {
            format!(
                "{} is a checkpoint file (LVDM): give its CLIP tokenizer folder with --tokenizer DIR",
                model.display()
            )
        })?;
        let parts = lvdm_parts(lvdm_config)?;
        TextToVideo::<B>::load_lvdm(model, tokenizer, &parts, device)
    } else {
        TextToVideo::<B>::load(model, variant, device)
    }
    .map_err(|e| e.to_string())
}

/// Whether `dir/config.json` describes diffusers' `UNet3DConditionModel` (the video UNet).
pub(crate) fn is_unet3d(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["_class_name"] == "UNet3DConditionModel")
}

/// Whether `model` is a text-to-video model: a checkpoint file (LVDM) or a folder whose `unet/` is a
/// `UNet3DConditionModel`.
pub(crate) fn is_video_model(model: &Path) -> bool {
    model.is_file() || is_unet3d(&model.join("unet"))
}

/// lvdm_short's parts, with the `unet`, `vae` and `text_encoder` objects of the JSON file `path`
/// replacing them where given.
fn lvdm_parts(path: Option<&Path>) -> CliResult<LvdmParts> {
    let mut parts = LvdmParts::default();
    let Some(path) = path else {
        return Ok(parts);
    };
    let bad = |e: String| format!("--lvdm-config {}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if let Some(obj) = v.as_object() {
        if let Some(k) = obj
            .keys()
            .find(|k| !["unet", "vae", "text_encoder"].contains(&k.as_str()))
        {
            return Err(bad(format!(
                "unknown key `{k}` (expected unet, vae, text_encoder)"
            )));
        }
    }
    if let Some(u) = v.get("unet") {
        parts.unet = serde_json::from_value(u.clone()).map_err(|e| bad(format!("unet: {e}")))?;
        parts
            .unet
            .validate()
            .map_err(|e| bad(format!("unet: {e}")))?;
    }
    if let Some(vae) = v.get("vae") {
        parts.vae = selfcascade_sd::vae::AutoencoderKLConfig::from_json(&vae.to_string(), "vae")
            .map_err(|e| bad(e.to_string()))?;
    }
    if let Some(te) = v.get("text_encoder") {
        parts.text_encoder =
            serde_json::from_value(te.clone()).map_err(|e| bad(format!("text_encoder: {e}")))?;
    }
    Ok(parts)
}

/// `OUT-frame{i:03}.png` beside `out`.
fn frame_path(out: &Path, i: usize) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{stem}-frame{i:03}.png"))
}

/// Writes `frames` as an endlessly looping animation at `fps`, GIF or APNG by `out`'s extension,
/// atomically.
pub(crate) fn write_animation(out: &Path, frames: &[RgbImage], fps: u16) -> CliResult {
    let first = frames.first().ok_or("no frames to write")?;
    let (w, h) = (first.width, first.height);
    if frames.iter().any(|f| (f.width, f.height) != (w, h)) {
        return Err("internal error: frames of different sizes".into());
    }
    match format_of(out)? {
        Format::Apng => write_atomic(out, |file| {
            let io = std::io::Error::other;
            let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_animated(frames.len() as u32, 0).map_err(io)?;
            enc.set_frame_delay(1, fps).map_err(io)?;
            let mut writer = enc.write_header().map_err(io)?;
            for f in frames {
                writer.write_image_data(&f.pixels).map_err(io)?;
            }
            writer.finish().map_err(io)
        }),
        Format::Gif => {
            let (gw, gh) = (
                u16::try_from(w).map_err(|_| format!("{w} px is too wide for a GIF"))?,
                u16::try_from(h).map_err(|_| format!("{h} px is too tall for a GIF"))?,
            );
            // GIF delays are in hundredths of a second.
            let delay = (100.0 / fps as f64).round().max(1.0) as u16;
            write_atomic(out, |file| {
                let io = std::io::Error::other;
                let mut enc =
                    gif::Encoder::new(std::io::BufWriter::new(file), gw, gh, &[]).map_err(io)?;
                enc.set_repeat(gif::Repeat::Infinite).map_err(io)?;
                for f in frames {
                    let mut frame = gif::Frame::from_rgb_speed(gw, gh, &f.pixels, 10);
                    frame.delay = delay;
                    enc.write_frame(&frame).map_err(io)?;
                }
                Ok(())
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize) -> Vec<RgbImage> {
        (0..n)
            .map(|i| RgbImage {
                width: 6,
                height: 4,
                pixels: (0..72).map(|p| ((p * 7 + i * 40) % 256) as u8).collect(),
            })
            .collect()
    }

    #[test]
    fn apng_holds_every_frame_exactly() {
        let dir = std::env::temp_dir().join(format!("sc-apng-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.png");
        let want = frames(3);
        write_animation(&path, &want, 8).unwrap();
        let mut dec =
            png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()))
                .read_info()
                .unwrap();
        let actl = dec.info().animation_control().unwrap();
        assert_eq!((actl.num_frames, actl.num_plays), (3, 0));
        let mut buf = vec![0; dec.output_buffer_size().unwrap()];
        for f in &want {
            let info = dec.next_frame(&mut buf).unwrap();
            assert_eq!(&buf[..info.buffer_size()], &f.pixels[..]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gif_has_every_frame_and_loops() {
        let dir = std::env::temp_dir().join(format!("sc-gif-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.gif");
        write_animation(&path, &frames(4), 10).unwrap();
        let mut opts = gif::DecodeOptions::new();
        opts.set_color_output(gif::ColorOutput::RGBA);
        let mut dec = opts.read_info(std::fs::File::open(&path).unwrap()).unwrap();
        let mut n = 0;
        while let Some(frame) = dec.read_next_frame().unwrap() {
            assert_eq!((frame.width, frame.height, frame.delay), (6, 4, 10));
            n += 1;
        }
        assert_eq!(n, 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn other_extensions_are_refused() {
        let err = format_of(Path::new("out.mp4")).unwrap_err();
        assert!(err.contains(".gif"), "{err}");
    }
}

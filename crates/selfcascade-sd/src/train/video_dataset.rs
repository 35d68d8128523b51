//! Training clips for a video UNet's feature upsamplers: folders of frames with a caption, cut to a
//! fixed number of frames, resized and cropped alike, VAE-encoded frame by frame, with a pivot clip at
//! half the frame size; latents cached on disk like the images'.

use super::data::{Conditioning, TrainingExample, TrainingSet};
use super::dataset::{cached, image_tensor, load_rgb, resize_and_crop, stamp, IMAGE_EXTENSIONS};
use super::PivotSource;
use crate::error::{Error, Result};
use crate::pipeline::{GenerateRequest, Method, TextToVideo};
use crate::unet::fold_frames;
use burn::tensor::{backend::Backend, Tensor};
use image::imageops::FilterType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use selfcascade_core::{SeededNoise, Size};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One clip of a video data folder.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoClip {
    /// The clip's folder.
    pub folder: PathBuf,
    /// Its frames (PNG/JPEG files), in order.
    pub frames: Vec<PathBuf>,
    /// Its caption.
    pub caption: String,
}

/// Lists a video data folder: every sub-folder holding PNG/JPEG frames (taken in file-name order,
/// e.g. as `ffmpeg -i clip.mp4 clip/%04d.png` writes them) is a clip, captioned by `<folder>.txt`
/// beside it or `caption.txt` inside it. Sorted by folder.
pub fn scan_video_dataset(dir: &Path) -> Result<Vec<VideoClip>> {
    let mut clips = Vec::new();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let folder = entry.map_err(|e| Error::io(dir, e))?.path();
        if !folder.is_dir() {
            continue;
        }
        let mut frames: Vec<PathBuf> = std::fs::read_dir(&folder)
            .map_err(|e| Error::io(&folder, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        if frames.is_empty() {
            continue;
        }
        frames.sort();
        let beside = folder.with_extension("txt");
        let caption = std::fs::read_to_string(&beside)
            .or_else(|_| std::fs::read_to_string(folder.join("caption.txt")));
        match caption {
            Ok(caption) => clips.push(VideoClip {
                folder,
                frames,
                caption: caption.trim().to_string(),
            }),
            Err(_) => missing.push(beside.display().to_string()),
        }
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(Error::Input(format!(
            "{}: {} clip(s) have no caption: {} (write it into <clip>.txt beside the clip's folder or \
             caption.txt inside it)",
            dir.display(),
            missing.len(),
            missing.join(", ")
        )));
    }
    if clips.is_empty() {
        return Err(Error::Input(format!(
            "{}: no training clips (sub-folders of PNG or JPEG frames, each with a caption)",
            dir.display()
        )));
    }
    clips.sort_by(|a, b| a.folder.cmp(&b.folder));
    Ok(clips)
}

/// How [`prepare_video_training_set`] turns clips into latents.
#[derive(Debug, Clone)]
pub struct VideoPrepareOptions {
    /// The high-resolution frame size in pixels (the pivot clip's frames are half of it).
    pub size: Size,
    /// Frames per training clip.
    pub frames: usize,
    /// Take every `frame_stride`-th frame of the source clip (≥ 1).
    pub frame_stride: usize,
    /// Where pivots come from: [`PivotSource::Downsampled`] (each frame at half the size) or
    /// [`PivotSource::Generated`] (the base model's video of the caption at half the size).
    pub pivot: PivotSource,
    /// Folder of cached latents (created when needed); `None` encodes every time.
    pub cache: Option<PathBuf>,
    /// Seed of the clip windows and crops (and of generated pivots).
    pub seed: u64,
}

/// The training set of `clips` for a text-to-video model: from each clip a window of
/// `options.frames` frames (every `frame_stride`-th, at a seeded random start), each frame resized
/// and cropped to `options.size` with one crop per clip, VAE-encoded (frame by frame) into a latent
/// `[F, C, H, W]`, with its pivot `[F, C, H/2, W/2]`; each distinct caption encoded once, and the
/// empty caption. Latents are cached in `options.cache` as for images (the key covers every frame
/// file, the size, window, pivot source, seed and model). `on_item(done, total)` is called after each
/// clip.
pub fn prepare_video_training_set<B: Backend>(
    video: &TextToVideo<B>,
    clips: &[VideoClip],
    options: &VideoPrepareOptions,
    on_item: &mut dyn FnMut(usize, usize),
) -> Result<TrainingSet<B>> {
    let align = 2 * video.alignment();
    let Size { width, height } = options.size;
    if width % align != 0 || height % align != 0 || width == 0 || height == 0 {
        return Err(Error::Input(format!(
            "training frame size {width}×{height}: width and height must be positive multiples of \
             {align} (the pivot is half the size and both must suit the UNet)"
        )));
    }
    if options.frames == 0 || options.frame_stride == 0 {
        return Err(Error::Input(format!(
            "{} frames with stride {}: both must be at least 1",
            options.frames, options.frame_stride
        )));
    }
    if matches!(options.pivot, PivotSource::Files) {
        return Err(Error::Input(
            "pivots from files are for image data; video clips take downsampled or generated pivots"
                .into(),
        ));
    }
    vae(video)?;
    if let Some(dir) = &options.cache {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let encode_text = |caption: &str| -> Result<Conditioning<B>> {
        Ok(Conditioning {
            context: video.encode_prompt(caption, "")?.positive,
            added: None,
        })
    };
    let mut caption_index: HashMap<&str, usize> = HashMap::new();
    let mut captions = Vec::new();
    let mut examples = Vec::with_capacity(clips.len());
    for (i, clip) in clips.iter().enumerate() {
        let caption = match caption_index.get(clip.caption.as_str()) {
            Some(&c) => c,
            None => {
                captions.push(encode_text(&clip.caption)?);
                caption_index.insert(&clip.caption, captions.len() - 1);
                captions.len() - 1
            }
        };
        let (window, crop) = clip_window(clip, i, options)?;
        let key = format!(
            "video-v1|{}|{}x{}|{}|{}|{}|{}",
            window
                .iter()
                .map(|p| stamp(p))
                .collect::<Vec<_>>()
                .join(";"),
            width,
            height,
            options.pivot.cache_tag(),
            options.seed,
            i,
            video.folder().display()
        );
        let (latent, pivot) = cached(options.cache.as_deref(), key, video.device(), || {
            encode_clip(video, clip, &window, crop, i, options)
        })?;
        examples.push(TrainingExample {
            latent,
            pivot,
            caption,
        });
        on_item(i + 1, clips.len());
    }
    Ok(TrainingSet {
        examples,
        captions,
        empty_caption: encode_text("")?,
    })
}

/// The frames of clip `index`'s training window (`frames` frames `frame_stride` apart from a seeded
/// random start), and the random stream after that draw, from which the clip's crop is drawn.
fn clip_window(
    clip: &VideoClip,
    index: usize,
    options: &VideoPrepareOptions,
) -> Result<(Vec<PathBuf>, ChaCha8Rng)> {
    let span = (options.frames - 1) * options.frame_stride + 1;
    let n = clip.frames.len();
    if n < span {
        return Err(Error::Input(format!(
            "{}: {n} frames; {} frames with stride {} need at least {span}",
            clip.folder.display(),
            options.frames,
            options.frame_stride
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    rng.set_stream(index as u64);
    let start = rng.random_range(0..=n - span);
    let window = (0..options.frames)
        .map(|k| clip.frames[start + k * options.frame_stride].clone())
        .collect();
    Ok((window, rng))
}

/// The model's VAE, or an error saying training clips need one.
fn vae<B: Backend>(video: &TextToVideo<B>) -> Result<&crate::vae::AutoencoderKL<B>> {
    video.vae.as_ref().ok_or_else(|| {
        Error::Model(format!(
            "{} has no VAE: cannot encode training clips",
            video.folder().display()
        ))
    })
}

/// The scaled latents `[F, C, H, W]` of `frames`, encoded one frame at a time.
fn encode_frames<B: Backend>(
    video: &TextToVideo<B>,
    frames: &[image::RgbImage],
) -> Result<Tensor<B, 4>> {
    let vae = vae(video)?;
    let latents = frames
        .iter()
        .map(|img| {
            let (mean, _) = vae.encode(image_tensor(img, video.device()))?;
            Ok(mean.mul_scalar(vae.scaling_factor()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(latents, 0))
}

fn encode_clip<B: Backend>(
    video: &TextToVideo<B>,
    clip: &VideoClip,
    window: &[PathBuf],
    crop: ChaCha8Rng,
    index: usize,
    options: &VideoPrepareOptions,
) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
    // One crop for every frame: each frame draws its offset from the same stream state.
    let frames = window
        .iter()
        .map(|path| {
            let mut same_crop = crop.clone();
            Ok(resize_and_crop(
                &load_rgb(path)?,
                options.size,
                &mut same_crop,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let latent = encode_frames(video, &frames)?;
    let half = Size::new(options.size.width / 2, options.size.height / 2);
    let pivot = match &options.pivot {
        PivotSource::Generated {
            steps,
            guidance,
            scheduler,
        } => {
            let embeds = video.encode_prompt(&clip.caption, "")?;
            let request = GenerateRequest {
                width: half.width,
                height: half.height,
                method: Method::Direct,
                steps: *steps,
                guidance: *guidance,
                scheduler: *scheduler,
                ..Default::default()
            };
            let mut noise = SeededNoise::new(options.seed ^ (index as u64).rotate_left(32));
            let out = video.generate_latents(
                &embeds,
                &request,
                options.frames,
                &mut noise,
                &mut |_| std::ops::ControlFlow::Continue(()),
            )?;
            fold_frames(out.latent)
        }
        PivotSource::Downsampled | PivotSource::Files => {
            let small: Vec<_> = frames
                .iter()
                .map(|f| {
                    image::imageops::resize(
                        f,
                        half.width as u32,
                        half.height as u32,
                        FilterType::Lanczos3,
                    )
                })
                .collect();
            encode_frames(video, &small)?
        }
    };
    Ok((latent, pivot))
}

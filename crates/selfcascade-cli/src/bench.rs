//! `selfcascade bench-quality`: the paper's Table 1 for a prompt list — every method's images at the
//! target size and the base model's at its own size, then FID_r/KID_r (against real images) and
//! FID_b/KID_b (against the base-size generations), with each method's time per image relative to
//! `direct`.
//!
//! Layout of `--out`: `base/00000.png …`, `{method}/00000.png …` (image i of prompt i, seed
//! `--seed + i`), `timings.json` (seconds spent per method, accumulated over resumed runs),
//! `table.json` and `table.md`. Existing images are kept, so an interrupted run resumes where it
//! stopped; the feature caches of `selfcascade eval` make re-scoring cheap.

use crate::backend::{DeviceArg, DtypeArg};
use crate::eval::FeatureSets;
use crate::generate::{load_upsamplers, resolve_model};
use crate::output::{write_atomic, write_png};
use crate::CliResult;
use burn::tensor::backend::Backend;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use selfcascade_core::scheduler::SchedulerKind;
use selfcascade_core::{SeededNoise, Size};
use selfcascade_eval::features::FeatureOptions;
use selfcascade_eval::metrics::{fid_kid, FidKid, KidOptions};
use selfcascade_eval::resize::Preprocess;
use selfcascade_sd::pipeline::{GenerateRequest, Method, StableDiffusion};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Arguments of `selfcascade bench-quality`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// A diffusers Stable Diffusion folder, or a Hub repo id in the local cache.
    #[arg(long)]
    model: PathBuf,
    /// Prompts: a text file with one prompt per line, or a folder of `.txt` caption files (one prompt
    /// each, in file-name order).
    #[arg(long)]
    prompts: PathBuf,
    /// Use only the first N prompts.
    #[arg(long)]
    limit: Option<usize>,
    /// Target size, WxH (e.g. 1024x1024 for SD 2.1 base: 4× the pixels).
    #[arg(long)]
    size: Size,
    /// Methods, comma-separated: direct, attn-sf, scalecrafter, self-cascade, self-cascade-tuned.
    #[arg(long, default_value = "direct,attn-sf,scalecrafter,self-cascade")]
    methods: String,
    /// Feature upsamplers for self-cascade-tuned (the released upsampler_only.pth or a safetensors file).
    #[arg(long)]
    upsamplers: Option<PathBuf>,
    /// The tuned method injects features while t > t_min.
    #[arg(long, default_value_t = 100.0)]
    t_min: f64,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Real images of the same prompts, for FID_r / KID_r (left out of the table without it).
    #[arg(long)]
    real: Option<PathBuf>,
    /// pytorch-fid's FID Inception weights (pt_inception-2015-12-05-6726825d.pth); without it only
    /// the images and timings are produced.
    #[arg(long)]
    inception: Option<PathBuf>,
    /// Inference steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 7.5)]
    guidance: f64,
    /// Re-noising strength of the later self-cascade stages.
    #[arg(long, default_value_t = 0.7)]
    strength: f64,
    /// ddim (the paper's sampler) | ddpm | euler | config (the model folder's scheduler class).
    #[arg(long, default_value = "ddim")]
    scheduler: String,
    /// DDIM η (default: the method's published one).
    #[arg(long)]
    eta: Option<f64>,
    /// Seed of image 0 (image i uses seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Negative prompt for every image.
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Spread the prompts over this many CUDA devices (0..N−1).
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// f32, f16 or bf16 (half precision on GPUs only).
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// Weight variant to load (e.g. fp16).
    #[arg(long)]
    variant: Option<String>,
    /// Inception preprocessing: clean or lanczos-crop.
    #[arg(long, default_value = "clean")]
    preprocess: String,
    /// KID subsets.
    #[arg(long, default_value_t = 100)]
    kid_subsets: usize,
    /// Do not draw progress bars.
    #[arg(long)]
    quiet: bool,
}

/// Seconds spent generating, per method, over every (resumed) run.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Timing {
    images: usize,
    seconds: f64,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
struct Row {
    method: String,
    width: usize,
    height: usize,
    images: usize,
    trainable_parameters: usize,
    seconds_per_image: Option<f64>,
    time_vs_direct: Option<f64>,
    fid_r: Option<f64>,
    kid_r: Option<f64>,
    kid_r_std: Option<f64>,
    fid_b: Option<f64>,
    kid_b: Option<f64>,
    kid_b_std: Option<f64>,
}

/// Reads the prompt list: lines of a file, or the `.txt` files of a folder in name order.
pub fn read_prompts(path: &Path) -> CliResult<Vec<String>> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let prompts: Vec<String> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| read(p).map(|t| t.trim().to_string()))
            .collect::<CliResult<_>>()?
    } else {
        read(path)?
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    if prompts.is_empty() || prompts.iter().any(String::is_empty) {
        return Err(format!(
            "{}: no prompts (expected a text file with one prompt per line, or a folder of non-empty .txt files)",
            path.display()
        ));
    }
    Ok(prompts)
}

/// Runs `selfcascade bench-quality`.
pub fn run(args: BenchArgs) -> CliResult {
    let methods: Vec<Method> = args
        .methods
        .split(',')
        .map(|m| {
            m.trim()
                .parse()
                .map_err(|e: selfcascade_sd::Error| e.to_string())
        })
        .collect::<CliResult<_>>()?;
    if methods.contains(&Method::SelfCascadeTuned) && args.upsamplers.is_none() {
        return Err("self-cascade-tuned needs --upsamplers PATH".into());
    }
    let scheduler: Option<SchedulerKind> = match args.scheduler.as_str() {
        "config" => None,
        s => Some(
            s.parse()
                .map_err(|e: selfcascade_core::Error| e.to_string())?,
        ),
    };
    if Preprocess::parse(&args.preprocess).is_none() {
        return Err(format!(
            "--preprocess {}: expected clean or lanczos-crop",
            args.preprocess
        ));
    }
    if args.devices == 0 || (args.devices > 1 && args.device != DeviceArg::Cuda) {
        return Err(format!(
            "--devices {}: give at least 1; more than one is for CUDA GPUs (--device cuda)",
            args.devices
        ));
    }
    let mut prompts = read_prompts(&args.prompts)?;
    if let Some(n) = args.limit {
        prompts.truncate(n);
    }
    let mut args = args;
    args.model = resolve_model(&args.model, args.variant.as_deref())?;
    std::fs::create_dir_all(&args.out)
        .map_err(|e| format!("cannot create {}: {e}", args.out.display()))?;
    let bench = Bench {
        args,
        methods,
        scheduler,
        prompts,
    };
    match (bench.args.device, bench.args.dtype) {
        (DeviceArg::Cpu, DtypeArg::F32) => bench.run::<burn::backend::Flex>(vec![Default::default()]),
        (DeviceArg::Cpu, _) => {
            Err("half precision (--dtype f16/bf16) is for GPUs; use --dtype f32 on the CPU".into())
        }
        #[cfg(feature = "cuda")]
        (DeviceArg::Cuda, dtype) => {
            let gpus: Vec<burn::backend::cuda::CudaDevice> = (0..bench.args.devices)
                .map(burn::backend::cuda::CudaDevice::new)
                .collect();
            match dtype {
                DtypeArg::F32 => bench.run::<burn::backend::Cuda<f32>>(gpus),
                DtypeArg::F16 => bench.run::<burn::backend::Cuda<half::f16>>(gpus),
                DtypeArg::Bf16 => bench.run::<burn::backend::Cuda<half::bf16>>(gpus),
            }
        }
        #[cfg(not(feature = "cuda"))]
        (DeviceArg::Cuda, _) => Err(
            "this selfcascade was built without CUDA support; rebuild with `--features cuda` or use --device cpu"
                .into(),
        ),
    }
}

struct Bench {
    args: BenchArgs,
    methods: Vec<Method>,
    scheduler: Option<SchedulerKind>,
    prompts: Vec<String>,
}

/// A row of generations: `base` (direct at the model's own size) or a method at the target size.
#[derive(Clone, Copy)]
enum Job {
    Base,
    Method(Method),
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::Base => "base",
            Job::Method(m) => m.name(),
        }
    }
}

impl Bench {
    fn jobs(&self) -> Vec<Job> {
        std::iter::once(Job::Base)
            .chain(self.methods.iter().map(|&m| Job::Method(m)))
            .collect()
    }

    fn image_path(&self, job: Job, i: usize) -> PathBuf {
        self.args.out.join(job.name()).join(format!("{i:05}.png"))
    }

    fn run<B: Backend>(&self, devices: Vec<B::Device>) -> CliResult {
        for job in self.jobs() {
            let dir = self.args.out.join(job.name());
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let todo: usize = self
            .jobs()
            .iter()
            .map(|&j| {
                (0..self.prompts.len())
                    .filter(|&i| !self.image_path(j, i).exists())
                    .count()
            })
            .sum();
        let bar = bar(self.args.quiet, todo, "generating")?;
        let timings = Mutex::new(self.read_timings());
        let parameters = Mutex::new(0usize);
        let n = devices.len();
        let results: Vec<CliResult> = std::thread::scope(|s| {
            let handles: Vec<_> = devices
                .into_iter()
                .enumerate()
                .map(|(d, device)| {
                    let (bar, timings, parameters) = (&bar, &timings, &parameters);
                    s.spawn(move || self.worker::<B>(device, d, n, bar, timings, parameters))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a generation thread panicked".into()))
                })
                .collect()
        });
        bar.finish_and_clear();
        // Timings of the images made before a failure are kept, so a resumed run reports them.
        let timings = timings.into_inner().unwrap_or_default();
        self.write_timings(&timings)?;
        results.into_iter().collect::<CliResult<Vec<()>>>()?;
        let parameters = parameters.into_inner().unwrap_or(0);
        self.score::<B>(&timings, parameters)
    }

    /// Generates the missing images of prompts `d, d + n, …` on `device`.
    fn worker<B: Backend>(
        &self,
        device: B::Device,
        d: usize,
        n: usize,
        bar: &ProgressBar,
        timings: &Mutex<BTreeMap<String, Timing>>,
        parameters: &Mutex<usize>,
    ) -> CliResult {
        let a = &self.args;
        let mut sd = StableDiffusion::<B>::load(&a.model, a.variant.as_deref(), &device)
            .map_err(|e| e.to_string())?;
        if let (Some(path), true) = (
            &a.upsamplers,
            self.methods.contains(&Method::SelfCascadeTuned),
        ) {
            let up = load_upsamplers::<B>(path, &sd.unet, &device)?;
            if let Ok(mut p) = parameters.lock() {
                *p = up.trainable_parameters();
            }
            sd.set_feature_upsampler(up, a.t_min)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let base = sd.base_size();
        for job in self.jobs() {
            let (method, size) = match job {
                Job::Base => (Method::Direct, base),
                Job::Method(m) => (m, a.size),
            };
            let request = GenerateRequest {
                width: size.width,
                height: size.height,
                method,
                steps: a.steps,
                guidance: a.guidance,
                strength: a.strength,
                scheduler: self.scheduler,
                eta: a.eta,
                keep_stages: false,
            };
            for i in (d..self.prompts.len()).step_by(n) {
                let path = self.image_path(job, i);
                if path.exists() {
                    continue;
                }
                bar.set_message(format!("{} {size}", job.name()));
                let start = Instant::now();
                let embeds = sd
                    .encode_prompt(&self.prompts[i], &a.negative_prompt)
                    .map_err(|e| e.to_string())?;
                let mut noise = SeededNoise::new(a.seed + i as u64);
                let out = sd
                    .generate_latents(&embeds, &request, &mut noise, &mut |_| {
                        std::ops::ControlFlow::Continue(())
                    })
                    .map_err(|e| format!("{} of prompt {i}: {e}", job.name()))?;
                let images = sd.decode(out.latent).map_err(|e| e.to_string())?;
                let seconds = start.elapsed().as_secs_f64();
                let img = &images[0];
                let meta = vec![
                    ("prompt".to_string(), self.prompts[i].clone()),
                    ("seed".to_string(), (a.seed + i as u64).to_string()),
                    ("method".to_string(), method.name().to_string()),
                    ("size".to_string(), size.to_string()),
                    ("steps".to_string(), a.steps.to_string()),
                    ("guidance".to_string(), a.guidance.to_string()),
                    (
                        "software".to_string(),
                        format!("selfcascade {}", env!("CARGO_PKG_VERSION")),
                    ),
                ];
                write_png(
                    &path,
                    img.width as u32,
                    img.height as u32,
                    &img.pixels,
                    &meta,
                )?;
                if let Ok(mut t) = timings.lock() {
                    let e = t.entry(job.name().to_string()).or_default();
                    e.images += 1;
                    e.seconds += seconds;
                }
                bar.inc(1);
            }
        }
        Ok(())
    }

    fn timings_path(&self) -> PathBuf {
        self.args.out.join("timings.json")
    }

    fn read_timings(&self) -> BTreeMap<String, Timing> {
        std::fs::read_to_string(self.timings_path())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn write_timings(&self, timings: &BTreeMap<String, Timing>) -> CliResult {
        let text = serde_json::to_string_pretty(timings).map_err(|e| e.to_string())?;
        write_atomic(&self.timings_path(), |f| {
            std::io::Write::write_all(f, text.as_bytes())
        })
    }

    /// FID/KID of every method and the table files.
    fn score<B: Backend>(
        &self,
        timings: &BTreeMap<String, Timing>,
        parameters: usize,
    ) -> CliResult {
        let a = &self.args;
        let per_image = |name: &str| {
            timings
                .get(name)
                .filter(|t| t.images > 0)
                .map(|t| t.seconds / t.images as f64)
        };
        let direct = per_image(Method::Direct.name());
        let sets = a.inception.as_ref().map(|inc| {
            FeatureSets::<B>::with(
                Some(inc.clone()),
                FeatureOptions {
                    preprocess: Preprocess::parse(&a.preprocess).unwrap_or_default(),
                    batch_size: 16,
                    cache: true,
                },
                a.quiet,
                Default::default(),
            )
        });
        let kid = KidOptions {
            subsets: a.kid_subsets,
            ..Default::default()
        };
        let (real, base) = match &sets {
            Some(sets) => (
                a.real.as_ref().map(|r| sets.of(r)).transpose()?,
                Some(sets.of(&a.out.join("base"))?),
            ),
            None => (None, None),
        };
        let mut rows = Vec::new();
        for &m in &self.methods {
            let name = m.name();
            let (mut r, mut b): (Option<FidKid>, Option<FidKid>) = (None, None);
            if let Some(sets) = &sets {
                let fake = sets.of(&a.out.join(name))?;
                if let Some(real) = &real {
                    r = Some(
                        fid_kid(real, &fake, kid).map_err(|e| format!("{name} vs real: {e}"))?,
                    );
                }
                if let Some(base) = &base {
                    b = Some(
                        fid_kid(base, &fake, kid).map_err(|e| format!("{name} vs base: {e}"))?,
                    );
                }
            }
            let s = per_image(name);
            rows.push(Row {
                method: name.to_string(),
                width: a.size.width,
                height: a.size.height,
                images: self.prompts.len(),
                trainable_parameters: if m == Method::SelfCascadeTuned {
                    parameters
                } else {
                    0
                },
                seconds_per_image: s,
                time_vs_direct: s.zip(direct).map(|(s, d)| s / d),
                fid_r: r.map(|x| x.fid),
                kid_r: r.map(|x| x.kid),
                kid_r_std: r.map(|x| x.kid_std),
                fid_b: b.map(|x| x.fid),
                kid_b: b.map(|x| x.kid),
                kid_b_std: b.map(|x| x.kid_std),
            });
        }
        let table = serde_json::json!({
            "model": a.model.display().to_string(),
            "size": a.size.to_string(),
            "prompts": self.prompts.len(),
            "steps": a.steps,
            "guidance": a.guidance,
            "seed": a.seed,
            "preprocess": a.preprocess,
            "rows": rows,
        });
        let json = serde_json::to_string_pretty(&table).map_err(|e| e.to_string())?;
        write_atomic(&a.out.join("table.json"), |f| {
            std::io::Write::write_all(f, json.as_bytes())
        })?;
        let md = markdown(&rows);
        write_atomic(&a.out.join("table.md"), |f| {
            std::io::Write::write_all(f, md.as_bytes())
        })?;
        print!("{md}");
        Ok(())
    }
}

/// The table in the layout of the paper's Table 1.
fn markdown(rows: &[Row]) -> String {
    let f =
        |v: Option<f64>, digits: usize| v.map_or("–".to_string(), |v| format!("{v:.digits$}"));
    let mut s = String::from(
        "| method | size | trainable params | infer time | FID_r | KID_r | FID_b | KID_b |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {}x{} | {} | {} | {} | {} | {} | {} |\n",
            r.method,
            r.width,
            r.height,
            r.trainable_parameters,
            r.time_vs_direct.map_or("–".into(), |t| format!("{t:.2}×")),
            f(r.fid_r, 2),
            f(r.kid_r, 4),
            f(r.fid_b, 2),
            f(r.kid_b, 4),
        ));
    }
    s
}

fn bar(quiet: bool, len: usize, what: &str) -> CliResult<ProgressBar> {
    if quiet {
        return Ok(ProgressBar::hidden());
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{msg}} [{{bar:30}}] {{pos}}/{{len}} images, {{elapsed}} elapsed, ETA {{eta}}"
        ))
        .map_err(|e| e.to_string())?
        .progress_chars("=> "),
    );
    Ok(bar)
}

//! `selfcascade eval`: Inception features of image folders, and FID/KID between two sets (clean-fid's
//! protocol).

use crate::backend::{dispatch, BackendJob, DeviceArg, DtypeArg};
use crate::CliResult;
use burn::tensor::backend::Backend;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use selfcascade_eval::features::{
    folder_features, load_features, save_features, FeatureOptions, InceptionFeatures,
};
use selfcascade_eval::metrics::{fid_kid, Features, FidKid, KidOptions};
use selfcascade_eval::resize::Preprocess;
use std::path::{Path, PathBuf};

/// `selfcascade eval …`.
#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Inception pool3 features [N, 2048] of a folder's images (file-name order) to a safetensors file.
    Features(FeaturesArgs),
    /// FID and KID of generated images against reference images.
    FidKid(FidKidArgs),
}

/// How images become features (shared by both subcommands).
#[derive(Args, Debug, Clone)]
pub struct FeatureFlags {
    /// pytorch-fid's FID Inception weights (pt_inception-2015-12-05-6726825d.pth), or a safetensors
    /// file with the same tensors.
    #[arg(long)]
    inception: Option<PathBuf>,
    /// clean (clean-fid: bicubic on float channels straight to 299×299) or lanczos-crop (shorter side
    /// to 299 with Lanczos, centre crop).
    #[arg(long, default_value = "clean")]
    preprocess: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Neither read nor write the per-folder feature cache.
    #[arg(long)]
    no_cache: bool,
    /// cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Do not draw a progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Arguments of `selfcascade eval features`.
#[derive(Args, Debug, Clone)]
pub struct FeaturesArgs {
    /// Folder of PNG/JPEG images (searched recursively).
    #[arg(long)]
    images: PathBuf,
    /// The safetensors file to write (tensor `features`, float32 [N, 2048]).
    #[arg(long)]
    output: PathBuf,
    #[command(flatten)]
    flags: FeatureFlags,
}

/// Arguments of `selfcascade eval fid-kid`.
#[derive(Args, Debug, Clone)]
pub struct FidKidArgs {
    /// Reference images: a folder, or a features file written by `eval features`.
    #[arg(long)]
    real: PathBuf,
    /// Generated images: a folder, or a features file.
    #[arg(long)]
    fake: PathBuf,
    /// KID subsets.
    #[arg(long, default_value_t = 100)]
    kid_subsets: usize,
    /// Largest KID subset size (the size used is min(n_real, n_fake, this)).
    #[arg(long, default_value_t = 1000)]
    kid_subset_size: usize,
    /// Seed of the KID subset draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print {"fid", "kid", "kid_std", "n_real", "n_fake"} as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    flags: FeatureFlags,
}

/// Runs `selfcascade eval …`.
pub fn run(cmd: EvalCommand) -> CliResult {
    let flags = match &cmd {
        EvalCommand::Features(a) => &a.flags,
        EvalCommand::FidKid(a) => &a.flags,
    };
    let device = flags.device;
    dispatch(device, DtypeArg::F32, EvalJob(cmd))
}

struct EvalJob(EvalCommand);

impl BackendJob for EvalJob {
    fn run<B: Backend>(self, device: B::Device) -> CliResult {
        match self.0 {
            EvalCommand::Features(args) => {
                let sets = FeatureSets::<B>::new(&args.flags, device)?;
                let f = sets.of_folder(&args.images)?;
                save_features(&args.output, &f, None).map_err(|e| e.to_string())?;
                if !args.flags.quiet {
                    eprintln!(
                        "{} features of {} images → {}",
                        f.dim,
                        f.n,
                        args.output.display()
                    );
                }
                Ok(())
            }
            EvalCommand::FidKid(args) => {
                let sets = FeatureSets::<B>::new(&args.flags, device)?;
                let real = sets.of(&args.real)?;
                let fake = sets.of(&args.fake)?;
                let options = KidOptions {
                    subsets: args.kid_subsets,
                    max_subset_size: args.kid_subset_size,
                    seed: args.seed,
                };
                let score = fid_kid(&real, &fake, options).map_err(|e| e.to_string())?;
                if real.n.min(fake.n) < real.dim && !args.flags.quiet {
                    eprintln!(
                        "warning: fewer images ({}) than feature dimensions ({}): the covariances are \
                         singular and FID is biased upwards; compare only FIDs of equal set sizes",
                        real.n.min(fake.n),
                        real.dim
                    );
                }
                print_score(&score, args.json)
            }
        }
    }
}

fn print_score(score: &FidKid, json: bool) -> CliResult {
    if json {
        println!(
            "{}",
            serde_json::to_string(score).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "FID {:.4}  KID {:.6} ± {:.6}  ({} reference, {} generated images)",
            score.fid, score.kid, score.kid_std, score.n_real, score.n_fake
        );
    }
    Ok(())
}

/// Features of folders (through the Inception, loaded on first use) or of feature files.
pub struct FeatureSets<B: Backend> {
    inception: Option<PathBuf>,
    options: FeatureOptions,
    quiet: bool,
    device: B::Device,
    net: std::cell::OnceCell<InceptionFeatures<B>>,
}

impl<B: Backend> FeatureSets<B> {
    /// Checks the flags; the network is loaded when a folder first needs it.
    pub fn new(flags: &FeatureFlags, device: B::Device) -> CliResult<Self> {
        let preprocess = Preprocess::parse(&flags.preprocess).ok_or_else(|| {
            format!(
                "--preprocess {}: expected clean or lanczos-crop",
                flags.preprocess
            )
        })?;
        if flags.batch_size == 0 {
            return Err("--batch-size must be at least 1".into());
        }
        let options = FeatureOptions {
            preprocess,
            batch_size: flags.batch_size,
            cache: !flags.no_cache,
        };
        Ok(Self::with(
            flags.inception.clone(),
            options,
            flags.quiet,
            device,
        ))
    }

    /// Features through the Inception weights at `inception` (loaded on first use; without them only
    /// feature files can be read).
    pub fn with(
        inception: Option<PathBuf>,
        options: FeatureOptions,
        quiet: bool,
        device: B::Device,
    ) -> Self {
        Self {
            inception,
            options,
            quiet,
            device,
            net: std::cell::OnceCell::new(),
        }
    }

    fn net(&self) -> CliResult<&InceptionFeatures<B>> {
        if let Some(net) = self.net.get() {
            return Ok(net);
        }
        let path = self.inception.as_ref().ok_or(
            "--inception PATH is needed to compute features of image folders: pytorch-fid's \
             pt_inception-2015-12-05-6726825d.pth (download it once from \
             https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth)",
        )?;
        let net = InceptionFeatures::load(path, &self.device).map_err(|e| e.to_string())?;
        Ok(self.net.get_or_init(|| net))
    }

    /// A features file (`.safetensors`) as it is, or a folder's features.
    pub fn of(&self, path: &Path) -> CliResult<Features> {
        if path.is_file() {
            load_features(path).map_err(|e| e.to_string())
        } else {
            self.of_folder(path)
        }
    }

    /// The features of a folder's images, with a progress bar.
    pub fn of_folder(&self, dir: &Path) -> CliResult<Features> {
        let net = self.net()?;
        let bar = if self.quiet {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {pos}/{len} images, {elapsed} elapsed, ETA {eta}",
                )
                .map_err(|e| e.to_string())?
                .progress_chars("=> "),
            );
            bar.set_message(format!("features of {}", dir.display()));
            bar
        };
        let f = folder_features(net, dir, &self.options, &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        })
        .map_err(|e| e.to_string());
        bar.finish_and_clear();
        f
    }
}

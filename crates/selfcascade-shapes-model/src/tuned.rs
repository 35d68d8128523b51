//! The tuned self-cascade on the shapes model: Algorithm 1's training data from rendered scenes, and
//! training a [`LightUpsampler`] with `selfcascade-sd`'s trainer while the shapes UNet stays frozen.
//!
//! The shapes model works in pixel space (no VAE), so a "latent" is the image itself in [−1, 1]. An
//! example is one scene rendered at twice the base size (z₀ʳ) and at the base size (the pivot
//! z₀^{r−1}: the same image at the previous stage's size, the shapes analogue of pivot source (a),
//! a downsampled copy), conditioned on the scene's label; caption dropout uses the null label.

use crate::data::derive_seed;
use crate::error::Result;
use crate::model::ShapesModel;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use selfcascade_sd::train::{
    train, Conditioning, RunDir, StepReport, TrainingExample, TrainingSet, UpsamplerTrainConfig,
    UpsamplerTrainer,
};
use selfcascade_sd::unet::UNet2DConditionModel;
use selfcascade_sd::upsampler::{LightUpsampler, LightUpsamplerConfig};
use selfcascade_shapes::{render_chw, Scene};

/// Stream of [`derive_seed`] reserved for the tuned method's training scenes.
const TUNED_SCENES: u64 = u64::MAX - 7;

fn image<B: Backend>(scene: &Scene, side: usize, device: &B::Device) -> Result<Tensor<B, 4>> {
    let pixels = render_chw(scene, side as u32, side as u32)?;
    Ok(Tensor::from_data(
        TensorData::new(pixels, [1, 3, side, side]),
        device,
    ))
}

/// `examples` scenes (scene i = `Scene::sample(derive_seed(seed, TUNED_SCENES, i))`), each rendered
/// at twice the model's base side and at the base side (the pivot), with its label's conditioning.
pub fn training_set<B: Backend>(
    model: &ShapesModel<B>,
    examples: usize,
    seed: u64,
) -> Result<TrainingSet<B>> {
    let device = model.label_embedding.weight.val().device();
    let base = model.config().image_size;
    let mut set = TrainingSet {
        examples: Vec::with_capacity(examples),
        captions: Vec::with_capacity(examples),
        empty_caption: Conditioning {
            context: model.label_embedding.forward(&[None]),
            added: None,
        },
    };
    for i in 0..examples {
        let scene = Scene::sample(derive_seed(seed, TUNED_SCENES, i as u64));
        set.captions.push(Conditioning {
            context: model.label_embedding.forward(&[Some(scene.label())]),
            added: None,
        });
        set.examples.push(TrainingExample {
            latent: image(&scene, 2 * base, &device)?,
            pivot: image(&scene, base, &device)?,
            caption: i,
        });
    }
    Ok(set)
}

/// Trains a light upsampler for `model` (initialised from `init_seed`) on
/// [`training_set`]`(model, examples, config.seed)` in `run` (resuming when `resume`); returns it
/// with the step reports of this call.
pub fn train_light_upsampler<A: AutodiffBackend>(
    model: &ShapesModel<A::InnerBackend>,
    config: UpsamplerTrainConfig,
    examples: usize,
    init_seed: u64,
    run: &RunDir,
    resume: bool,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<(LightUpsampler<A::InnerBackend>, Vec<StepReport>)> {
    use burn::module::AutodiffModule;
    let device = model.label_embedding.weight.val().device();
    let data = training_set(model, examples, config.seed)?;
    let unet = UNet2DConditionModel::<A>::from_inner(model.unet.clone());
    let up = LightUpsampler::<A>::init(&LightUpsamplerConfig::for_unet(&unet), init_seed, &device)?;
    let scheduler = model.scheduler_config()?;
    let mut trainer = UpsamplerTrainer::new(unet, up, &scheduler, config, &device)?;
    let reports = train(&mut trainer, &data, run, resume, on_step)?;
    Ok((trainer.into_upsampler().valid(), reports))
}

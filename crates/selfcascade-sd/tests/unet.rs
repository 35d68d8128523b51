//! UNet2DConditionModel against diffusers (fixtures written by `tools/oracle/models.py`), strict
//! loading, config validation and the method's hooks.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use selfcascade_sd::load::{TensorStore, Weights};
use selfcascade_sd::unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetHooks};
use std::path::{Path, PathBuf};

type B = Flex;

fn fixture(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(family)
}

struct Io {
    store: TensorStore,
}

impl Io {
    fn open(path: &Path) -> Self {
        Self {
            store: TensorStore::open(&[path.to_path_buf()]).unwrap(),
        }
    }
    fn has(&self, name: &str) -> bool {
        self.store.shape(name).is_some()
    }
    fn values(&self, name: &str) -> Vec<f32> {
        self.store.read(name).unwrap().data
    }
    fn tensor<const D: usize>(&self, name: &str) -> Tensor<B, D> {
        let t = self.store.read(name).unwrap();
        let shape: [usize; D] = t.shape.clone().try_into().unwrap();
        Tensor::from_data(TensorData::new(t.data, shape), &Default::default())
    }
}

/// max|a − b| and the tolerance 1e-4·max(1, max|b|).
fn compare(a: &Tensor<B, 4>, b: &Tensor<B, 4>) -> (f32, f32) {
    assert_eq!(a.dims(), b.dims());
    let a = a.clone().into_data().to_vec::<f32>().unwrap();
    let b = b.clone().into_data().to_vec::<f32>().unwrap();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(1f32, f32::max);
    (diff, 1e-4 * scale)
}

fn parity(family: &str, variant: Option<&str>) {
    let dir = fixture(family);
    let unet = UNet2DConditionModel::<B>::load(&dir.join("unet"), variant, &Default::default())
        .unwrap_or_else(|e| panic!("{family}: {e}"));
    let io = Io::open(&dir.join("io/unet.safetensors"));
    for suffix in ["", "_b1"] {
        let name = |n: &str| format!("{n}{suffix}");
        let timesteps: Vec<f64> = io
            .values(&name("timestep"))
            .iter()
            .map(|t| *t as f64)
            .collect();
        let added = if io.has(&name("text_embeds")) {
            Some((
                io.tensor(&name("text_embeds")),
                io.tensor(&name("time_ids")),
            ))
        } else {
            None
        };
        let out = unet
            .forward(
                io.tensor(&name("sample")),
                &timesteps,
                io.tensor(&name("encoder_hidden_states")),
                added,
                &UNetHooks::default(),
            )
            .unwrap_or_else(|e| panic!("{family}{suffix}: {e}"));
        let (diff, tol) = compare(&out, &io.tensor(&name("out")));
        eprintln!("{family}{suffix}: max |burn − diffusers| = {diff:.3e} (tolerance {tol:.1e})");
        assert!(diff <= tol, "{family}{suffix}: max diff {diff} > {tol}");
    }
}

#[test]
fn sd15_matches_diffusers() {
    parity("sd15", None);
}

#[test]
fn sd21_fp16_variant_matches_diffusers() {
    parity("sd21", Some("fp16"));
}

#[test]
fn sdxl_matches_diffusers() {
    parity("sdxl", None);
}

#[test]
fn random_init_builds_every_family() {
    for family in ["sd15", "sd21", "sdxl"] {
        let config =
            UNet2DConditionConfig::from_file(&fixture(family).join("unet/config.json")).unwrap();
        let weights = Weights::random(7);
        UNet2DConditionModel::<B>::new(&weights.root(&Default::default()), &config).unwrap();
    }
}

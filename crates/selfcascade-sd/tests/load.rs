//! Weight loading: dtypes, variants, shards and strict accounting, on files written here.

use burn::backend::Flex;
use safetensors::tensor::{Dtype, TensorView};
use selfcascade_sd::load::{find_weight_files, open_component, Init, TensorStore, Weights};
use selfcascade_sd::nn::{Conv2d, Linear};
use std::path::{Path, PathBuf};

type B = Flex;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("selfcascade-load-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

#[test]
fn linear_weights_are_transposed_on_load_and_dtypes_convert() {
    let dir = tmpdir("linear");
    // PyTorch layout [out=2, in=3]
    let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
    write(
        &dir.join("model.safetensors"),
        &[
            ("lin.weight", Dtype::F16, vec![2, 3], f16_bytes(&w)),
            ("lin.bias", Dtype::F32, vec![2], f32_bytes(&[0.5, -0.5])),
        ],
    );
    let weights = open_component(&dir, None).unwrap();
    let dev = Default::default();
    let lin = Linear::<B>::new(&weights.root::<B>(&dev).pp("lin"), 3, 2, true).unwrap();
    weights.finish().unwrap();
    let x = burn::tensor::Tensor::<B, 2>::from_floats([[1.0, 0.0, -1.0]], &dev);
    let y = lin.forward(x).into_data().to_vec::<f32>().unwrap();
    assert_eq!(y, vec![1.0 - 3.0 + 0.5, 4.0 - 6.0 - 0.5]);
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_named() {
    let dir = tmpdir("strict");
    write(
        &dir.join("diffusion_pytorch_model.safetensors"),
        &[
            (
                "conv.weight",
                Dtype::F32,
                vec![2, 1, 3, 3],
                f32_bytes(&[0.0; 18]),
            ),
            ("conv.bias", Dtype::F32, vec![2], f32_bytes(&[0.0; 2])),
            ("extra.weight", Dtype::F32, vec![1], f32_bytes(&[0.0])),
        ],
    );
    let dev = Default::default();
    let weights = open_component(&dir, None).unwrap();
    let err = Conv2d::<B>::new(&weights.root::<B>(&dev).pp("conv"), 2, 2, 3, 1, 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv.weight") && err.contains("[2, 1, 3, 3]") && err.contains("[2, 2, 3, 3]"),
        "{err}"
    );
    let weights = open_component(&dir, None).unwrap();
    let err = Conv2d::<B>::new(&weights.root::<B>(&dev).pp("other"), 1, 2, 3, 1, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`other.weight` is missing"), "{err}");
    let weights = open_component(&dir, None).unwrap();
    Conv2d::<B>::new(&weights.root::<B>(&dev).pp("conv"), 1, 2, 3, 1, 1).unwrap();
    let err = weights.finish().unwrap_err().to_string();
    assert!(
        err.contains("extra.weight") && err.contains("1 unexpected"),
        "{err}"
    );
}

#[test]
fn truncated_and_garbage_files_are_errors_not_panics() {
    let dir = tmpdir("corrupt");
    let path = dir.join("model.safetensors");
    write(&path, &[("a", Dtype::F32, vec![64], f32_bytes(&[1.0; 64]))]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let err = TensorStore::open(std::slice::from_ref(&path))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated") || err.contains("not a valid"),
        "{err}"
    );
    std::fs::write(&path, b"garbage").unwrap();
    assert!(TensorStore::open(std::slice::from_ref(&path)).is_err());
    std::fs::write(&path, []).unwrap();
    assert!(TensorStore::open(&[path]).is_err());
}

#[test]
fn variants_and_shards_are_found() {
    let dir = tmpdir("shards");
    write(
        &dir.join("diffusion_pytorch_model.fp16-00001-of-00002.safetensors"),
        &[("a", Dtype::F16, vec![1], f16_bytes(&[1.5]))],
    );
    write(
        &dir.join("diffusion_pytorch_model.fp16-00002-of-00002.safetensors"),
        &[("b", Dtype::F16, vec![1], f16_bytes(&[2.5]))],
    );
    std::fs::write(
        dir.join("diffusion_pytorch_model.safetensors.index.fp16.json"),
        r#"{"metadata":{},"weight_map":{"a":"diffusion_pytorch_model.fp16-00001-of-00002.safetensors","b":"diffusion_pytorch_model.fp16-00002-of-00002.safetensors"}}"#,
    )
    .unwrap();
    let files = find_weight_files(&dir, Some("fp16")).unwrap();
    assert_eq!(files.len(), 2);
    // Without a variant the only variant present is used.
    assert_eq!(find_weight_files(&dir, None).unwrap(), files);
    let err = find_weight_files(&dir, Some("bf16"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bf16"), "{err}");
    let store = TensorStore::open(&files).unwrap();
    assert_eq!(store.read("b").unwrap().data, vec![2.5]);
    let weights = Weights::from_store(store);
    let dev = Default::default();
    let t = weights
        .root::<B>(&dev)
        .tensor("a", [1], Init::Zeros)
        .unwrap();
    assert_eq!(t.into_data().to_vec::<f32>().unwrap(), vec![1.5]);
}

#[test]
fn random_init_is_seeded() {
    let dev = Default::default();
    let a = Weights::random(1)
        .root::<B>(&dev)
        .tensor("w", [8], Init::Uniform(0.5))
        .unwrap();
    let b = Weights::random(1)
        .root::<B>(&dev)
        .tensor("w", [8], Init::Uniform(0.5))
        .unwrap();
    let (a, b) = (
        a.into_data().to_vec::<f32>().unwrap(),
        b.into_data().to_vec::<f32>().unwrap(),
    );
    assert_eq!(a, b);
    assert!(a.iter().all(|v| v.abs() <= 0.5) && a.iter().any(|v| *v != 0.0));
}

#[test]
fn tensors_read_back_unchanged_after_their_pages_are_released() {
    // `TensorStore::read` lets the kernel drop a tensor's mapped pages once copied (madvise DONTNEED,
    // rounded out to whole pages, so neighbours' pages go too): every tensor must still read back exactly,
    // in any order, any number of times.
    let dir = tmpdir("release");
    let path = dir.join("m.safetensors");
    let big: Vec<f32> = (0..100_003).map(|i| (i as f32 * 0.37).sin()).collect();
    let (a, c) = (vec![1.5f32, -2.0, 3.25], vec![7.0f32; 1025]);
    write(
        &path,
        &[
            ("a", Dtype::F32, vec![3], f32_bytes(&a)),
            ("b", Dtype::F32, vec![100_003], f32_bytes(&big)),
            ("c", Dtype::F32, vec![1025], f32_bytes(&c)),
        ],
    );
    let store = TensorStore::open(&[path]).unwrap();
    for _ in 0..2 {
        for (name, want) in [("b", &big), ("a", &a), ("c", &c), ("b", &big)] {
            assert_eq!(&store.read(name).unwrap().data, want, "{name}");
        }
    }
}

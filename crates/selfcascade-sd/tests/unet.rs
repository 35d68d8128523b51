//! UNet2DConditionModel against diffusers (fixtures written by `tools/oracle/models.py`), strict
//! loading, config validation and the method's hooks.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use selfcascade_sd::load::{TensorStore, Weights};
use selfcascade_sd::unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetHooks};
use std::path::{Path, PathBuf};

mod common;
use common::Trivial;

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
fn random_init_builds_every_family_with_every_parameter_a_module_param() {
    use burn::module::Module;
    for family in ["sd15", "sd21", "sdxl"] {
        let config =
            UNet2DConditionConfig::from_file(&fixture(family).join("unet/config.json")).unwrap();
        let weights = Weights::random(7);
        let unet =
            UNet2DConditionModel::<B>::new(&weights.root(&Default::default()), &config).unwrap();
        // diffusers' parameter count (io/meta.json): every weight is a burn `Param` the optimiser sees.
        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(family).join("io/meta.json")).unwrap(),
        )
        .unwrap();
        let expected = meta["parameter_counts"]["unet"].as_u64().unwrap() as usize;
        assert_eq!(unet.num_params(), expected, "{family}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Odd sizes and hooks, against tools/oracle/unet_hooks.py (a small SD-2.1-shaped UNet, latent 20×28).

use selfcascade_core::FeatureUpsampler;
use selfcascade_sd::unet::PivotInjection;
use std::cell::RefCell;
use std::collections::BTreeMap;

fn hooks_fixture() -> (UNet2DConditionModel<B>, Io) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_hooks");
    let unet =
        UNet2DConditionModel::<B>::load(&dir.join("unet"), None, &Default::default()).unwrap();
    (unet, Io::open(&dir.join("io.safetensors")))
}

fn run(unet: &UNet2DConditionModel<B>, io: &Io, hooks: &UNetHooks<'_, B>) -> Tensor<B, 4> {
    let t: Vec<f64> = io.values("timestep").iter().map(|t| *t as f64).collect();
    unet.forward(
        io.tensor("sample"),
        &t,
        io.tensor("encoder_hidden_states"),
        None,
        hooks,
    )
    .unwrap()
}

fn assert_close(label: &str, out: &Tensor<B, 4>, expected: &Tensor<B, 4>) {
    let (diff, tol) = compare(out, expected);
    eprintln!("{label}: max |burn − PyTorch| = {diff:.3e} (tolerance {tol:.1e})");
    assert!(diff <= tol, "{label}: max diff {diff} > {tol}");
}

#[test]
fn odd_latent_sizes_forward_upsample_sizes_like_diffusers() {
    let (unet, io) = hooks_fixture();
    assert_eq!(io.tensor::<4>("sample").dims(), [2, 4, 20, 28]);
    assert_close(
        "plain 20×28",
        &run(&unet, &io, &UNetHooks::default()),
        &io.tensor("out_plain"),
    );
}

#[test]
fn attn_sf_scales_self_attention_only() {
    let (unet, io) = hooks_fixture();
    let seen = RefCell::new(Vec::new());
    let scale = |n: usize| {
        seen.borrow_mut().push(n);
        ((n as f64).ln() / (n as f64 / 4.0).ln()).sqrt()
    };
    let hooks = UNetHooks {
        self_attention_scale: Some(&scale),
        ..Default::default()
    };
    assert_close(
        "Attn-SF",
        &run(&unet, &io, &hooks),
        &io.tensor("out_attn_sf"),
    );
    // One call per transformer (self-attention layers only): 3 down, 1 mid, 3×2 up.
    let mut seen = seen.into_inner();
    seen.sort_unstable();
    assert_eq!(seen, vec![12, 35, 35, 35, 140, 140, 140, 560, 560, 560]);
    // A factor of 1 changes nothing.
    let one = |_: usize| 1.0;
    let hooks = UNetHooks {
        self_attention_scale: Some(&one),
        ..Default::default()
    };
    assert_close(
        "Attn-SF ×1",
        &run(&unet, &io, &hooks),
        &io.tensor("out_plain"),
    );
}

#[test]
fn redilation_matches_scalecrafter_at_integer_and_fractional_factors() {
    let (unet, io) = hooks_fixture();
    let map: BTreeMap<&str, f64> = [
        ("down_blocks.1.resnets.0.conv1", 2.0),
        ("down_blocks.1.downsamplers.0.conv", 2.0),
        ("down_blocks.2.resnets.0.conv2", 1.5),
        ("down_blocks.2.downsamplers.0.conv", 1.5),
        ("mid_block.resnets.0.conv2", 3.0),
        ("up_blocks.0.resnets.1.conv1", 2.5),
        ("up_blocks.0.upsamplers.0.conv", 2.0),
        ("up_blocks.2.resnets.0.conv2", 2.0),
    ]
    .into_iter()
    .collect();
    let asked = RefCell::new(Vec::new());
    let dilation = |name: &str| {
        asked.borrow_mut().push(name.to_string());
        map.get(name).copied()
    };
    let hooks = UNetHooks {
        dilation: Some(&dilation),
        ..Default::default()
    };
    assert_close(
        "re-dilated",
        &run(&unet, &io, &hooks),
        &io.tensor("out_dilated"),
    );
    // The hook is asked about exactly the 3×3 convolutions of ResNets, downsamplers and upsamplers,
    // by their diffusers names.
    let store = TensorStore::open(&[Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/unet_hooks/unet/diffusion_pytorch_model.safetensors")])
    .unwrap();
    let mut expected: Vec<String> = store
        .names()
        .filter(|n| {
            n.ends_with(".weight") && store.shape(n).is_some_and(|s| s.len() == 4 && s[2] == 3)
        })
        .map(|n| n.trim_end_matches(".weight").to_string())
        .filter(|n| n != "conv_in" && n != "conv_out")
        .collect();
    expected.sort();
    let mut asked = asked.into_inner();
    asked.sort();
    assert_eq!(
        asked, expected,
        "one question per convolution and forward pass"
    );
    // Invalid factors are input errors.
    let bad = |_: &str| Some(0.0);
    let hooks = UNetHooks {
        dilation: Some(&bad),
        ..Default::default()
    };
    let t: Vec<f64> = io.values("timestep").iter().map(|t| *t as f64).collect();
    let err = unet
        .forward(
            io.tensor("sample"),
            &t,
            io.tensor("encoder_hidden_states"),
            None,
            &hooks,
        )
        .unwrap_err();
    assert!(matches!(err, selfcascade_sd::Error::Input(_)), "{err}");
}

#[test]
fn pivot_injection_matches_reference() {
    let (unet, io) = hooks_fixture();
    assert_eq!(unet.injection_channels(), vec![16, 24, 32, 32]);
    let up = Trivial {
        channels: unet.injection_channels(),
        c: vec![0.5, -0.25, 0.75, 0.3],
        k: 0.01,
    };
    let hooks = UNetHooks {
        pivot: Some(PivotInjection {
            latent: io.tensor("pivot"),
            upsampler: &up,
        }),
        ..Default::default()
    };
    assert_close("pivot", &run(&unet, &io, &hooks), &io.tensor("out_pivot"));
}

#[test]
fn pivot_injection_of_zeros_is_the_plain_forward_and_bad_pivots_are_errors() {
    let (unet, io) = hooks_fixture();
    let plain = run(&unet, &io, &UNetHooks::default());
    let zero = Trivial {
        channels: unet.injection_channels(),
        c: vec![0.0; 4],
        k: 0.0,
    };
    let with = |latent: Tensor<B, 4>, up: &dyn FeatureUpsampler<B>| {
        let t: Vec<f64> = io.values("timestep").iter().map(|t| *t as f64).collect();
        let hooks = UNetHooks {
            pivot: Some(PivotInjection {
                latent,
                upsampler: up,
            }),
            ..Default::default()
        };
        unet.forward(
            io.tensor("sample"),
            &t,
            io.tensor("encoder_hidden_states"),
            None,
            &hooks,
        )
    };
    let out = with(io.tensor("pivot"), &zero).unwrap();
    assert_eq!(compare(&out, &plain).0, 0.0);
    let nonzero = Trivial {
        channels: unet.injection_channels(),
        c: vec![0.1; 4],
        k: 0.0,
    };
    assert!(compare(&with(io.tensor("pivot"), &nonzero).unwrap(), &plain).0 > 1e-3);

    // Wrong size, batch or channels of the pivot.
    for shape in [
        [2, 4, 20, 28],
        [2, 4, 10, 15],
        [1, 4, 10, 14],
        [2, 3, 10, 14],
    ] {
        let err = with(Tensor::zeros(shape, &Default::default()), &zero).unwrap_err();
        assert!(
            matches!(&err, selfcascade_sd::Error::Input(m) if m.contains("pivot latent")),
            "{shape:?}: {err}"
        );
    }
    // Upsamplers sized for another UNet.
    let wrong = Trivial {
        channels: vec![16, 24, 32],
        c: vec![0.0; 3],
        k: 0.0,
    };
    let err = with(io.tensor("pivot"), &wrong).unwrap_err().to_string();
    assert!(
        err.contains("[16, 24, 32]") && err.contains("[16, 24, 32, 32]"),
        "{err}"
    );
    // An upsampler returning the wrong size.
    struct Bad;
    impl FeatureUpsampler<B> for Bad {
        fn num_points(&self) -> usize {
            4
        }
        fn trainable_parameters(&self) -> usize {
            0
        }
        fn channels(&self, n: usize) -> usize {
            [16, 24, 32, 32][n]
        }
        fn upsample(
            &self,
            _: usize,
            h: Tensor<B, 4>,
            _: Tensor<B, 2>,
            _: (usize, usize),
        ) -> selfcascade_core::Result<Tensor<B, 4>> {
            Ok(h)
        }
    }
    let err = with(io.tensor("pivot"), &Bad).unwrap_err().to_string();
    assert!(err.contains("feature upsampler 0"), "{err}");
}

// ---------------------------------------------------------------------------------------------------
// Strict loading, config validation, input errors.

use safetensors::tensor::{Dtype, TensorView};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("selfcascade-unet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the SD 1.5 fixture UNet with its tensors passed through `edit` (name, shape, values).
fn edited_unet(
    name: &str,
    edit: impl Fn(Vec<(String, Vec<usize>, Vec<f32>)>) -> Vec<(String, Vec<usize>, Vec<f32>)>,
) -> PathBuf {
    let src = fixture("sd15").join("unet");
    let dir = tmpdir(name);
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let store = TensorStore::open(&[src.join("diffusion_pytorch_model.safetensors")]).unwrap();
    let tensors: Vec<_> = store
        .names()
        .map(|n| {
            let t = store.read(n).unwrap();
            (n.to_string(), t.shape, t.data)
        })
        .collect();
    let tensors = edit(tensors);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(
        views,
        None,
        &dir.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match UNet2DConditionModel::<B>::load(dir, None, &Default::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loading_is_strict_and_names_the_tensor() {
    const T: &str = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight";
    // Unchanged copy loads.
    let dir = edited_unet("same", |t| t);
    UNet2DConditionModel::<B>::load(&dir, None, &Default::default()).unwrap();
    // Removed.
    let dir = edited_unet("removed", |t| {
        t.into_iter().filter(|(n, _, _)| n != T).collect()
    });
    let err = load_err(&dir);
    assert!(err.contains(T) && err.contains("missing"), "{err}");
    // Renamed: the expected name is missing.
    let dir = edited_unet("renamed", |t| {
        t.into_iter()
            .map(|(n, s, v)| {
                if n == T {
                    (format!("{n}_old"), s, v)
                } else {
                    (n, s, v)
                }
            })
            .collect()
    });
    let err = load_err(&dir);
    assert!(err.contains(T), "{err}");
    // An extra tensor the config does not use.
    let dir = edited_unet("extra", |mut t| {
        t.push((
            "down_blocks.9.resnets.0.conv1.bias".into(),
            vec![4],
            vec![0.0; 4],
        ));
        t
    });
    let err = load_err(&dir);
    assert!(
        err.contains("down_blocks.9.resnets.0.conv1.bias") && err.contains("unexpected"),
        "{err}"
    );
    // Reshaped (same element count): a cross-attention key projection [24, 32] stored transposed.
    const K: &str = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight";
    let dir = edited_unet("reshaped", |t| {
        t.into_iter()
            .map(|(n, s, v)| {
                if n == K {
                    (n, vec![s[1], s[0]], v)
                } else {
                    (n, s, v)
                }
            })
            .collect()
    });
    let err = load_err(&dir);
    assert!(
        err.contains(K) && err.contains("[32, 24]") && err.contains("[24, 32]"),
        "{err}"
    );
    // A 1×1-conv projection given as a linear weight (SD 1.x uses convolutions).
    const P: &str = "down_blocks.0.attentions.0.proj_in.weight";
    let dir = edited_unet("proj", |t| {
        t.into_iter()
            .map(|(n, s, v)| {
                if n == P {
                    (n, s[..2].to_vec(), v)
                } else {
                    (n, s, v)
                }
            })
            .collect()
    });
    let err = load_err(&dir);
    assert!(err.contains(P), "{err}");
}

fn config_with(
    edit: impl Fn(&mut serde_json::Map<String, serde_json::Value>),
) -> selfcascade_sd::Result<UNet2DConditionConfig> {
    let text = std::fs::read_to_string(fixture("sdxl").join("unet/config.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(json.as_object_mut().unwrap());
    UNet2DConditionConfig::from_json(&json.to_string())
}

#[test]
fn config_validation_names_the_field_and_value() {
    use serde_json::json;
    config_with(|_| {}).unwrap();
    // Harmless values and unknown fields that are null/false.
    config_with(|c| {
        c.insert("dropout".into(), json!(0.1));
        c.insert("upcast_attention".into(), json!(true));
        c.insert("some_future_flag".into(), json!(false));
        c.insert("some_future_option".into(), json!(null));
        c.insert("_name_or_path".into(), json!("x"));
    })
    .unwrap();
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "resnet_time_scale_shift",
            json!("scale_shift"),
            "\"scale_shift\"",
        ),
        ("num_attention_heads", json!(8), "8"),
        ("addition_embed_type", json!("text"), "\"text\""),
        ("class_embed_type", json!("timestep"), "\"timestep\""),
        ("time_embedding_type", json!("fourier"), "\"fourier\""),
        ("time_cond_proj_dim", json!(256), "256"),
        ("encoder_hid_dim_type", json!("text_proj"), "\"text_proj\""),
        ("only_cross_attention", json!(true), "true"),
        ("dual_cross_attention", json!(true), "true"),
        ("downsample_padding", json!(0), "0"),
        ("act_fn", json!("gelu"), "\"gelu\""),
        ("norm_num_groups", json!(null), "None"),
        ("attention_type", json!("gated"), "\"gated\""),
        (
            "mid_block_type",
            json!("UNetMidBlock2DSimpleCrossAttn"),
            "UNetMidBlock2DSimpleCrossAttn",
        ),
        (
            "down_block_types",
            json!(["DownBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D"]),
            "AttnDownBlock2D",
        ),
        (
            "transformer_layers_per_block",
            json!([[1], [2], [3]]),
            "[[1],[2],[3]]",
        ),
        ("attention_head_dim", json!([1, 2]), "2 values"),
        ("attention_head_dim", json!([1, 3, 4]), "[1, 3, 4]"),
        ("cross_attention_dim", json!([80, 80, 64]), "[80, 80, 64]"),
        ("some_future_flag", json!(true), "true"),
        ("_class_name", json!("AutoencoderKL"), "AutoencoderKL"),
    ];
    for (field, value, shown) in cases {
        let err = config_with(|c| {
            c.insert(field.into(), value.clone());
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&format!("`{field}`")) && err.contains(shown),
            "{field} = {value}: {err}"
        );
    }
    // SDXL's micro-conditioning needs both of its dimensions.
    let err = config_with(|c| {
        c.insert("addition_time_embed_dim".into(), json!(null));
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("addition_time_embed_dim"), "{err}");
}

#[test]
fn malformed_inputs_are_input_errors() {
    let dev = Default::default();
    let sd15 = UNet2DConditionModel::<B>::load(&fixture("sd15").join("unet"), None, &dev).unwrap();
    let sdxl = UNet2DConditionModel::<B>::load(&fixture("sdxl").join("unet"), None, &dev).unwrap();
    let z4 = |s: [usize; 4]| Tensor::<B, 4>::zeros(s, &dev);
    let z3 = |s: [usize; 3]| Tensor::<B, 3>::zeros(s, &dev);
    let z2 = |s: [usize; 2]| Tensor::<B, 2>::zeros(s, &dev);
    let none = UNetHooks::default();
    let check = |r: selfcascade_sd::Result<Tensor<B, 4>>, needle: &str| {
        let err = r.unwrap_err();
        assert!(
            matches!(&err, selfcascade_sd::Error::Input(m) if m.contains(needle)),
            "expected an input error mentioning {needle:?}, got: {err}"
        );
    };
    check(
        sd15.forward(z4([1, 3, 8, 8]), &[1.0], z3([1, 77, 32]), None, &none),
        "sample",
    );
    check(
        sd15.forward(z4([2, 4, 8, 8]), &[1.0], z3([1, 77, 32]), None, &none),
        "encoder_hidden_states",
    );
    check(
        sd15.forward(z4([1, 4, 8, 8]), &[1.0], z3([1, 77, 48]), None, &none),
        "encoder_hidden_states",
    );
    check(
        sd15.forward(
            z4([2, 4, 8, 8]),
            &[1.0, 2.0, 3.0],
            z3([2, 77, 32]),
            None,
            &none,
        ),
        "timesteps",
    );
    check(
        sd15.forward(z4([1, 4, 8, 8]), &[], z3([1, 77, 32]), None, &none),
        "timesteps",
    );
    check(
        sd15.forward(z4([1, 4, 8, 8]), &[f64::NAN], z3([1, 77, 32]), None, &none),
        "timestep",
    );
    check(
        sd15.forward(
            z4([1, 4, 8, 8]),
            &[1.0],
            z3([1, 77, 32]),
            Some((z2([1, 24]), z2([1, 6]))),
            &none,
        ),
        "text_time",
    );
    check(
        sdxl.forward(z4([1, 4, 8, 8]), &[1.0], z3([1, 77, 80]), None, &none),
        "time_ids",
    );
    check(
        sdxl.forward(
            z4([2, 4, 8, 8]),
            &[1.0],
            z3([2, 77, 80]),
            Some((z2([1, 24]), z2([2, 6]))),
            &none,
        ),
        "batch",
    );
    check(
        sdxl.forward(
            z4([1, 4, 8, 8]),
            &[1.0],
            z3([1, 77, 80]),
            Some((z2([1, 24]), z2([1, 5]))),
            &none,
        ),
        "add_embedding expects 72",
    );
    // Non-multiple-of-8 and tiny latents run.
    let out = sd15
        .forward(z4([1, 4, 13, 11]), &[1.0], z3([1, 77, 32]), None, &none)
        .unwrap();
    assert_eq!(out.dims(), [1, 4, 13, 11]);
    let out = sd15
        .forward(z4([1, 4, 1, 1]), &[1.0], z3([1, 77, 32]), None, &none)
        .unwrap();
    assert_eq!(out.dims(), [1, 4, 1, 1]);
}

#[test]
fn a_single_timestep_is_broadcast_over_the_batch() {
    let dir = fixture("sd15");
    let unet =
        UNet2DConditionModel::<B>::load(&dir.join("unet"), None, &Default::default()).unwrap();
    let io = Io::open(&dir.join("io/unet.safetensors"));
    let f = |t: &[f64]| {
        unet.forward(
            io.tensor("sample"),
            t,
            io.tensor("encoder_hidden_states"),
            None,
            &UNetHooks::default(),
        )
        .unwrap()
    };
    assert_eq!(compare(&f(&[500.0]), &f(&[500.0, 500.0])).0, 0.0);
    assert!(compare(&f(&[500.0]), &f(&[500.0, 20.0])).0 > 1e-3);
}

/// The full-size SD 2.1 UNet against diffusers, given a folder written by
/// `tools/oracle/full_unet_sd21.py --out DIR` (`DIR/unet/`, `DIR/io.safetensors`). Not run in CI:
/// `SELFCASCADE_FULL_UNET_DIR=DIR cargo test --release -p selfcascade-sd --test unet -- --ignored`.
#[test]
#[ignore = "needs SELFCASCADE_FULL_UNET_DIR (a full-size SD 2.1 UNet, 3.5 GB)"]
fn full_size_sd21_unet_matches_diffusers() {
    let Some(dir) = std::env::var_os("SELFCASCADE_FULL_UNET_DIR") else {
        panic!(
            "set SELFCASCADE_FULL_UNET_DIR to a folder written by tools/oracle/full_unet_sd21.py"
        );
    };
    let dir = PathBuf::from(dir);
    let start = std::time::Instant::now();
    let unet = UNet2DConditionModel::<B>::load(&dir.join("unet"), None, &Default::default())
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("loaded in {:.1?}", start.elapsed());
    let io = Io::open(&dir.join("io.safetensors"));
    let t: Vec<f64> = io.values("timestep").iter().map(|t| *t as f64).collect();
    let start = std::time::Instant::now();
    let out = unet
        .forward(
            io.tensor("sample"),
            &t,
            io.tensor("encoder_hidden_states"),
            None,
            &UNetHooks::default(),
        )
        .unwrap();
    eprintln!("forward {:?} in {:.1?}", out.dims(), start.elapsed());
    assert_close("full SD 2.1", &out, &io.tensor("out"));
}

#[test]
fn sdxl_shaped_unet_with_pivot_injection_at_odd_sizes_matches_reference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet_hooks");
    let unet =
        UNet2DConditionModel::<B>::load(&dir.join("unet_xl"), None, &Default::default()).unwrap();
    let io = Io::open(&dir.join("io.safetensors"));
    assert_eq!(unet.injection_channels(), vec![16, 16, 24, 24]);
    let t: Vec<f64> = io.values("xl_timestep").iter().map(|t| *t as f64).collect();
    let run = |hooks: &UNetHooks<'_, B>| {
        unet.forward(
            io.tensor("xl_sample"),
            &t,
            io.tensor("xl_encoder_hidden_states"),
            Some((io.tensor("xl_text_embeds"), io.tensor("xl_time_ids"))),
            hooks,
        )
        .unwrap()
    };
    assert_close(
        "SDXL-shaped 14×22",
        &run(&UNetHooks::default()),
        &io.tensor("xl_out_plain"),
    );
    let up = Trivial {
        channels: unet.injection_channels(),
        c: vec![0.5, -0.25, 0.75, 0.3],
        k: 0.01,
    };
    let hooks = UNetHooks {
        pivot: Some(PivotInjection {
            latent: io.tensor("xl_pivot"),
            upsampler: &up,
        }),
        ..Default::default()
    };
    assert_close(
        "SDXL-shaped pivot",
        &run(&hooks),
        &io.tensor("xl_out_pivot"),
    );
}

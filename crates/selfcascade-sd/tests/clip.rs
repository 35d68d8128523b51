//! CLIP text encoders against transformers 5.24 (fixtures made by `tools/oracle/models.py`), plus
//! strict loading and config errors.

use burn::backend::Flex;
use burn::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};
use selfcascade_sd::clip::config::{CLIPTextConfig, ClipPooling};
use selfcascade_sd::clip::text_model::{CLIPTextModel, CLIPTextModelWithProjection};
use selfcascade_sd::load::TensorStore;
use std::path::{Path, PathBuf};

type B = Flex;

fn family(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(name)
}

fn io(fam: &str, file: &str) -> TensorStore {
    let path = family(fam).join("io").join(file);
    TensorStore::open(&[path]).unwrap()
}

fn ids(store: &TensorStore) -> Vec<Vec<i64>> {
    let (shape, v) = store.read_int("input_ids").unwrap();
    v.chunks(shape[1]).map(|r| r.to_vec()).collect()
}

/// max|a − b| ≤ 1e-4 · max(1, max|b|); returns the error relative to that scale.
fn assert_close<const D: usize>(
    what: &str,
    got: Tensor<B, D>,
    store: &TensorStore,
    name: &str,
) -> f32 {
    let want = store.read(name).unwrap();
    assert_eq!(got.dims().to_vec(), want.shape, "{what}: shape");
    let got = got.into_data().to_vec::<f32>().unwrap();
    let scale = want.data.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(&want.data)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-4 * scale,
        "{what}: max|diff| = {diff:e}, allowed {:e}",
        1e-4 * scale
    );
    eprintln!("{what}: max|diff| = {diff:e} (scale {scale})");
    diff / scale
}

fn check_text_encoder(fam: &str) {
    let dev = Default::default();
    let model = CLIPTextModel::<B>::load(&family(fam).join("text_encoder"), None, &dev).unwrap();
    let io = io(fam, "text_encoder.safetensors");
    let out = model.forward(&ids(&io)).unwrap();
    assert_close(
        &format!("{fam} last"),
        out.last_hidden_state,
        &io,
        "last_hidden_state",
    );
    assert_close(
        &format!("{fam} penultimate"),
        out.penultimate_hidden_state,
        &io,
        "penultimate_hidden_state",
    );
    assert_close(&format!("{fam} pooled"), out.pooled, &io, "pooler_output");
}

#[test]
fn sd15_text_encoder_matches_transformers() {
    check_text_encoder("sd15");
}

#[test]
fn sd21_text_encoder_matches_transformers() {
    // gelu, and the new pooling rule (first id == eos_token_id).
    check_text_encoder("sd21");
}

#[test]
fn sdxl_text_encoders_match_transformers() {
    check_text_encoder("sdxl");
    let dev = Default::default();
    let dir = family("sdxl").join("text_encoder_2");
    let model = CLIPTextModelWithProjection::<B>::load(&dir, None, &dev).unwrap();
    let io = io("sdxl", "text_encoder_2.safetensors");
    let ids = ids(&io);
    let out = model.forward(&ids).unwrap();
    assert_close(
        "sdxl te2 last",
        out.last_hidden_state,
        &io,
        "last_hidden_state",
    );
    assert_close(
        "sdxl te2 penultimate",
        out.penultimate_hidden_state,
        &io,
        "penultimate_hidden_state",
    );
    assert_close("sdxl te2 text_embeds", out.pooled, &io, "text_embeds");
    let body = model.text_model.forward(&ids).unwrap();
    assert_close("sdxl te2 pooler_output", body.pooled, &io, "pooler_output");
}

#[test]
fn pooling_rule_follows_eos_token_id_like_transformers() {
    let cfg = |eos: &str| {
        CLIPTextConfig::from_json(&format!(r#"{{"eos_token_id": {eos}}}"#), "test").unwrap()
    };
    assert_eq!(cfg("2").pooling().unwrap(), ClipPooling::LegacyArgmax);
    assert_eq!(
        cfg("49407").pooling().unwrap(),
        ClipPooling::FirstEos(49407)
    );
    let default = CLIPTextConfig::from_json("{}", "test").unwrap();
    assert_eq!(default.pooling().unwrap(), ClipPooling::FirstEos(49407));
    let err = CLIPTextConfig::from_json(r#"{"eos_token_id": [2, 3]}"#, "test")
        .unwrap_err()
        .to_string();
    assert!(err.contains("eos_token_id"), "{err}");

    // A tiny random model: pooled rows are the rows of last_hidden_state at the rule's position.
    let dev = Default::default();
    for (eos, rows, want) in [
        // legacy: first occurrence of the largest id
        ("2", vec![vec![5i64, 9, 3, 9, 2]], 1usize),
        // new rule: first occurrence of eos (7), even though 9 is larger
        ("7", vec![vec![5i64, 9, 7, 7, 2]], 2),
        // new rule without any eos: position 0 (argmax of all zeros)
        ("7", vec![vec![5i64, 9, 3, 1, 2]], 0),
    ] {
        let c = CLIPTextConfig::from_json(
            &format!(
                r#"{{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 2,
                    "num_attention_heads": 2, "max_position_embeddings": 5, "eos_token_id": {eos}}}"#
            ),
            "test",
        )
        .unwrap();
        let weights = selfcascade_sd::load::Weights::random(3);
        let m = CLIPTextModel::<B>::new(&weights.root::<B>(&dev), &c).unwrap();
        let out = m.forward(&rows).unwrap();
        let last = out.last_hidden_state.narrow(1, want, 1).reshape([1, 8]);
        let d = last.sub(out.pooled).abs().max().into_scalar();
        assert_eq!(d, 0.0, "eos {eos}, rows {rows:?}");
    }
}

#[test]
fn bad_input_ids_are_errors() {
    let dev = Default::default();
    let model = CLIPTextModel::<B>::load(&family("sd15").join("text_encoder"), None, &dev).unwrap();
    let err = model.forward(&[vec![1u32, 1000]]).unwrap_err().to_string();
    assert!(err.contains("1000") && err.contains("vocabulary"), "{err}");
    let err = model.forward(&[vec![-1i64, 3]]).unwrap_err().to_string();
    assert!(err.contains("-1"), "{err}");
    let err = model.forward(&[vec![1u32; 78]]).unwrap_err().to_string();
    assert!(
        err.contains("78") && err.contains("max_position_embeddings"),
        "{err}"
    );
    let err = model
        .forward(&[vec![1u32; 4], vec![1u32; 5]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("row 1"), "{err}");
    let empty: Vec<Vec<u32>> = Vec::new();
    assert!(model.forward(&empty).is_err());
    // Shorter than 77 is fine (transformers accepts any length up to max_position_embeddings).
    assert_eq!(
        model.forward(&[vec![1u32, 2, 3]]).unwrap().pooled.dims(),
        [1, 32]
    );
}

#[test]
fn config_errors_name_the_problem() {
    let err = CLIPTextConfig::from_json(r#"{"hidden_act": "relu"}"#, "cfg.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("hidden_act") && err.contains("relu"), "{err}");
    let err = CLIPTextConfig::from_json(r#"{"rotary_embeddings": true}"#, "cfg.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("rotary_embeddings"), "{err}");
    let err = CLIPTextConfig::from_json(r#"{"hidden_size": 10, "num_attention_heads": 3}"#, "c")
        .unwrap_err()
        .to_string();
    assert!(err.contains("divisible"), "{err}");
    // Inert fields of real (transformers 4) checkpoints are accepted.
    CLIPTextConfig::from_json(
        r#"{"_name_or_path": "x", "architectures": ["CLIPTextModel"], "dropout": 0.0,
            "torch_dtype": "float32", "pruned_heads": {}, "id2label": {"0": "LABEL_0"},
            "hidden_act": "gelu"}"#,
        "c",
    )
    .unwrap();
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("selfcascade-clip-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Copies sd15's text encoder with its tensors edited by `edit` (name, shape, f32 values).
fn edited_copy(name: &str, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> PathBuf {
    let src = family("sd15").join("text_encoder");
    let dst = tmpdir(name);
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let store = TensorStore::open(&[src.join("model.safetensors")]).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = store
        .names()
        .map(|n| {
            let t = store.read(n).unwrap();
            (n.to_string(), t.shape, t.data)
        })
        .collect();
    edit(&mut tensors);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|x| x.to_le_bytes()).collect())
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
    safetensors::serialize_to_file(views, None, &dst.join("model.safetensors")).unwrap();
    dst
}

#[test]
fn strict_loading_names_the_tensor() {
    let dev = Default::default();
    let name = "text_model.encoder.layers.1.mlp.fc1.weight";
    let dir = edited_copy("missing", |t| t.retain(|(n, _, _)| n != name));
    let err = CLIPTextModel::<B>::load(&dir, None, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains(name) && err.contains("missing"), "{err}");

    let dir = edited_copy("unexpected", |t| {
        t.push((
            "text_model.encoder.layers.2.mlp.fc1.bias".into(),
            vec![2],
            vec![0.0; 2],
        ))
    });
    let err = CLIPTextModel::<B>::load(&dir, None, &dev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("text_model.encoder.layers.2.mlp.fc1.bias"),
        "{err}"
    );

    let dir = edited_copy("misshaped", |t| {
        for (n, s, d) in t.iter_mut() {
            if n == "text_model.final_layer_norm.weight" {
                *s = vec![31];
                d.truncate(31);
            }
        }
    });
    let err = CLIPTextModel::<B>::load(&dir, None, &dev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("text_model.final_layer_norm.weight") && err.contains("[31]"),
        "{err}"
    );

    // The position_ids buffer of real checkpoints is ignored; names without the `text_model.` prefix
    // (transformers 5's own CLIPTextModel files) load too.
    let dir = edited_copy("buffer-and-prefix", |t| {
        for (n, _, _) in t.iter_mut() {
            *n = n.trim_start_matches("text_model.").to_string();
        }
        t.push((
            "embeddings.position_ids".into(),
            vec![1, 77],
            (0..77).map(|i| i as f32).collect(),
        ));
    });
    let m = CLIPTextModel::<B>::load(&dir, None, &dev).unwrap();
    let io = io("sd15", "text_encoder.safetensors");
    let out = m.forward(&ids(&io)).unwrap();
    assert_close(
        "unprefixed",
        out.last_hidden_state,
        &io,
        "last_hidden_state",
    );

    // A projection model needs text_projection.
    let dir = edited_copy("no-projection", |_| {});
    let err = CLIPTextModelWithProjection::<B>::load(&dir, None, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("text_projection.weight"), "{err}");
}

//! The other models of an LVDM checkpoint: the first-stage VAE (`first_stage_model.*`, latent
//! diffusion's names, read through diffusers-named modules by renaming) and the text encoder
//! (`cond_stage_model.transformer.text_model.*`, transformers' names).

use crate::clip::config::CLIPTextConfig;
use crate::clip::text_model::CLIPTextModel;
use crate::error::{Error, Result};
use crate::load::{TensorStore, Weights};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};
use burn::tensor::backend::Backend;
use std::path::Path;

/// The tensors of a latent-diffusion checkpoint: under `state_dict` when present (Lightning), else the
/// top level. Read once, the store can be cloned (sharing its bytes) for each model it holds.
pub fn open_ckpt(path: &Path) -> Result<TensorStore> {
    match TensorStore::open_pth(path, Some("state_dict")) {
        Ok(s) => Ok(s),
        Err(first) => TensorStore::open_pth(path, None).map_err(|_| first),
    }
}

/// LVDM's first stage: Stable Diffusion v1's `kl-f8` VAE (channels 128/256/512/512, 4 latent channels,
/// scaling factor 0.18215).
pub fn kl_f8_config() -> AutoencoderKLConfig {
    AutoencoderKLConfig::from_json(
        r#"{"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
            "block_out_channels": [128, 256, 512, 512], "norm_num_groups": 32, "sample_size": 256,
            "scaling_factor": 0.18215,
            "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#,
        "LVDM kl-f8 VAE",
    )
    .unwrap_or_else(|e| unreachable!("the built-in kl-f8 config is valid: {e}"))
}

/// LVDM's text encoder: CLIP ViT-L/14's text model (`openai/clip-vit-large-patch14`, as SD 1.x).
pub fn clip_vit_l14_config() -> CLIPTextConfig {
    serde_json::from_str(
        r#"{"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5, "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 2,
            "pad_token_id": 1}"#,
    )
    .unwrap_or_else(|e| unreachable!("the built-in CLIP ViT-L/14 config is valid: {e}"))
}

/// The diffusers name and shape of latent diffusion's VAE tensor `name` (without `first_stage_model.`)
/// for a VAE of `levels` levels; attention 1×1 convolutions become linear layers.
fn vae_name(name: &str, shape: &[usize], levels: usize) -> Option<(String, Vec<usize>)> {
    let parts: Vec<&str> = name.split('.').collect();
    let idx = |s: &str| s.parse::<usize>().ok();
    let mut shape = shape.to_vec();
    let mapped: Vec<String> = match parts.as_slice() {
        [part @ ("encoder" | "decoder"), "mid", block, rest @ ..] => {
            let head = match *block {
                "block_1" => "mid_block.resnets.0".to_string(),
                "block_2" => "mid_block.resnets.1".to_string(),
                "attn_1" => {
                    let layer = match *rest.first()? {
                        "norm" => "group_norm",
                        "q" => "to_q",
                        "k" => "to_k",
                        "v" => "to_v",
                        "proj_out" => "to_out.0",
                        _ => return None,
                    };
                    if shape.len() == 4 && layer != "group_norm" {
                        shape.truncate(2);
                    }
                    return Some((
                        format!(
                            "{part}.mid_block.attentions.0.{layer}.{}",
                            rest[1..].join(".")
                        ),
                        shape,
                    ));
                }
                _ => return None,
            };
            [part.to_string(), head]
                .into_iter()
                .chain(rest.iter().map(|s| s.to_string()))
                .collect()
        }
        ["encoder", "down", i, "block", rest @ ..] => {
            let i = idx(i)?;
            std::iter::once(format!("encoder.down_blocks.{i}.resnets"))
                .chain(rest.iter().map(|s| s.to_string()))
                .collect()
        }
        ["encoder", "down", i, "downsample", rest @ ..] => {
            let i = idx(i)?;
            std::iter::once(format!("encoder.down_blocks.{i}.downsamplers.0"))
                .chain(rest.iter().map(|s| s.to_string()))
                .collect()
        }
        ["decoder", "up", i, kind @ ("block" | "upsample"), rest @ ..] => {
            let j = levels.checked_sub(idx(i)? + 1)?;
            let head = if *kind == "block" {
                format!("decoder.up_blocks.{j}.resnets")
            } else {
                format!("decoder.up_blocks.{j}.upsamplers.0")
            };
            std::iter::once(head)
                .chain(rest.iter().map(|s| s.to_string()))
                .collect()
        }
        [part @ ("encoder" | "decoder"), "norm_out", rest @ ..] => {
            [part.to_string(), "conv_norm_out".into()]
                .into_iter()
                .chain(rest.iter().map(|s| s.to_string()))
                .collect()
        }
        _ => parts.iter().map(|s| s.to_string()).collect(),
    };
    let joined = mapped.join(".").replace("nin_shortcut", "conv_shortcut");
    Some((joined, shape))
}

/// Loads the VAE of `cfg` from the checkpoint's `first_stage_model.*` tensors, strictly (every one of
/// them must be used, none may be missing).
pub fn load_first_stage<B: Backend>(
    path: &Path,
    cfg: &AutoencoderKLConfig,
    device: &B::Device,
) -> Result<AutoencoderKL<B>> {
    first_stage_from(open_ckpt(path)?, path, cfg, device)
}

/// [`load_first_stage`] from an opened checkpoint (`path` names it in messages).
pub fn first_stage_from<B: Backend>(
    ckpt: TensorStore,
    path: &Path,
    cfg: &AutoencoderKLConfig,
    device: &B::Device,
) -> Result<AutoencoderKL<B>> {
    let levels = cfg.block_out_channels.len();
    let store = ckpt
        .renamed(|name, shape| vae_name(name.strip_prefix("first_stage_model.")?, shape, levels))?;
    if store.names().next().is_none() {
        return Err(Error::Weights(format!(
            "{} has no `first_stage_model.*` tensors (the VAE of a latent-diffusion checkpoint)",
            path.display()
        )));
    }
    let weights = Weights::from_store(store);
    let vae = AutoencoderKL::new(&weights.root::<B>(device), cfg)?;
    weights.finish()?;
    Ok(vae)
}

/// Loads the text encoder of `cfg` from the checkpoint's `cond_stage_model.transformer.*` tensors
/// (transformers' `CLIPTextModel` names; the `position_ids` buffer is skipped), strictly.
pub fn load_cond_stage<B: Backend>(
    path: &Path,
    cfg: &CLIPTextConfig,
    device: &B::Device,
) -> Result<CLIPTextModel<B>> {
    cond_stage_from(open_ckpt(path)?, path, cfg, device)
}

/// [`load_cond_stage`] from an opened checkpoint (`path` names it in messages).
pub fn cond_stage_from<B: Backend>(
    ckpt: TensorStore,
    path: &Path,
    cfg: &CLIPTextConfig,
    device: &B::Device,
) -> Result<CLIPTextModel<B>> {
    let store = ckpt.renamed(|name, shape| {
        let rest = name.strip_prefix("cond_stage_model.transformer.")?;
        (!rest.ends_with("position_ids")).then(|| (rest.to_string(), shape.to_vec()))
    })?;
    if store.names().next().is_none() {
        return Err(Error::Weights(format!(
            "{} has no `cond_stage_model.transformer.*` tensors (the CLIP text encoder of an LVDM checkpoint)",
            path.display()
        )));
    }
    let weights = Weights::from_store(store);
    let te = CLIPTextModel::new(&weights.root::<B>(device), cfg)?;
    weights.finish()?;
    Ok(te)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vae_names_follow_diffusers_conversion() {
        let cases = [
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "encoder.down.2.downsample.conv.bias",
                "encoder.down_blocks.2.downsamplers.0.conv.bias",
            ),
            (
                "decoder.up.0.block.2.conv1.weight",
                "decoder.up_blocks.3.resnets.2.conv1.weight",
            ),
            (
                "decoder.up.3.upsample.conv.weight",
                "decoder.up_blocks.0.upsamplers.0.conv.weight",
            ),
            (
                "encoder.mid.block_2.norm1.bias",
                "encoder.mid_block.resnets.1.norm1.bias",
            ),
            (
                "decoder.mid.attn_1.proj_out.weight",
                "decoder.mid_block.attentions.0.to_out.0.weight",
            ),
            (
                "decoder.mid.attn_1.norm.weight",
                "decoder.mid_block.attentions.0.group_norm.weight",
            ),
            ("encoder.norm_out.weight", "encoder.conv_norm_out.weight"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ];
        for (ldm, want) in cases {
            assert_eq!(vae_name(ldm, &[4], 4).unwrap().0, want, "{ldm}");
        }
        let (_, shape) = vae_name("encoder.mid.attn_1.q.weight", &[8, 8, 1, 1], 4).unwrap();
        assert_eq!(shape, vec![8, 8]);
        assert!(vae_name("decoder.up.4.block.0.conv1.weight", &[4], 4).is_none());
    }
}

"""Oracle for selfcascade-sd: tiny random-weight SD 1.x / SD 2.x / SDXL pipelines and their outputs.

For each family (sd15, sd21, sdxl) this writes, under crates/selfcascade-sd/tests/fixtures/models/<family>/:

- a diffusers pipeline folder as `save_pretrained` writes it (model_index.json, unet/, vae/, text_encoder/,
  text_encoder_2/ for sdxl, scheduler/), without tokenizer folders (model_index.json lists them as null);
- io/*.safetensors: inputs and reference outputs of the UNet, the VAE encoder/decoder and the text encoder(s);
- io/meta.json: versions, seeds, parameter counts, pooling rules, output statistics.

Every parameter is re-initialised from a fixed seed (see oracle_util.randomize), so no layer is zero or an
identity. Reference outputs are computed in float64 from the models *reloaded from the written folders*
(so they are exactly what a loader of those files should reproduce) and stored as float32; meta.json also
records how far a float32 PyTorch run is from them, as a guide to test tolerances.

Run (environment: tools/oracle/README.md):

    HF_HUB_OFFLINE=1 python tools/oracle/models.py            # all families
    HF_HUB_OFFLINE=1 python tools/oracle/models.py sd21       # one family
"""
import argparse
import copy
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_util import clip_scale, diffusers_scale, randomize, stats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "models")

# ---------------------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------------------

VOCAB = 1000
SEQ = 77

# Scheduler configs as in the real repositories' scheduler/scheduler_config.json.
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                trained_betas=None)
SCHED_SD15 = (PNDMScheduler, dict(SD_BETAS, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1))
SCHED_SD21 = (DDIMScheduler, dict(SD_BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                  prediction_type="v_prediction"))
SCHED_SDXL = (EulerDiscreteScheduler, dict(SD_BETAS, prediction_type="epsilon", interpolation_type="linear",
                                           use_karras_sigmas=False, timestep_spacing="leading", steps_offset=1))

# A tiny VAE with SD's structure: 3 levels (downsampling factor 4; SD has 4 levels, factor 8),
# layers_per_block 2, mid-block attention (one head over all channels).
VAE_BASE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=2,
                act_fn="silu", latent_channels=4, norm_num_groups=4, sample_size=48)

UNET_COMMON = dict(sample_size=16, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True,
                   freq_shift=0, mid_block_type="UNetMidBlock2DCrossAttn", act_fn="silu", norm_num_groups=8,
                   norm_eps=1e-5, downsample_padding=1, mid_block_scale_factor=1)


def clip_config(hidden, layers, heads, act, projection_dim, bos, eos, pad):
    return CLIPTextConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=4 * hidden,
                          num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=SEQ,
                          hidden_act=act, layer_norm_eps=1e-5, projection_dim=projection_dim,
                          attention_dropout=0.0, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)


# Token ids used in io/text_encoder*.safetensors. The tiny vocabulary mirrors CLIP's: the two highest ids
# are <|startoftext|> (998) and <|endoftext|> (999), like 49406/49407.
BOS_ID, EOS_ID = 998, 999

FAMILIES = {
    "sd15": dict(
        seed=15_000,
        unet=dict(UNET_COMMON,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  block_out_channels=(16, 24, 24), layers_per_block=2,
                  attention_head_dim=4,  # SD 1.x quirk: an int, used as the number of heads in every block
                  cross_attention_dim=32, use_linear_projection=False, upcast_attention=False),
        vae=dict(VAE_BASE, scaling_factor=0.18215),
        # SD 1.x's text encoder config has eos_token_id=2 -> legacy pooling (argmax of input_ids).
        text_encoders=[("text_encoder", CLIPTextModel, dict(hidden=32, layers=2, heads=4, act="quick_gelu",
                                                            projection_dim=32, bos=0, eos=2, pad=1))],
        scheduler=SCHED_SD15,
        vae_shard=None, unet_variant=None,
        latent_hw=(16, 24), latent_b1=(24, 24), timesteps=(981.0, 17.0), timestep_b1=601,
    ),
    "sd21": dict(
        seed=21_000,
        unet=dict(UNET_COMMON,
                  down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                    "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                  block_out_channels=(16, 24, 32, 32), layers_per_block=1,
                  attention_head_dim=[2, 4, 4, 8],  # per-block number of heads, like SD 2.x's [5, 10, 20, 20]
                  cross_attention_dim=32, use_linear_projection=True,
                  upcast_attention=True),  # like stable-diffusion-2-1 (768-v); no numerical effect in f32/f64
        vae=dict(VAE_BASE, scaling_factor=0.18215),
        # Deliberately the *new* pooling rule (eos_token_id != 2): pooled at the first id == 997.
        # Ids 998/999 play tokens added after the vocabulary, so the legacy argmax rule would pool wrongly.
        text_encoders=[("text_encoder", CLIPTextModel, dict(hidden=32, layers=3, heads=2, act="gelu",
                                                            projection_dim=32, bos=996, eos=997, pad=0))],
        scheduler=SCHED_SD21,
        vae_shard="200KB", unet_variant="fp16",
        latent_hw=(16, 24), latent_b1=(24, 24), timesteps=(999.0, 1.0), timestep_b1=399,
    ),
    "sdxl": dict(
        seed=30_000,
        unet=dict(UNET_COMMON,
                  down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                  block_out_channels=(16, 16, 24), layers_per_block=2,
                  attention_head_dim=[1, 2, 4], num_attention_heads=None,  # as SDXL: [5, 10, 20], null
                  transformer_layers_per_block=[1, 2, 3],  # as SDXL's [1, 2, 10]; mid block uses the last
                  cross_attention_dim=80,  # = 32 (text_encoder) + 48 (text_encoder_2)
                  use_linear_projection=True, upcast_attention=False,
                  addition_embed_type="text_time", addition_time_embed_dim=8,
                  projection_class_embeddings_input_dim=6 * 8 + 24),  # 6 time ids x 8 + projection_dim 24
        vae=dict(VAE_BASE, scaling_factor=0.13025),
        # SDXL's two text encoder configs both have eos_token_id=2 -> legacy pooling (argmax of input_ids).
        text_encoders=[
            ("text_encoder", CLIPTextModel, dict(hidden=32, layers=2, heads=4, act="quick_gelu",
                                                 projection_dim=32, bos=0, eos=2, pad=1)),
            ("text_encoder_2", CLIPTextModelWithProjection, dict(hidden=48, layers=2, heads=3, act="gelu",
                                                                 projection_dim=24, bos=0, eos=2, pad=1)),
        ],
        scheduler=SCHED_SDXL,
        vae_shard=None, unet_variant=None,
        latent_hw=(16, 24), latent_b1=(24, 24), timesteps=(981.0, 17.0), timestep_b1=999,
        vae_factor=4,
    ),
}

IMAGE_HW = (48, 64)  # VAE encoder input (pixels); the decoder input is the matching 12 x 16 latent.


# ---------------------------------------------------------------------------------------------------------
# Building and saving
# ---------------------------------------------------------------------------------------------------------

def build(fam):
    seed = fam["seed"]
    torch.manual_seed(seed)  # default inits are overwritten, but keep construction deterministic anyway
    unet = UNet2DConditionModel(**fam["unet"])
    vae = AutoencoderKL(**fam["vae"])
    tes = {}
    counts = {}
    counts["unet"] = randomize(unet, seed + 1, diffusers_scale)
    counts["vae"] = randomize(vae, seed + 2, diffusers_scale)
    for i, (name, cls, c) in enumerate(fam["text_encoders"]):
        te = cls(clip_config(**c))
        counts[name] = randomize(te, seed + 3 + i, clip_scale)
        tes[name] = te
    if fam["unet_variant"] == "fp16":
        # Round to fp16 first; the oracle then runs with exactly these (upcast) values.
        with torch.no_grad():
            for p in unet.parameters():
                p.copy_(p.half().float())
    cls, cfg = fam["scheduler"]
    return unet, vae, tes, cls(**cfg), counts


def add_text_model_prefix(path):
    """transformers 5 saves CLIPTextModel keys without the `text_model.` prefix that every real SD checkpoint
    (written by transformers 4) uses; rewrite them in the checkpoint format (transformers 5 loads both)."""
    sd = load_file(path)
    fixed = {(k if k.startswith("text_model.") or k.startswith("text_projection.") else "text_model." + k): v
             for k, v in sd.items()}
    save_file(fixed, path, metadata={"format": "pt"})


def save_family(name, fam, unet, vae, tes, sched, d):
    if name == "sdxl":
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=tes["text_encoder"],
                                         text_encoder_2=tes["text_encoder_2"], tokenizer=None, tokenizer_2=None,
                                         unet=unet, scheduler=sched, image_encoder=None, feature_extractor=None,
                                         force_zeros_for_empty_prompt=True, add_watermarker=False)
    else:
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=tes["text_encoder"], tokenizer=None, unet=unet,
                                       scheduler=sched, safety_checker=None, feature_extractor=None,
                                       image_encoder=None, requires_safety_checker=False)
    pipe.save_pretrained(d, safe_serialization=True)
    for te_name in tes:
        add_text_model_prefix(os.path.join(d, te_name, "model.safetensors"))
    if fam["unet_variant"]:
        os.remove(os.path.join(d, "unet", "diffusion_pytorch_model.safetensors"))
        copy.deepcopy(unet).half().save_pretrained(os.path.join(d, "unet"), variant=fam["unet_variant"],
                                                   safe_serialization=True)
    if fam["vae_shard"]:
        os.remove(os.path.join(d, "vae", "diffusion_pytorch_model.safetensors"))
        vae.save_pretrained(os.path.join(d, "vae"), max_shard_size=fam["vae_shard"], safe_serialization=True)
        assert os.path.exists(os.path.join(d, "vae", "diffusion_pytorch_model.safetensors.index.json"))


def reload_family(fam, d, unet, vae, tes):
    """Load every component back from disk in float64 and check it equals what was built."""
    f64 = torch.float64
    r_unet = UNet2DConditionModel.from_pretrained(os.path.join(d, "unet"), variant=fam["unet_variant"],
                                                  dtype=f64)
    r_vae = AutoencoderKL.from_pretrained(os.path.join(d, "vae"), dtype=f64)
    r_tes = {}
    for name, cls, _ in fam["text_encoders"]:
        r_tes[name] = cls.from_pretrained(os.path.join(d, name), dtype=f64)
    for a, b in [(unet, r_unet), (vae, r_vae)] + [(tes[n], r_tes[n]) for n in tes]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys(), (set(sa) ^ set(sb))
        for k in sa:
            assert torch.equal(sa[k].double(), sb[k]), k
    # The whole folder must load as a diffusers pipeline too.
    absent = {k: None for k in (["tokenizer", "tokenizer_2", "image_encoder", "feature_extractor"] if "text_encoder_2"
                                in tes else ["tokenizer", "safety_checker", "feature_extractor", "image_encoder"])}
    pipe = DiffusionPipeline.from_pretrained(d, variant=fam["unet_variant"], dtype=torch.float32, **absent)
    assert pipe.unet is not None and pipe.vae is not None and pipe.text_encoder is not None
    assert torch.equal(pipe.unet.conv_in.weight, unet.conv_in.weight)
    for m in [r_unet, r_vae] + list(r_tes.values()):
        m.eval()
    return r_unet, r_vae, r_tes


# ---------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------

def make_input_ids(g, c):
    """Two rows of ids. Returns (ids [2, 77] int64, expected pooling positions)."""
    ids = torch.zeros(2, SEQ, dtype=torch.int64)
    if c["eos"] == 2:
        # Legacy rule: the pooled position is argmax(ids), the first occurrence of the highest id (EOS_ID=999).
        bos, eos = BOS_ID, EOS_ID
        lo, hi = 3, BOS_ID  # ordinary ids in [3, 998)
        eos_pos = (7, 20)
        ids[0] = eos  # row 0 padded with <|endoftext|> (SD 1.x tokenizer)
        ids[1] = 0  # row 1 padded with id 0 ("!", SD 2.x / SDXL text_encoder_2 tokenizer)
        for r, p in enumerate(eos_pos):
            ids[r, 0] = bos
            ids[r, 1:p] = torch.randint(lo, hi, (p - 1,), generator=g)
            ids[r, p] = eos
        ids[0, 3] = 2  # a literal id 2 before the EOS: "first id == eos_token_id (2)" would pool here
        expected = [int(i) for i in ids.argmax(dim=-1)]
    else:
        # New rule: pooled at the first id == eos_token_id (997); 998/999 are "added tokens" above it.
        bos, eos = c["bos"], c["eos"]
        lo, hi = 3, bos  # ordinary ids in [3, 996)
        eos_pos = (10, 31)
        ids[0] = 0  # row 0 padded with id 0
        ids[1] = eos  # row 1 padded with EOS
        for r, p in enumerate(eos_pos):
            ids[r, 0] = bos
            ids[r, 1:p] = torch.randint(lo, hi, (p - 1,), generator=g)
            ids[r, p] = eos
        ids[1, 5] = 999  # added tokens: the legacy argmax rule would pool at 5
        ids[1, 12] = 998
        expected = [int((row == eos).int().argmax()) for row in ids]
        assert expected != [int(i) for i in ids.argmax(dim=-1)]
    assert expected == list(eos_pos)
    return ids, expected


def unet_inputs(name, fam, g, cross, text_embeds_dim):
    h, w = fam["latent_hw"]
    hb, wb = fam["latent_b1"]
    x = {
        "sample": torch.randn(2, 4, h, w, generator=g),
        "timestep": torch.tensor(fam["timesteps"], dtype=torch.float32),
        "encoder_hidden_states": torch.randn(2, SEQ, cross, generator=g),
        "sample_b1": torch.randn(1, 4, hb, wb, generator=g),
        "timestep_b1": torch.tensor(fam["timestep_b1"], dtype=torch.int64),  # 0-d, integer valued
        "encoder_hidden_states_b1": torch.randn(1, SEQ, cross, generator=g),
    }
    if name == "sdxl":
        f = fam["vae_factor"]
        x["text_embeds"] = torch.randn(2, text_embeds_dim, generator=g)
        # (original_h, original_w, crop_top, crop_left, target_h, target_w), SDXL's micro-conditioning.
        x["time_ids"] = torch.tensor([[h * f, w * f, 0, 0, h * f, w * f],
                                      [2 * h * f, 2 * w * f, 8, 4, h * f, w * f]], dtype=torch.float32)
        x["text_embeds_b1"] = torch.randn(1, text_embeds_dim, generator=g)
        x["time_ids_b1"] = torch.tensor([[hb * f + 16, wb * f - 8, 2, 6, hb * f, wb * f]], dtype=torch.float32)
    return x


# ---------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def run_unet(unet, x, sdxl):
    dt = unet.dtype
    outs = {}
    for sfx in ["", "_b1"]:
        kw = {}
        if sdxl:
            kw["added_cond_kwargs"] = {"text_embeds": x["text_embeds" + sfx].to(dt),
                                       "time_ids": x["time_ids" + sfx].to(dt)}
        outs["out" + sfx] = unet(x["sample" + sfx].to(dt), x["timestep" + sfx],
                                 encoder_hidden_states=x["encoder_hidden_states" + sfx].to(dt), **kw).sample
    return outs


@torch.no_grad()
def run_vae(vae, image, latent):
    dist = vae.encode(image.to(vae.dtype)).latent_dist  # logvar is clamped to [-30, 20] inside
    dec = vae.decode(latent.to(vae.dtype)).sample
    return {"mean": dist.mean, "logvar": dist.logvar}, {"decoded": dec}


@torch.no_grad()
def run_text_encoder(te, ids):
    out = te(input_ids=ids, output_hidden_states=True)
    res = {"last_hidden_state": out.last_hidden_state, "penultimate_hidden_state": out.hidden_states[-2]}
    if isinstance(te, CLIPTextModelWithProjection):
        res["pooler_output"] = te.text_model(input_ids=ids).pooler_output
        res["text_embeds"] = out.text_embeds
    else:
        res["pooler_output"] = out.pooler_output
    return res


def f32(d):
    return {k: v.detach().to(torch.float32).contiguous() if v.is_floating_point() else v.contiguous()
            for k, v in d.items()}


def to_f32_model(m):
    return copy.deepcopy(m).float()


def max_diff(a, b):
    return {k: float((a[k].double() - b[k].double()).abs().max()) for k in a}


def check_magnitudes(outs, where):
    for k, v in outs.items():
        s = v.double().std().item()
        assert 0.05 < s < 20.0, f"{where}/{k}: std {s} is not O(1)"


def generate(name, fam, out_root):
    d = os.path.join(out_root, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    unet, vae, tes, sched, counts = build(fam)
    save_family(name, fam, unet, vae, tes, sched, d)
    r_unet, r_vae, r_tes = reload_family(fam, d, unet, vae, tes)

    io = os.path.join(d, "io")
    os.makedirs(io)
    g = torch.Generator().manual_seed(fam["seed"] + 100)
    meta_io = {}
    tol = {}
    md = {"format": "pt"}  # one key only: safetensors writes a map, whose order is not stable

    # UNet
    text_embeds_dim = fam["text_encoders"][-1][2]["projection_dim"]
    x = unet_inputs(name, fam, g, fam["unet"]["cross_attention_dim"], text_embeds_dim)
    y = run_unet(r_unet, x, name == "sdxl")
    y32 = run_unet(to_f32_model(r_unet), x, name == "sdxl")
    check_magnitudes(y, "unet")
    tol["unet"] = max_diff(y, y32)
    save_file(f32({**x, **y}), os.path.join(io, "unet.safetensors"), metadata=md)
    meta_io["unet.safetensors"] = {k: stats(v) for k, v in {**x, **y}.items()}

    # VAE
    image = torch.rand(1, 3, *IMAGE_HW, generator=g) * 2.0 - 1.0
    lf = 2 ** (len(fam["vae"]["block_out_channels"]) - 1)
    latent = torch.randn(1, 4, IMAGE_HW[0] // lf, IMAGE_HW[1] // lf, generator=g)
    enc, dec = run_vae(r_vae, image, latent)
    enc32, dec32 = run_vae(to_f32_model(r_vae), image, latent)
    check_magnitudes(enc, "vae_encode")
    check_magnitudes(dec, "vae_decode")
    tol["vae_encode"] = max_diff(enc, enc32)
    tol["vae_decode"] = max_diff(dec, dec32)
    save_file(f32({"image": image, **enc}), os.path.join(io, "vae_encode.safetensors"), metadata=md)
    save_file(f32({"latent": latent, **dec}), os.path.join(io, "vae_decode.safetensors"), metadata=md)
    meta_io["vae_encode.safetensors"] = {k: stats(v) for k, v in {"image": image, **enc}.items()}
    meta_io["vae_decode.safetensors"] = {k: stats(v) for k, v in {"latent": latent, **dec}.items()}

    # Text encoders
    pooling = {}
    for te_name, _, c in fam["text_encoders"]:
        ids, expected = make_input_ids(g, c)
        te = r_tes[te_name]
        res = run_text_encoder(te, ids)
        res32 = run_text_encoder(to_f32_model(te), ids)
        check_magnitudes(res, te_name)
        # The pooled vector must be last_hidden_state at the expected positions.
        assert torch.equal(res["pooler_output"], res["last_hidden_state"][torch.arange(2), expected])
        tol[te_name] = max_diff(res, res32)
        save_file(f32({"input_ids": ids, **res}), os.path.join(io, f"{te_name}.safetensors"), metadata=md)
        meta_io[f"{te_name}.safetensors"] = {k: stats(v) for k, v in {"input_ids": ids.double(), **res}.items()}
        meta_io[f"{te_name}.safetensors"]["input_ids"]["dtype"] = "int64"
        rule = ("legacy: eos_token_id == 2 in config -> pooled at argmax(input_ids) per row (first occurrence "
                "of the highest id, here <|endoftext|> = 999)" if c["eos"] == 2 else
                f"new: eos_token_id == {c['eos']} in config -> pooled at the first position where "
                f"input_ids == {c['eos']} (ids 998/999 in row 1 would mislead argmax)")
        pooling[te_name] = {"eos_token_id": c["eos"], "rule": rule, "pooled_positions": expected,
                            "hidden_act": c["act"]}

    meta = {
        "generator": "tools/oracle/models.py",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "transformers": transformers.__version__, "safetensors": safetensors.__version__},
        "seeds": {"family": fam["seed"], "unet_weights": fam["seed"] + 1, "vae_weights": fam["seed"] + 2,
                  **{f"{n}_weights": fam["seed"] + 3 + i for i, (n, _, _) in enumerate(fam["text_encoders"])},
                  "io_inputs": fam["seed"] + 100},
        "weight_init": "every parameter re-drawn (tools/oracle/oracle_util.py): Linear/Conv weight "
                       "N(0, gain^2/fan_in), bias N(0, (0.1 gain)^2); GroupNorm/LayerNorm weight 1 + N(0, 0.01), "
                       "bias N(0, 0.01); Embedding N(0, gain^2). gain = 0.05 for layers writing a residual "
                       "stream or a norm input (UNet/VAE: conv_in, resnet conv1/conv2/time_emb_proj, proj_in, "
                       "attention to_out.0, ff.net.2; CLIP: embeddings, out_proj, fc2), else 1; so every norm "
                       "sees inputs of variance ~1e-3..1e-1 and a wrong norm epsilon moves outputs by >= 1e-3",
        "parameter_counts": counts,
        "unet_weights": ("fp16 variant (unet/diffusion_pytorch_model.fp16.safetensors, F16 tensors); the "
                         "oracle ran with these values upcast, so an fp16->f32 loader is exact"
                         if fam["unet_variant"] else "float32 (unet/diffusion_pytorch_model.safetensors)"),
        "vae_weights": (f"sharded (max_shard_size={fam['vae_shard']}): "
                        "vae/diffusion_pytorch_model.safetensors.index.json + shards"
                        if fam["vae_shard"] else "float32, single file"),
        "text_encoder_keys": "checkpoint format: text_model.* (+ text_projection.weight for "
                             "CLIPTextModelWithProjection), as in the real SD repositories",
        "clip_pooling": pooling,
        "reference_precision": "outputs computed in float64 from the reloaded folder, stored as float32; "
                               "f32_torch_max_abs_diff = max |float32 PyTorch run - stored reference|",
        "f32_torch_max_abs_diff": tol,
        "timestep_b1": "int64 0-d tensor (a scalar, broadcast over the batch as diffusers does)",
        "io": meta_io,
    }
    with open(os.path.join(io, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=False)
        f.write("\n")
    return meta


def dir_size(d):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("families", nargs="*", metavar="FAMILY", help=f"subset of {list(FAMILIES)} (default: all)")
    ap.add_argument("--out", default=OUT, help="output root (default: the committed fixtures folder)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    # One thread: the reduction order (hence the last bits of the float64 reference) must not depend on the
    # machine's load or core count, so that re-running gives byte-identical files.
    torch.set_num_threads(1)
    for name in args.families:
        if name not in FAMILIES:
            ap.error(f"unknown family {name!r}")
    for name in args.families or list(FAMILIES):
        meta = generate(name, FAMILIES[name], args.out)
        print(f"{name}: params {meta['parameter_counts']}, size {dir_size(os.path.join(args.out, name))} bytes")
        for f, outs in meta["io"].items():
            for k, s in outs.items():
                print(f"  {f}:{k} {s}")
        print(f"  f32 vs f64: {json.dumps(meta['f32_torch_max_abs_diff'])}")
    print(f"total size {dir_size(args.out)} bytes")


if __name__ == "__main__":
    main()

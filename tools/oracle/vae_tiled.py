"""Oracle for selfcascade-sd's tiled VAE: diffusers' `AutoencoderKL` with `enable_tiling()`.

Writes crates/selfcascade-sd/tests/fixtures/vae-tiled/:

- vae/: a tiny random-weight AutoencoderKL (3 levels, down-sampling factor 4, sample_size 32, so tiles are
  32 image pixels = 8 latent pixels, advancing by 24 / 6 and blending over 8 / 2 pixels);
- io.safetensors:
    latent [2,4,12,16]           -> decoded_tiled [2,3,48,64]   (vae.enable_tiling(); vae.decode(latent))
                                    decoded_tiled_16 [2,3,48,64] (same with 16-pixel tiles: 4 latent pixels)
                                    decoded_untiled              (plain decode, to show tiling matters)
    image [1,3,48,64]            -> mean_tiled, logvar_tiled [1,4,12,16] (enable_tiling(); encode(image))
                                    mean_tiled_16, logvar_tiled_16 (16-pixel tiles: a 4x6 grid, 4-pixel edge tiles)
                                    mean_untiled                 (plain encode)
- meta.json: versions, seeds, tile geometry, max |tiled - untiled|, max |float32 run - reference|.

With the default tiles, both 12x16 latents and 48x64 images give 2x3 grids of overlapping tiles with smaller tiles at the right
and bottom edges, so blend_v, blend_h, their in-place order and the edge crops are all exercised.

Tile sizes are ones where diffusers' geometry is consistent (stride in one space = crop in the other):
with e.g. 24-pixel tiles diffusers' tiled_decode returns a 70-pixel-wide image for a 64-pixel latent
width, and selfcascade refuses such tile sizes instead.

Every parameter is re-drawn from a fixed seed (no zero-initialised output convolution). References are
computed in float64 from the model reloaded from the written folder and stored as float32.

Run (the oracle environment of tools/oracle, HF_HUB_OFFLINE=1):

    python tools/oracle/vae_tiled.py
"""
import json
import math
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "vae-tiled")

SEED_WEIGHTS = 4242
SEED_INPUTS = 4243

CONFIG = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
              up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
              act_fn="silu", latent_channels=4, norm_num_groups=4, sample_size=32, scaling_factor=0.18215)


@torch.no_grad()
def randomize(model, seed):
    """Re-draws every parameter: conv/linear weights N(0, 1/fan_in), biases N(0, 0.1^2), norms 1 + N(0, 0.1^2)."""
    g = torch.Generator().manual_seed(seed)
    covered = set()
    for name, m in model.named_modules():
        own = dict(m.named_parameters(recurse=False))
        if not own:
            continue
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            w = own["weight"]
            w.copy_(torch.randn(w.shape, generator=g) / math.sqrt(w[0].numel()))
            if own.get("bias") is not None:
                own["bias"].copy_(torch.randn(own["bias"].shape, generator=g) * 0.1)
        elif isinstance(m, nn.GroupNorm):
            own["weight"].copy_(1 + torch.randn(own["weight"].shape, generator=g) * 0.1)
            own["bias"].copy_(torch.randn(own["bias"].shape, generator=g) * 0.1)
        else:
            raise RuntimeError(f"unexpected parameterised module {name}: {type(m)}")
        covered.update(f"{name}.{k}" for k in own)
    missing = {n for n, _ in model.named_parameters()} - covered
    assert not missing, missing


def set_tile(vae, sample_tile):
    vae.tile_sample_min_size = sample_tile
    vae.tile_latent_min_size = int(sample_tile / (2 ** (len(vae.config.block_out_channels) - 1)))


@torch.no_grad()
def run(vae, latent, image):
    dt = vae.dtype
    out = {}
    vae.disable_tiling()
    out["decoded_untiled"] = vae.decode(latent.to(dt)).sample
    out["mean_untiled"] = vae.encode(image.to(dt)).latent_dist.mean
    vae.enable_tiling()
    set_tile(vae, 32)
    out["decoded_tiled"] = vae.decode(latent.to(dt)).sample
    dist = vae.encode(image.to(dt)).latent_dist
    out["mean_tiled"] = dist.mean
    out["logvar_tiled"] = dist.logvar
    set_tile(vae, 16)
    out["decoded_tiled_16"] = vae.decode(latent.to(dt)).sample
    dist = vae.encode(image.to(dt)).latent_dist
    out["mean_tiled_16"] = dist.mean
    out["logvar_tiled_16"] = dist.logvar
    set_tile(vae, 32)
    vae.disable_tiling()
    return out


def main():
    torch.manual_seed(0)
    vae = AutoencoderKL(**CONFIG).eval()
    randomize(vae, SEED_WEIGHTS)
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    vae.save_pretrained(os.path.join(OUT, "vae"), safe_serialization=True)

    g = torch.Generator().manual_seed(SEED_INPUTS)
    latent = torch.randn((2, 4, 12, 16), generator=g)
    image = torch.rand((1, 3, 48, 64), generator=g) * 2 - 1

    ref_model = AutoencoderKL.from_pretrained(os.path.join(OUT, "vae"), torch_dtype=torch.float64).eval()
    f32_model = AutoencoderKL.from_pretrained(os.path.join(OUT, "vae")).eval()
    ref = run(ref_model, latent, image)
    f32 = run(f32_model, latent, image)

    tiling_effect = {
        "decode": float((ref["decoded_tiled"] - ref["decoded_untiled"]).abs().max()),
        "decode_16": float((ref["decoded_tiled_16"] - ref["decoded_untiled"]).abs().max()),
        "encode_mean_16": float((ref["mean_tiled_16"] - ref["mean_untiled"]).abs().max()),
        "encode_mean": float((ref["mean_tiled"] - ref["mean_untiled"]).abs().max()),
    }
    for k, v in tiling_effect.items():
        assert v > 1e-2, f"tiling does not change {k} ({v}); the fixture would not test tiling"

    tensors = {"latent": latent, "image": image}
    tensors.update({k: v.to(torch.float32).contiguous() for k, v in ref.items()})
    save_file(tensors, os.path.join(OUT, "io.safetensors"))

    meta = {
        "generator": "tools/oracle/vae_tiled.py",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "safetensors": safetensors.__version__},
        "seeds": {"weights": SEED_WEIGHTS, "inputs": SEED_INPUTS},
        "tiles": {
            "default": {"tile_sample_min_size": 32, "tile_latent_min_size": 8, "tile_overlap_factor": 0.25},
            "*_16": {"tile_sample_min_size": 16, "tile_latent_min_size": 4, "tile_overlap_factor": 0.25},
        },
        "max_abs_tiled_minus_untiled": tiling_effect,
        "reference_precision": "float64 run of the reloaded folder, stored as float32",
        "f32_torch_max_abs_diff": {k: float((f32[k].double() - ref[k].float().double()).abs().max())
                                   for k in ref},
        "max_abs": {k: float(v.abs().max()) for k, v in ref.items()},
    }
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()

"""Non-CI oracle: the full-size SD 2.1 base UNet (865.9M parameters) with random weights.

Builds UNet2DConditionModel with stabilityai/stable-diffusion-2-1-base's unet/config.json (typed in below;
nothing is downloaded), re-draws every parameter from a fixed seed with the same rule as the tiny fixtures
(tools/oracle/oracle_util.py), and writes

    DIR/unet/config.json + DIR/unet/diffusion_pytorch_model.safetensors   (float32, ~3.5 GB)
    DIR/io.safetensors   sample [1, 4, 64, 64], timestep [1] (float32), encoder_hidden_states [1, 77, 1024],
                         out [1, 4, 64, 64] (float32 forward pass)

and prints the forward time. Nothing is committed; use it to check the Rust UNet at full size.

    HF_HUB_OFFLINE=1 python tools/oracle/full_unet_sd21.py --out /tmp/sd21full
    HF_HUB_OFFLINE=1 python tools/oracle/full_unet_sd21.py --small --out /tmp/sd21small   # seconds
"""
import argparse
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_util import diffusers_scale, randomize, stats  # noqa: E402

SD21_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    only_cross_attention=False, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
    downsample_padding=1, mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5,
    cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], dual_cross_attention=False,
    use_linear_projection=True, upcast_attention=False, num_class_embeds=None,
)
FULL_PARAMS = 865_910_724

# --small: the same structure scaled down (head dim 8 instead of 64) for a quick self-check.
SMALL = dict(SD21_BASE_UNET, block_out_channels=(40, 80, 160, 160), norm_num_groups=8, cross_attention_dim=64,
             sample_size=32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--small", action="store_true", help="scaled-down config, for a quick self-check")
    ap.add_argument("--seed", type=int, default=2_100)
    ap.add_argument("--no-save-weights", action="store_true", help="write only io.safetensors")
    args = ap.parse_args()
    torch.set_grad_enabled(False)

    cfg = SMALL if args.small else SD21_BASE_UNET
    t0 = time.time()
    with torch.device("meta"):  # skip the default init; every parameter is drawn below
        unet = UNet2DConditionModel(**cfg)
    assert not list(unet.buffers()), "unexpected buffers"
    unet = unet.to_empty(device="cpu")
    n = randomize(unet, args.seed, diffusers_scale)
    unet.eval()
    print(f"built {'small' if args.small else 'full'} SD 2.1 base UNet: {n:,} parameters "
          f"({n / 1e6:.1f}M) in {time.time() - t0:.1f}s (diffusers {diffusers.__version__}, torch {torch.__version__})")
    if not args.small:
        assert n == FULL_PARAMS, f"expected {FULL_PARAMS:,} parameters, got {n:,}"

    os.makedirs(args.out, exist_ok=True)
    if not args.no_save_weights:
        t0 = time.time()
        unet.save_pretrained(os.path.join(args.out, "unet"), safe_serialization=True)
        print(f"saved {os.path.join(args.out, 'unet')} in {time.time() - t0:.1f}s")

    g = torch.Generator().manual_seed(args.seed + 100)
    s = cfg["sample_size"]
    x = {
        "sample": torch.randn(1, 4, s, s, generator=g),
        "timestep": torch.tensor([981.0]),
        "encoder_hidden_states": torch.randn(1, 77, cfg["cross_attention_dim"], generator=g),
    }
    t0 = time.time()
    out = unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"]).sample
    dt = time.time() - t0
    print(f"forward [1, 4, {s}, {s}] float32 on CPU ({torch.get_num_threads()} threads): {dt:.2f}s")
    print(f"out {stats(out)}")
    assert torch.isfinite(out).all() and 0.05 < out.std().item() < 20.0, "output is not O(1)"
    save_file({**x, "out": out.contiguous()}, os.path.join(args.out, "io.safetensors"), metadata={"format": "pt"})
    print(f"wrote {os.path.join(args.out, 'io.safetensors')}")


if __name__ == "__main__":
    main()

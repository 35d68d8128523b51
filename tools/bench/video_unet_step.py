"""One video-UNet step at 16 × 512² on the CPU: peak memory and time of selfcascade against PyTorch diffusers,
on the same random-weight full-size ModelScope text-to-video UNet and the same input, in one run.

    python3 tools/bench/video_unet_step.py [--bin target/release/selfcascade] [--model /tmp/ms-t2v-full]
                                           [--frames 16] [--size 512] [--no-torch]

1. writes `MODEL/unet/` (ali-vilab/text-to-video-ms-1.7b's UNet3DConditionModel config, every parameter drawn
   by tools/oracle/oracle_util.randomize, float32) unless it exists;
2. writes one input: `sample` [2, 4, T, size/8, size/8] (batch 2 = classifier-free guidance), `timestep` 981,
   `encoder_hidden_states` [2, 77, 1024];
3. runs `selfcascade inspect run --component unet` on it under `/usr/bin/time -v` (peak resident memory, wall
   time), and the same forward in PyTorch (float32, `torch.no_grad`, default attention) in a child process
   measured the same way;
4. prints one JSON object: both peaks and times, their ratios, and the relative L2 distance between the two
   outputs (the full-size parity check).

The machine's other load changes the times, not the ratio much; compare ratios from one run.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools", "oracle"))

# ali-vilab/text-to-video-ms-1.7b unet/config.json (diffusers defaults spelled out).
MS_UNET = dict(sample_size=32, in_channels=4, out_channels=4,
               down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
               up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
               block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1,
               mid_block_scale_factor=1, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=1024,
               attention_head_dim=64)


def build(model):
    import torch
    from diffusers import UNet3DConditionModel
    from oracle_util import diffusers_scale, randomize

    if os.path.exists(os.path.join(model, "unet", "config.json")):
        return
    t = time.time()
    torch.manual_seed(0)
    unet = UNet3DConditionModel(**MS_UNET)
    n = randomize(unet, 1700, diffusers_scale)
    unet.save_pretrained(os.path.join(model, "unet"), safe_serialization=True)
    print(f"built {model}/unet: {n / 1e9:.2f}B parameters in {time.time() - t:.0f} s", file=sys.stderr)


def inputs(path, frames, size):
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(1)
    h = size // 8
    save_file({"sample": torch.randn(2, 4, frames, h, h, generator=g), "timestep": torch.tensor([981.0]),
               "encoder_hidden_states": torch.randn(2, 77, 1024, generator=g)}, path)


def timed(cmd):
    """(peak RSS in GB, wall seconds) of `cmd` under /usr/bin/time -v."""
    t = time.time()
    r = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    wall = time.time() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return kb / 1e6, wall


def torch_child(model, inp, out):
    """The PyTorch forward (run in a child process so that its peak memory is its own)."""
    import torch
    from diffusers import UNet3DConditionModel
    from safetensors.torch import load_file, save_file

    torch.set_grad_enabled(False)
    unet = UNet3DConditionModel.from_pretrained(os.path.join(model, "unet")).eval()
    x = load_file(inp)
    y = unet(x["sample"], x["timestep"], encoder_hidden_states=x["encoder_hidden_states"]).sample
    save_file({"out": y.contiguous()}, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "selfcascade"))
    ap.add_argument("--model", default="/tmp/ms-t2v-full")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return torch_child(*args.child)
    build(args.model)
    work = os.path.join(args.model, "bench")
    os.makedirs(work, exist_ok=True)
    inp = os.path.join(work, f"in-{args.frames}x{args.size}.safetensors")
    inputs(inp, args.frames, args.size)
    ours = os.path.join(work, "out-selfcascade.safetensors")
    res = {"frames": args.frames, "size": args.size, "latent": [2, 4, args.frames, args.size // 8, args.size // 8]}
    res["selfcascade_peak_gb"], res["selfcascade_s"] = timed(
        [args.bin, "inspect", "run", "--model", args.model, "--component", "unet", "--input", inp, "--output", ours])
    if not args.no_torch:
        theirs = os.path.join(work, "out-torch.safetensors")
        res["torch_peak_gb"], res["torch_s"] = timed(
            [sys.executable, os.path.abspath(__file__), "--child", args.model, inp, theirs])
        res["peak_ratio"] = res["selfcascade_peak_gb"] / res["torch_peak_gb"]
        res["time_ratio"] = res["selfcascade_s"] / res["torch_s"]
        from safetensors.torch import load_file

        a, b = load_file(ours)["out"].double(), load_file(theirs)["out"].double()
        res["relative_l2_vs_torch"] = float((a - b).norm() / b.norm())
    print(json.dumps(res))


if __name__ == "__main__":
    main()

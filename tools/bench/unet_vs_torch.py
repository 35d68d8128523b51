"""Time one SD 2.1 base UNet forward (random weights, fp32, CPU) in diffusers/PyTorch and in selfcascade,
in one run on the same machine, and print the ratio selfcascade / PyTorch.

    python tools/bench/unet_vs_torch.py [--side 64] [--batch 1] [--threads 2] [--repeats 2]

Needs the oracle environment of tools/oracle/README.md and a release build of the example
(`cargo build --release -p selfcascade-sd --example unet_forward`; the script runs it).
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
    cross_attention_dim=1024, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, norm_eps=1e-5, norm_num_groups=32,
    out_channels=4, sample_size=64, up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    use_linear_projection=True, upcast_attention=False,
)


def torch_time(side, batch, threads, repeats):
    import torch
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**CONFIG).eval()
    x = torch.randn(batch, 4, side, side)
    ctx = torch.randn(batch, 77, 1024)
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            unet(x, 500, encoder_hidden_states=ctx)
            times.append(time.perf_counter() - t)
    return min(times)


def rust_time(side, batch, threads, repeats):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = ["cargo", "run", "-q", "--release", "-p", "selfcascade-sd", "--example", "unet_forward", "--",
           str(side), str(batch), str(repeats)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["forward_s"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--side", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    pt = torch_time(a.side, a.batch, a.threads, a.repeats)
    rs = rust_time(a.side, a.batch, a.threads, a.repeats)
    print(json.dumps(dict(side=a.side, batch=a.batch, threads=a.threads, torch_s=round(pt, 3), selfcascade_s=round(rs, 3),
                          ratio=round(rs / pt, 3))))


if __name__ == "__main__":
    sys.exit(main())

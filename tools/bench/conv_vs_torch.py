"""Time CPU 2-D convolutions of SD 2.1's UNet and VAE in PyTorch and in selfcascade, in one run, and print
the ratios.

    python tools/bench/conv_vs_torch.py [--threads 2] [--repeats 3] [--batch 1]

selfcascade: the owned kernel the models use on burn-flex (`nn::cpu::conv2d`) and burn's op, from
`cargo run --release -p selfcascade-sd --example conv_speed` (built and run by this script).
PyTorch: `torch.nn.functional.conv2d`, float32, `--threads` threads.
"""
import argparse
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from rust_example import print_ratios, run  # noqa: E402

# (in, out, side, kernel, stride, dilation): the UNet at a 64² latent, a 2× dilated conv (ScaleCrafter),
# a downsampler, a 1×1 shortcut, and the VAE decoder's widest layers at 256².
SHAPES = [
    (4, 320, 64, 3, 1, 1),
    (320, 320, 64, 3, 1, 1),
    (640, 640, 32, 3, 1, 1),
    (1280, 1280, 16, 3, 1, 1),
    (1280, 1280, 8, 3, 1, 1),
    (320, 320, 64, 3, 2, 1),
    (640, 320, 64, 1, 1, 1),
    (320, 320, 64, 3, 1, 2),
    (512, 512, 128, 3, 1, 1),
    (256, 256, 256, 3, 1, 1),
]


def torch_time(shape, batch, threads, repeats):
    import torch
    import torch.nn.functional as F

    c_in, c_out, side, k, stride, dilation = shape
    torch.set_num_threads(threads)
    x = torch.randn(batch, c_in, side, side)
    w = torch.randn(c_out, c_in, k, k) * 0.05
    b = torch.randn(c_out)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            F.conv2d(x, w, b, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation)
            best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    for shape in SHAPES:
        torch_s = torch_time(shape, args.batch, args.threads, args.repeats)
        print_ratios(run("conv_speed", [*shape, args.batch, args.repeats], args.threads), torch_s)


if __name__ == "__main__":
    main()

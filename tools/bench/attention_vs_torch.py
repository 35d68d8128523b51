"""Time CPU self-attention (SD 2.1 shapes) in PyTorch and in selfcascade, in one run, and print the ratios.

    python tools/bench/attention_vs_torch.py [--tokens 4096 16384] [--heads 5] [--head-dim 64] [--threads 2]

selfcascade: the owned kernel the models use on burn-flex (`nn::cpu::attention`) and burn's fused op, from
`cargo run --release -p selfcascade-sd --example attention_speed` (built and run by this script).
PyTorch: `torch.nn.functional.scaled_dot_product_attention`, float32, `--threads` threads.
"""
import argparse
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from rust_example import print_ratios, run  # noqa: E402


def torch_time(tokens, heads, head_dim, threads, repeats):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    q, k, v = (torch.randn(1, heads, tokens, head_dim) for _ in range(3))
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            t = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v)
            best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--heads", type=int, default=5)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    for tokens in args.tokens:
        torch_s = torch_time(tokens, args.heads, args.head_dim, args.threads, args.repeats)
        ours = run("attention_speed", [tokens, args.heads, args.head_dim, args.repeats], args.threads)
        print_ratios(ours, torch_s)


if __name__ == "__main__":
    main()

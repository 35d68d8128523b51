"""Time CPU self-attention (SD 2.1 shapes) in PyTorch and in selfcascade, in one run, and print the ratios.

    python tools/bench/attention_vs_torch.py [--tokens 4096 16384] [--heads 5] [--head-dim 64] [--threads 2]

selfcascade: the owned kernel the models use on burn-flex (`nn::cpu::attention`) and burn's fused op, from
`cargo run --release -p selfcascade-sd --example attention_speed` (built and run by this script).
PyTorch: `torch.nn.functional.scaled_dot_product_attention`, float32, `--threads` threads.
"""
import argparse
import json
import os
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    for tokens in args.tokens:
        torch_s = torch_time(tokens, args.heads, args.head_dim, args.threads, args.repeats)
        cmd = ["cargo", "run", "-q", "--release", "-p", "selfcascade-sd", "--example", "attention_speed", "--",
               str(tokens), str(args.heads), str(args.head_dim), str(args.repeats)]
        ours = json.loads(subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True,
                                         text=True).stdout.strip().splitlines()[-1])
        print(json.dumps(dict(ours, torch_s=round(torch_s, 4), owned_over_torch=round(ours["owned_s"] / torch_s, 2),
                              burn_over_torch=round(ours["burn_s"] / torch_s, 2))), flush=True)


if __name__ == "__main__":
    main()

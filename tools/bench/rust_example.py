"""Shared by the *_vs_torch.py scripts: run a release build of a selfcascade-sd example and compare its
timings with PyTorch's."""
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(example, args, threads):
    """The last JSON line printed by `cargo run --release -p selfcascade-sd --example EXAMPLE -- ARGS`,
    with rayon limited to `threads` threads."""
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = ["cargo", "run", "-q", "--release", "-p", "selfcascade-sd", "--example", example, "--", *map(str, args)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def print_ratios(ours, torch_s):
    """One JSON line: the example's figures, PyTorch's time and the ratios of `owned_s` and `burn_s` to it."""
    print(json.dumps(dict(ours, torch_s=round(torch_s, 5), owned_over_torch=round(ours["owned_s"] / torch_s, 2),
                          burn_over_torch=round(ours["burn_s"] / torch_s, 2))), flush=True)

"""Seconds per image of pytorch-fid's FID Inception-v3 on the CPU (float32, random weights, pool3
features), the reference for `cargo run --release -p selfcascade-eval --example time_inception` (same
batch, best of the same number of rounds).

Usage: /root/oracle-venv/bin/python tools/oracle/time_inception.py [BATCH ROUNDS]
"""
import os
import sys
import time

import torch

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fid import fid_inception  # noqa: E402

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 8
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
net = fid_inception().eval()
net.fc = torch.nn.Identity()  # pool3 features: the classifier is not part of FID
x = torch.rand(batch, 3, 299, 299) * 2 - 1
with torch.no_grad():
    assert net(x).shape == (batch, 2048)
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        net(x)
        best = min(best, time.perf_counter() - t)
print(f"pytorch {torch.__version__} ({torch.get_num_threads()} threads): {best / batch:.4f} s/image "
      f"(batch {batch}, best of {rounds})")

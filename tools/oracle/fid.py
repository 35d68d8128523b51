"""Reference values for FID/KID (crates/selfcascade-eval/tests/oracle.rs), from clean-fid and pytorch-fid.

1. Test images (PNG) of several sizes and aspect ratios, written to fixtures/fid/images/.
2. Pillow resizing: each image resized to 61x47 by clean-fid's float-channel bicubic resizer
   (cleanfid.resize.make_resizer("PIL", False, "bicubic", ...)) and by Pillow's 8-bit Lanczos.
3. The FID Inception-v3 exactly as pytorch-fid builds it (pytorch_fid.inception.InceptionV3 with the FID
   blocks, pool3 output), its state dict filled by a formula that the Rust test reproduces bit for bit
   (no 95 MB weight file in the repository): tensor k of the sorted key list, element i, takes
   u = splitmix64((k << 32) | i) >> 11 / 2^53 and
       conv.weight            (2u - 1) * sqrt(3) * sqrt(2 / fan_in)
       bn.weight              0.8 + 0.4 u
       bn.bias, running_mean  0.2 u - 0.1
       bn.running_var         0.5 + u
       fc.*                   0.01 (2u - 1)
   The features of every test image, preprocessed by clean-fid's "clean" resizer (float bicubic to
   299x299) and by torchvision's Resize(299, LANCZOS) + CenterCrop(299), then (x - 128) / 128 as clean-fid
   feeds its network, computed in float64.
4. FID and KID maths on random feature sets: cleanfid.fid.frechet_distance on np.mean / np.cov, and the
   kernel distance of cleanfid.fid.kernel_distance on given subsets (and on whole sets, where clean-fid's
   own function is deterministic).

Writes crates/selfcascade-eval/tests/fixtures/fid/{images/*.png, resize.safetensors, keys.json,
features.safetensors, metrics.safetensors, metrics.json}.

Usage: /root/oracle-venv/bin/python tools/oracle/fid.py   (needs clean-fid, pytorch-fid, scipy)
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from safetensors.numpy import save_file

import cleanfid.fid as cfid
from cleanfid.resize import build_resizer, make_resizer
import pytorch_fid.inception as pfi

sys.dont_write_bytecode = True
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates/selfcascade-eval/tests/fixtures/fid")
MASK64 = (1 << 64) - 1


def splitmix64(x):
    """Vectorised splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def formula_tensor(k, name, shape):
    n = int(np.prod(shape)) if len(shape) else 1
    idx = (np.uint64(k) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
    u = (splitmix64(idx) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    if name.endswith("conv.weight"):
        fan_in = int(np.prod(shape[1:]))
        v = (2.0 * u - 1.0) * (np.sqrt(3.0) * np.sqrt(2.0 / fan_in))
    elif name.endswith("bn.weight"):
        v = 0.8 + 0.4 * u
    elif name.endswith("bn.bias") or name.endswith("running_mean"):
        v = 0.2 * u - 0.1
    elif name.endswith("running_var"):
        v = 0.5 + u
    else:
        v = 0.01 * (2.0 * u - 1.0)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def fid_inception():
    """pytorch-fid's FID Inception structure (fid_inception_v3 without its download)."""
    inc = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    inc.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    inc.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    inc.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    inc.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    inc.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    inc.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    inc.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    inc.Mixed_7b = pfi.FIDInceptionE_1(1280)
    inc.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return inc


def template_keys():
    return {k: list(v.shape) for k, v in fid_inception().state_dict().items()}


def make_images():
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (97, 131), (299, 299), (420, 260)]
    paths = []
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    for i, (w, h) in enumerate(sizes):
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        chans = []
        for c in range(3):
            f = 0.5 + 0.5 * np.sin(x * (0.05 + 0.03 * c) + y * (0.08 - 0.02 * c) + i)
            f = f * (0.6 + 0.4 * np.cos((x - w / 2) * (y - h / 3) * 0.001 * (c + 1)))
            chans.append(f)
        img = np.stack(chans, -1) * 230 + rng.integers(0, 6, (h, w, 3))
        # Hard edges (a dark disc) so resizing meets both smooth and sharp content.
        disc = (x - w * 0.6) ** 2 + (y - h * 0.4) ** 2 < (min(w, h) * 0.25) ** 2
        img[disc] = [20, 40, 200]
        path = os.path.join(OUT, "images", f"{i:02d}.png")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def main():
    paths = make_images()
    arrays = [np.array(Image.open(p).convert("RGB")) for p in paths]

    # 2. Resizing.
    small = make_resizer("PIL", False, "bicubic", (61, 47))
    resize = {}
    for i, (p, a) in enumerate(zip(paths, arrays)):
        resize[f"bicubic_f.{i}"] = small(a).astype(np.float32)  # [47, 61, 3]
        lz = Image.open(p).convert("RGB").resize((61, 47), resample=Image.LANCZOS)
        resize[f"lanczos_u8.{i}"] = np.asarray(lz).astype(np.float32)
    save_file(resize, os.path.join(OUT, "resize.safetensors"))

    # 3. The network and its features.
    shapes = template_keys()
    keys = sorted(shapes)
    sd = {}
    for k, name in enumerate(keys):
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(0, dtype=torch.long)
        else:
            sd[name] = formula_tensor(k, name, shapes[name])
    pfi.load_state_dict_from_url = lambda *a, **kw: sd
    net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=False,
                          normalize_input=False, use_fid_inception=True).double().eval()
    with open(os.path.join(OUT, "keys.json"), "w") as f:
        json.dump([[k, shapes[k]] for k in keys], f)

    clean = build_resizer("clean")
    lanczos_crop = T.Compose([T.Resize(299, interpolation=T.InterpolationMode.LANCZOS), T.CenterCrop(299)])
    inputs = {
        "clean": np.stack([clean(a) for a in arrays]),
        "lanczos_crop": np.stack([np.asarray(lanczos_crop(Image.open(p).convert("RGB"))).astype(np.float32)
                                  for p in paths]),
    }
    feats = {}
    with torch.no_grad():
        for mode, x in inputs.items():
            t = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).double()
            f = net((t - 128) / 128)[0].reshape(len(paths), 2048)
            feats[mode] = f.float().numpy()
            print(mode, "feature mean", float(f.mean()), "std", float(f.std()), "max", float(f.max()))
    save_file(feats, os.path.join(OUT, "features.safetensors"))

    # 4. FID / KID maths.
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((300, 64)) @ rng.standard_normal((64, 64)) * 0.3).astype(np.float32)
    b = (rng.standard_normal((250, 64)) @ rng.standard_normal((64, 64)) * 0.3 + 0.2).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    fid = cfid.frechet_distance(a64.mean(0), np.cov(a64, rowvar=False), b64.mean(0), np.cov(b64, rowvar=False))
    m, subsets = 50, 5
    xs = np.stack([rng.choice(300, m, replace=False) for _ in range(subsets)])
    ys = np.stack([rng.choice(250, m, replace=False) for _ in range(subsets)])
    d = a.shape[1]
    values = []
    for x_idx, y_idx in zip(xs, ys):
        x, y = a64[x_idx], b64[y_idx]
        k_xx = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        values.append(((k_xx.sum() - np.diag(k_xx).sum()) / (m - 1) - k_xy.sum() * 2 / m) / m)
    values = np.array(values)
    # Whole sets of equal size: every clean-fid subset is a permutation, so its random draws do not matter.
    kid_whole = cfid.kernel_distance(a64[:250], b64, num_subsets=3, max_subset_size=1000)
    save_file({"a": a, "b": b, "kid_x": xs.astype(np.int64), "kid_y": ys.astype(np.int64)},
              os.path.join(OUT, "metrics.safetensors"))
    with open(os.path.join(OUT, "metrics.json"), "w") as f:
        json.dump({"fid": float(fid), "kid_subsets_mean": float(values.mean()),
                   "kid_subsets_std": float(values.std()), "kid_whole": float(kid_whole)}, f, indent=1)
    print("fid", fid, "kid", values.mean(), values.std(), "kid_whole", kid_whole)


if __name__ == "__main__":
    main()

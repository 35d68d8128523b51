"""One-time check (not in CI) that the PyTorch checkpoints written by Rust (`ResBlockUpsampler::save_pth`,
`selfcascade_sd::load::write_pth_state_dict`) are what torch reads.

Usage:

    SELFCASCADE_PTH_CHECK_DIR=/tmp/pth-check cargo test -p selfcascade-sd --test upsampler save_pth_round_trips
    HF_HUB_OFFLINE=1 /root/oracle-venv/bin/python tools/oracle/check_pth_write.py /tmp/pth-check

The Rust test leaves there, for two scrambled upsamplers (the tiny (2, 4) one and the tiny UNet's (16, 24, 32,
32) one), `NAME.pth` and the same module as `NAME.safetensors` (config in its metadata). For each pair this
script checks:

- the zip: entries `NAME/data.pkl`, `NAME/byteorder` ("little"), `NAME/data/0..n-1`, `NAME/version`, all
  stored (uncompressed), the storages' bytes aligned to 64 in the file;
- `torch.load(path, weights_only=True)` (and with `mmap=True`) gives exactly `{"state_dict": OrderedDict}`
  whose tensors are float32, contiguous, offset 0, without gradient, with the safetensors file's names,
  shapes and bits;
- the keys come in the order of the PyTorch module's own `state_dict()` (the release's ResBlocks, as
  `tools/oracle/feature_upsampler.py` builds them), which loads the dictionary with `strict=True`.

Prints one line per file and exits non-zero on the first failure.
"""
import collections
import json
import os
import struct
import sys
import zipfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from feature_upsampler import Checkpoint  # noqa: E402


def check_zip(path, n_tensors):
    stem = os.path.splitext(os.path.basename(path))[0]
    with zipfile.ZipFile(path) as z, open(path, "rb") as f:
        infos = z.infolist()
        names = [i.filename for i in infos]
        want = ([f"{stem}/data.pkl", f"{stem}/byteorder"] + [f"{stem}/data/{k}" for k in range(n_tensors)]
                + [f"{stem}/version"])
        assert names == want, f"entries {names}"
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos), "compressed entries"
        assert z.read(f"{stem}/byteorder") == b"little"
        assert z.read(f"{stem}/version") == b"3\n"
        assert z.testzip() is None, "bad CRC"
        for i in infos:
            if "/data/" not in i.filename:
                continue
            f.seek(i.header_offset)
            head = f.read(30)
            assert head[:4] == b"PK\x03\x04"
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            start = i.header_offset + 30 + name_len + extra_len
            assert start % 64 == 0, f"{i.filename} starts at {start}"
    return len(names)


def check(pth, st):
    config = json.loads(safe_open(st, "pt").metadata()["config"])
    want = load_file(st)
    for mmap in (False, True):
        obj = torch.load(pth, weights_only=True, mmap=mmap)
        assert type(obj) is dict and list(obj) == ["state_dict"], f"top level {type(obj)} {list(obj)}"
        sd = obj["state_dict"]
        assert type(sd) is collections.OrderedDict, type(sd)
        assert sorted(sd) == sorted(want), f"names differ: {sorted(set(sd) ^ set(want))}"
        for k, t in sd.items():
            w = want[k]
            assert type(t) is torch.Tensor and t.dtype == torch.float32, f"{k}: {type(t)} {t.dtype}"
            assert t.is_contiguous() and t.storage_offset() == 0 and not t.requires_grad, k
            assert t.shape == w.shape, f"{k}: {tuple(t.shape)} vs {tuple(w.shape)}"
            assert torch.equal(t.view(torch.int32), w.view(torch.int32)), f"{k}: values differ"
    module = Checkpoint(config["channels"], config["time_embed_dim"], config["groups"])
    assert list(sd) == list(module.state_dict()), "key order differs from the PyTorch module's"
    module.load_state_dict(sd, strict=True)
    entries = check_zip(pth, len(sd))
    n = sum(t.numel() for t in sd.values())
    print(f"{os.path.basename(pth)}: OK ({len(sd)} tensors, {n} values bit-identical to "
          f"{os.path.basename(st)}, {entries} zip entries, storages 64-byte aligned, mmap too, "
          f"strict load into channels {config['channels']})")


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SELFCASCADE_PTH_CHECK_DIR")
    if not folder:
        sys.exit(__doc__)
    pths = sorted(f for f in os.listdir(folder) if f.endswith(".pth"))
    if not pths:
        sys.exit(f"no .pth files in {folder}")
    print(f"torch {torch.__version__}")
    for name in pths:
        st = os.path.join(folder, name[: -len(".pth")] + ".safetensors")
        check(os.path.join(folder, name), st)


if __name__ == "__main__":
    main()

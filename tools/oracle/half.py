"""Oracle: PyTorch's own error in half precision on the tiny UNet fixtures (CPU).

For each family under crates/selfcascade-sd/tests/fixtures/models (sd15, sd21, sdxl) it loads the UNet
(float32 values of the committed weights), casts it to float16 and to bfloat16, runs it on the inputs of
io/unet.safetensors (cast to the half type; the timestep stays float32 as in diffusers' pipelines), and
records the relative L2 error of each output against the float32 output `out` / `out_b1` of that file:

    crates/selfcascade-sd/tests/fixtures/models/half.json
        {"sd15": {"f16": {"out": e, "out_b1": e}, "bf16": {...}}, ...}

tests/half.rs requires selfcascade's half-precision UNet to stay within a small multiple of these errors.

    HF_HUB_OFFLINE=1 python tools/oracle/half.py
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

sys.dont_write_bytecode = True
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MODELS = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "models")
DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16}


def rel_l2(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def main():
    torch.manual_seed(0)
    report = {"generator": "tools/oracle/half.py",
              "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__}}
    for family in ["sd15", "sd21", "sdxl"]:
        d = os.path.join(MODELS, family)
        variant = "fp16" if family == "sd21" else None
        io = load_file(os.path.join(d, "io", "unet.safetensors"))
        report[family] = {}
        for name, dt in DTYPES.items():
            unet = UNet2DConditionModel.from_pretrained(os.path.join(d, "unet"), variant=variant,
                                                        torch_dtype=torch.float32).to(dt).eval()
            errs = {}
            for sfx in ["", "_b1"]:
                kw = {}
                if "text_embeds" + sfx in io:
                    kw["added_cond_kwargs"] = {"text_embeds": io["text_embeds" + sfx].to(dt),
                                               "time_ids": io["time_ids" + sfx].to(dt)}
                out = unet(io["sample" + sfx].to(dt), io["timestep" + sfx],
                           encoder_hidden_states=io["encoder_hidden_states" + sfx].to(dt), **kw).sample
                errs["out" + sfx] = rel_l2(out.float(), io["out" + sfx])
            report[family][name] = errs
            print(family, name, errs)
    with open(os.path.join(MODELS, "half.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()

"""Shared helpers for the model oracles (tools/oracle/models.py, tools/oracle/full_unet_sd21.py)."""
import math
import re

import torch
from torch import nn

LINEAR_BIAS_STD = 0.1
NORM_STD = 0.1
STREAM_SCALE = 0.05

# Layers that read a normalised (unit-scale) activation and write into a residual stream or straight into
# a norm: their weights and biases are scaled by STREAM_SCALE, so every GroupNorm / LayerNorm sees inputs of
# variance ~1e-3..1e-1 instead of ~1. The norms' epsilons (1e-5 vs 1e-6) then move the outputs by ~1e-4..1e-3,
# far above float32 noise, so a wrong epsilon is visible. Layers that read a stream and write a stream
# (conv_shortcut, down/up-sampler convs, proj_out) keep unit gain, so no branch is drowned.
_DIFFUSERS_STREAM = re.compile(r"(^|\.)(conv_in|conv1|conv2|time_emb_proj|proj_in|to_out\.0|ff\.net\.2)$")
_CLIP_STREAM = re.compile(r"\.(out_proj|fc2)$")


def diffusers_scale(name: str, module: nn.Module) -> float:
    """Gain rule for diffusers UNet2DConditionModel / AutoencoderKL modules (see STREAM_SCALE)."""
    return STREAM_SCALE if _DIFFUSERS_STREAM.search(name) else 1.0


def clip_scale(name: str, module: nn.Module) -> float:
    """Gain rule for transformers CLIP text models: token/position embeddings, attention out_proj and mlp
    fc2 write the residual stream (see STREAM_SCALE)."""
    return STREAM_SCALE if isinstance(module, nn.Embedding) or _CLIP_STREAM.search(name) else 1.0


@torch.no_grad()
def randomize(model: nn.Module, seed: int, scale=lambda name, module: 1.0, device="cpu") -> int:
    """Re-initialise EVERY parameter of `model` from a generator seeded with `seed`.

    - Linear / Conv weights: N(0, (gain^2)/fan_in), biases N(0, (0.1 gain)^2), where gain = scale(name, module)
      (1 or STREAM_SCALE). No layer is an identity or a zero (diffusers zero-initialises e.g. `proj_out`).
    - GroupNorm / LayerNorm: weight 1 + N(0, 0.1^2), bias N(0, 0.1^2) (so a missing affine is visible).
    - Embeddings: N(0, gain^2).

    Parameters are visited in `named_modules` order, which is fixed for a given config. Raises if any
    parameter is not covered. Returns the number of parameters. `device` is where the generator draws
    (a model on a GPU is filled there, much faster; the values then differ from the CPU's).
    """
    g = torch.Generator(device=device).manual_seed(seed)

    def rand(p, std, mean=0.0):
        p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32, device=device).to(p.dtype) * std + mean)

    seen = set()
    for name, m in model.named_modules():
        own = dict(m.named_parameters(recurse=False))
        if not own:
            continue
        gain = scale(name, m)
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            w = own["weight"]
            fan_in = w[0].numel()
            rand(w, gain / math.sqrt(fan_in))
            if own.get("bias") is not None:
                rand(own["bias"], LINEAR_BIAS_STD * gain)
        elif isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
            rand(own["weight"], NORM_STD, 1.0)
            if own.get("bias") is not None:
                rand(own["bias"], NORM_STD)
        elif isinstance(m, nn.Embedding):
            rand(own["weight"], gain)
        else:
            raise TypeError(f"randomize: no rule for parameters of {type(m).__name__}: {list(own)}")
        seen.update(id(p) for p in own.values())
    missing = [n for n, p in model.named_parameters() if id(p) not in seen]
    if missing:
        raise RuntimeError(f"randomize: parameters not covered: {missing}")
    return sum(p.numel() for p in model.parameters())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stats(t: torch.Tensor) -> dict:
    t = t.detach().to(torch.float64)
    return {
        "shape": list(t.shape),
        "mean": round(t.mean().item(), 6),
        "std": round(t.std().item(), 6) if t.numel() > 1 else 0.0,
        "max_abs": round(t.abs().max().item(), 6),
    }

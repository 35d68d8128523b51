"""Oracle for the video UNet: a tiny random-weight diffusers `UNet3DConditionModel` (ModelScope text-to-video's
architecture) and its outputs, plus its two temporal layers on their own.

Writes crates/selfcascade-sd/tests/fixtures/models/ms-t2v/:

- unet/: the UNet as `save_pretrained` writes it (config.json, diffusion_pytorch_model.fp16.safetensors: the
  fp16 variant);
- io/unet.safetensors: inputs [B, C, T, h, w] and reference outputs (two cases: batch 2 × 4 frames at 8×8,
  and batch 1 × 3 frames at 6×10, where 6 and 10 are not multiples of 4 so the up-samplers get explicit sizes);
- io/pivot.safetensors: `pivot` and `out_pivot` for case 1: the tuned self-cascade's injection in the video UNet,
  written out below (`forward_with_pivot`): the pivot video (half the frame size, frames folded into the batch)
  through conv_in, transformer_in and the same blocks, and phi_n(h, temb, size) = C[n] * nearest(h, size) +
  0.01 * mean(temb) (temb repeated per frame) added after down blocks 0..2 and the mid block;
- io/layers.safetensors: a `TemporalConvLayer` and a `TransformerTemporalModel` (weights under `temp_conv.*` and
  `temp_attn.*`), their inputs [B·T, C, h, w] and outputs;
- io/meta.json: versions, seeds, parameter count, and how much the temporal layers move the output.

Every parameter is re-drawn (oracle_util.randomize), including the ones diffusers zero-initialises
(`TemporalConvLayer.conv4`), so the temporal path is not an identity: meta.json records the output change when
the temporal layers' last convolutions and output projections are zeroed again, and the script fails if that
change is small. References are computed in float64 from the UNet reloaded from the written folder and stored as
float32.

Run (environment: tools/oracle/README.md):

    HF_HUB_OFFLINE=1 python tools/oracle/unet3d.py
"""
import copy
import json
import os
import re
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import UNet3DConditionModel  # noqa: E402
from diffusers.models.resnet import TemporalConvLayer  # noqa: E402
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_util import STREAM_SCALE, diffusers_scale, randomize, stats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "models", "ms-t2v")

SEED = 700
CROSS = 32  # the tiny SD 2.1 text encoder's width (fixtures/models/sd21), so the two make a pipeline
# ModelScope's structure (ali-vilab/text-to-video-ms-1.7b: block_out_channels (320, 640, 1280, 1280),
# attention_head_dim 64, 32 groups), shrunk: three levels, heads of width 8, 4 groups.
UNET = dict(sample_size=8, in_channels=4, out_channels=4,
            down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"),
            block_out_channels=(16, 32, 32), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
            act_fn="silu", norm_num_groups=4, norm_eps=1e-5, cross_attention_dim=CROSS, attention_head_dim=8)

# The temporal convolutions write into a residual (conv4) or into a norm (conv1..3): stream gain, as for the
# 2-D layers in oracle_util.
_TEMPORAL_STREAM = re.compile(r"\.conv[1-4]\.\d+$")


def scale(name, module):
    return STREAM_SCALE if _TEMPORAL_STREAM.search(name) else diffusers_scale(name, module)


C = [0.5, -0.25, 0.75, 0.3]


def phi(n, h, temb, size):
    return C[n] * F.interpolate(h, size=size, mode="nearest") + 0.01 * temb.mean(dim=1)[:, None, None, None]


@torch.no_grad()
def forward_with_pivot(unet, sample, t, ehs, pivot, phi=phi):
    """diffusers' UNet3DConditionModel.forward for these blocks, with the pivot injected."""
    b, c, f, h, w = sample.shape
    n_up = len(unet.up_blocks) - 1
    forward_size = any(s % (2 ** n_up) for s in sample.shape[-2:])
    emb = unet.time_embedding(unet.time_proj(t.expand(b)).to(sample.dtype)).repeat_interleave(f, dim=0)
    ehs = ehs.repeat_interleave(f, dim=0)

    def fold(x):
        return x.permute(0, 2, 1, 3, 4).reshape(x.shape[0] * x.shape[2], x.shape[1], *x.shape[3:])

    x = unet.transformer_in(unet.conv_in(fold(sample)), num_frames=f, return_dict=False)[0]
    p = unet.transformer_in(unet.conv_in(fold(pivot)), num_frames=f, return_dict=False)[0]
    skips = (x,)
    for i, block in enumerate(unet.down_blocks):
        kw = dict(encoder_hidden_states=ehs) if getattr(block, "has_cross_attention", False) else {}
        x, res = block(hidden_states=x, temb=emb, num_frames=f, **kw)
        skips += res
        p, _ = block(hidden_states=p, temb=emb, num_frames=f, **kw)
        if i < 3:
            x = x + phi(i, p, emb, tuple(x.shape[-2:]))
    x = unet.mid_block(x, emb, encoder_hidden_states=ehs, num_frames=f)
    p = unet.mid_block(p, emb, encoder_hidden_states=ehs, num_frames=f)
    x = x + phi(min(3, len(unet.down_blocks)), p, emb, tuple(x.shape[-2:]))
    for i, block in enumerate(unet.up_blocks):
        res = skips[-len(block.resnets):]
        skips = skips[: -len(block.resnets)]
        size = skips[-1].shape[2:] if (forward_size and i < n_up) else None
        kw = dict(encoder_hidden_states=ehs) if getattr(block, "has_cross_attention", False) else {}
        x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=size, num_frames=f, **kw)
    x = unet.conv_out(unet.conv_act(unet.conv_norm_out(x)))
    return x.reshape(b, f, *x.shape[1:]).permute(0, 2, 1, 3, 4)


def f32(d):
    return {k: v.detach().to(torch.float32).contiguous() for k, v in d.items()}


@torch.no_grad()
def run(unet, x):
    dt = unet.dtype
    out = {}
    for sfx in ["", "_b1"]:
        out["out" + sfx] = unet(x["sample" + sfx].to(dt), x["timestep" + sfx],
                                encoder_hidden_states=x["encoder_hidden_states" + sfx].to(dt)).sample
    return out


@torch.no_grad()
def zero_temporal_outputs(unet):
    """The UNet with every temporal layer an identity again (diffusers' initialisation of conv4; proj_out)."""
    u = copy.deepcopy(unet)
    for name, m in u.named_modules():
        if isinstance(m, TemporalConvLayer):
            m.conv4[-1].weight.zero_()
            m.conv4[-1].bias.zero_()
        if isinstance(m, TransformerTemporalModel):
            m.proj_out.weight.zero_()
            m.proj_out.bias.zero_()
    return u


@torch.no_grad()
def layers(g, meta):
    """A TemporalConvLayer and a TransformerTemporalModel on their own (batch 2 × 3 frames, 16 ch, 4×5)."""
    frames, c = 3, 16
    conv = TemporalConvLayer(c, c, dropout=0.1, norm_num_groups=4).eval()
    attn = TransformerTemporalModel(num_attention_heads=2, attention_head_dim=8, in_channels=c, num_layers=1,
                                    norm_num_groups=4, cross_attention_dim=CROSS).eval()
    meta["temp_conv_params"] = randomize(conv, SEED + 10, scale)
    meta["temp_attn_params"] = randomize(attn, SEED + 11, scale)
    x = torch.randn(2 * frames, c, 4, 5, generator=g)
    conv64, attn64 = conv.double(), attn.double()
    out = {
        "x": x,
        "temp_conv_out": conv64(x.double(), num_frames=frames),
        "temp_attn_out": attn64(x.double(), num_frames=frames, return_dict=False)[0],
    }
    weights = {f"temp_conv.{k}": v for k, v in conv.state_dict().items()}
    weights.update({f"temp_attn.{k}": v for k, v in attn.state_dict().items()})
    for k, v in out.items():
        if k != "x":
            assert (v - x.double()).abs().max() > 1e-2, f"{k} is (nearly) an identity"
    return {**weights, **out}, {"frames": frames}


def main():
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "io"))
    torch.manual_seed(SEED)
    unet = UNet3DConditionModel(**UNET)
    meta = {"generator": "tools/oracle/unet3d.py",
            "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
            "seeds": {"unet_weights": SEED + 1, "io_inputs": SEED + 100, "temp_conv": SEED + 10,
                      "temp_attn": SEED + 11}}
    meta["parameter_counts"] = {"unet": randomize(unet, SEED + 1, scale)}
    # Saved as the fp16 variant (as ModelScope's repository ships it), rounded first so that the reference
    # runs with exactly the stored values.
    for p in unet.parameters():
        p.copy_(p.half().float())
    copy.deepcopy(unet).half().save_pretrained(os.path.join(OUT, "unet"), variant="fp16", safe_serialization=True)
    r = UNet3DConditionModel.from_pretrained(os.path.join(OUT, "unet"), variant="fp16",
                                             dtype=torch.float64).eval()
    sa, sb = unet.state_dict(), r.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k].double(), sb[k]) for k in sa)

    g = torch.Generator().manual_seed(SEED + 100)
    x = {
        "sample": torch.randn(2, 4, 4, 8, 8, generator=g),
        "timestep": torch.tensor([981.0, 1.0]),
        "encoder_hidden_states": torch.randn(2, 7, CROSS, generator=g),
        "sample_b1": torch.randn(1, 4, 3, 6, 10, generator=g),
        "timestep_b1": torch.tensor(500, dtype=torch.int64),
        "encoder_hidden_states_b1": torch.randn(1, 5, CROSS, generator=g),
    }
    y = run(r, x)
    # The tuned injection on case 1 (pivot: half the frame size).
    x["pivot"] = torch.randn(2, 4, 4, 4, 4, generator=g)
    s64 = {k: x[k].double() for k in ("sample", "encoder_hidden_states", "pivot")}
    plain = forward_with_pivot(r, s64["sample"], x["timestep"], s64["encoder_hidden_states"], s64["pivot"],
                               phi=lambda n, h, temb, size: 0.0)
    assert (plain - y["out"]).abs().max() < 1e-10, "the written-out forward is not diffusers' forward"
    y_pivot = forward_with_pivot(r, s64["sample"], x["timestep"], s64["encoder_hidden_states"], s64["pivot"])
    assert (y_pivot - y["out"]).abs().max() > 1e-2
    y32 = run(copy.deepcopy(r).float(), x)
    y_plain = run(zero_temporal_outputs(r), x)
    for k, v in y.items():
        s = v.std().item()
        assert 0.05 < s < 20.0, f"{k}: std {s} is not O(1)"
    temporal = {k: float((y[k] - y_plain[k]).abs().max()) for k in y}
    assert min(temporal.values()) > 1e-2, f"the temporal layers barely move the output: {temporal}"
    meta["f32_torch_max_abs_diff"] = {k: float((y[k] - y32[k].double()).abs().max()) for k in y}
    meta["temporal_layers_effect"] = {
        "what": "max |output - output with TemporalConvLayer.conv4 and TransformerTemporalModel.proj_out zeroed|",
        **temporal}
    md = {"format": "pt"}
    pivot = x.pop("pivot")
    save_file(f32({**x, **y}), os.path.join(OUT, "io", "unet.safetensors"), metadata=md)
    save_file(f32({"pivot": pivot, "out_pivot": y_pivot}), os.path.join(OUT, "io", "pivot.safetensors"), metadata=md)
    layer_tensors, layer_meta = layers(g, meta)
    meta["layers"] = layer_meta
    save_file(f32(layer_tensors), os.path.join(OUT, "io", "layers.safetensors"), metadata=md)
    meta["io"] = {k: stats(v) for k, v in {**x, **y, "pivot": pivot, "out_pivot": y_pivot}.items()}
    meta["reference_precision"] = ("float64 from the reloaded folder, stored as float32; f32_torch_max_abs_diff = "
                                   "max |float32 PyTorch run - reference|")
    with open(os.path.join(OUT, "io", "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps({k: meta[k] for k in ["parameter_counts", "f32_torch_max_abs_diff", "temporal_layers_effect"]},
                     indent=1))


if __name__ == "__main__":
    main()

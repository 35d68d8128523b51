"""Reference outputs for the UNet hooks of selfcascade-sd (crates/selfcascade-sd/tests/unet.rs).

Writes crates/selfcascade-sd/tests/fixtures/unet_hooks/:
  unet/config.json + unet/diffusion_pytorch_model.safetensors   a small SD-2.1-shaped UNet (4 down blocks, the
                                                                 last without attention, linear projections,
                                                                 per-block head counts), random weights
  io.safetensors                                                 inputs and float64 reference outputs (as f32)

Cases, all at a latent size that is not a multiple of 8 (so diffusers forwards explicit upsample sizes and the
decoder meets odd sizes):
  out_plain       diffusers' own forward
  out_attn_sf     Attn-SF: every self-attention (attn1) logit scale times sqrt(ln N / ln (N / 4)), N its tokens
  out_dilated     ScaleCrafter re-dilation of the convolutions in DILATION (integer and fractional factors,
                  stride-2 downsamplers at even and odd sizes, an upsampler), output resized back to the size
                  of the undilated convolution
  xl_out_plain    a small SDXL-shaped UNet (unet_xl/: 3 blocks, text_time) at 14x22, and
  xl_out_pivot    with the pivot `xl_pivot` injected as below
  out_pivot       tuned self-cascade injection of the pivot `pivot` (half size) with the trivial upsampler
                  phi_n(h, temb, size) = C[n] * nearest(h, size) + 0.01 * mean(temb, dim 1)

Usage: HF_HUB_OFFLINE=1 /root/oracle-venv/bin/python tools/oracle/unet_hooks.py
"""
import json
import math
import os

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates/selfcascade-sd/tests/fixtures/unet_hooks")

CONFIG = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=[16, 24, 32, 32],
    down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    layers_per_block=1,
    attention_head_dim=[2, 4, 4, 8],
    cross_attention_dim=32,
    norm_num_groups=8,
    use_linear_projection=True,
    upcast_attention=True,
)

# SDXL-shaped: 3 blocks (the first without attention, the last without downsampler), several transformer
# layers per block, text_time micro-conditioning.
CONFIG_XL = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    block_out_channels=[16, 16, 24],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    layers_per_block=2,
    attention_head_dim=[1, 2, 4],
    transformer_layers_per_block=[1, 2, 3],
    cross_attention_dim=40,
    norm_num_groups=8,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=6 * 8 + 16,
)
SAMPLE_XL = (1, 4, 14, 22)

DILATION = {
    "down_blocks.1.resnets.0.conv1": 2.0,
    "down_blocks.1.downsamplers.0.conv": 2.0,  # stride 2, input 10x14
    "down_blocks.2.resnets.0.conv2": 1.5,
    "down_blocks.2.downsamplers.0.conv": 1.5,  # stride 2, fractional, odd input 5x7
    "mid_block.resnets.0.conv2": 3.0,
    "up_blocks.0.resnets.1.conv1": 2.5,
    "up_blocks.0.upsamplers.0.conv": 2.0,
    "up_blocks.2.resnets.0.conv2": 2.0,
}
C = [0.5, -0.25, 0.75, 0.3]
SAMPLE = (2, 4, 20, 28)
TIMESTEPS = [981.0, 261.0]


@torch.no_grad()
def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("weight") and p.dim() >= 2:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


class ScaledSelfAttention:
    """AttnProcessor2_0 with the logit scale multiplied by fn(N) (self-attention only)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        assert encoder_hidden_states is None and attention_mask is None
        b, n, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        h = attn.heads
        d = q.shape[-1] // h
        q, k, v = (t.view(b, -1, h, d).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, scale=self.fn(n) / math.sqrt(d))
        o = o.transpose(1, 2).reshape(b, n, h * d)
        return attn.to_out[1](attn.to_out[0](o))


def attn_sf(n):
    return math.sqrt(math.log(n) / math.log(n / 4))


def redilate(conv, f):
    d = math.ceil(f)
    factor = d / f

    def forward(x):
        hh, ww = x.shape[-2:]
        k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        plain = ((hh + 2 * p - k) // s + 1, (ww + 2 * p - k) // s + 1)
        x = F.interpolate(x, size=(round(hh * factor), round(ww * factor)), mode="bilinear", align_corners=False)
        y = F.conv2d(x, conv.weight, conv.bias, stride=conv.stride, padding=d, dilation=d)
        return F.interpolate(y, size=plain, mode="bilinear", align_corners=False)

    return forward


def phi(n, h, temb, size):
    return C[n] * F.interpolate(h, size=size, mode="nearest") + 0.01 * temb.mean(dim=1)[:, None, None, None]


def forward_with_pivot(unet, sample, t, ehs, pivot, phi=phi, added=None):
    """diffusers' forward for these blocks, with the pivot injected after down blocks 0..2 and the mid block."""
    n_up = len(unet.up_blocks) - 1
    forward_size = any(s % (2 ** n_up) for s in sample.shape[-2:])
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=t))
    if added is not None:
        emb = emb + unet.get_aug_embed(emb=emb, encoder_hidden_states=ehs, added_cond_kwargs=added)
    x = unet.conv_in(sample)
    p = unet.conv_in(pivot)
    skips = (x,)
    for i, block in enumerate(unet.down_blocks):
        kw = dict(encoder_hidden_states=ehs) if getattr(block, "has_cross_attention", False) else {}
        x, res = block(hidden_states=x, temb=emb, **kw)
        skips += res
        p, _ = block(hidden_states=p, temb=emb, **kw)
        if i < 3:
            x = x + phi(i, p, emb, tuple(x.shape[-2:]))
    x = unet.mid_block(x, emb, encoder_hidden_states=ehs)
    p = unet.mid_block(p, emb, encoder_hidden_states=ehs)
    x = x + phi(min(3, len(unet.down_blocks)), p, emb, tuple(x.shape[-2:]))
    for i, block in enumerate(unet.up_blocks):
        res = skips[-len(block.resnets):]
        skips = skips[: -len(block.resnets)]
        size = skips[-1].shape[2:] if (forward_size and i < n_up) else None
        kw = dict(encoder_hidden_states=ehs) if getattr(block, "has_cross_attention", False) else {}
        x = block(hidden_states=x, temb=emb, res_hidden_states_tuple=res, upsample_size=size, **kw)
    x = unet.conv_act(unet.conv_norm_out(x))
    return unet.conv_out(x)


@torch.no_grad()
def main():
    torch.set_num_threads(1)
    unet = UNet2DConditionModel(**CONFIG)
    randomize(unet, 4242)
    unet.save_pretrained(os.path.join(OUT, "unet"))
    unet = UNet2DConditionModel.from_pretrained(os.path.join(OUT, "unet")).to(torch.float64).eval()

    g = torch.Generator().manual_seed(4343)
    b, c, h, w = SAMPLE
    sample = torch.randn(SAMPLE, generator=g, dtype=torch.float64)
    ehs = torch.randn((b, 77, CONFIG["cross_attention_dim"]), generator=g, dtype=torch.float64)
    pivot = torch.randn((b, c, h // 2, w // 2), generator=g, dtype=torch.float64)
    t = torch.tensor(TIMESTEPS, dtype=torch.float64)

    io = dict(sample=sample, timestep=t, encoder_hidden_states=ehs, pivot=pivot)
    io["out_plain"] = unet(sample, t, ehs).sample
    io["out_pivot"] = forward_with_pivot(unet, sample, t, ehs, pivot)
    # the re-implemented forward without injection is diffusers' forward
    no_injection = forward_with_pivot(unet, sample, t, ehs, pivot, phi=lambda n, h, temb, size: 0.0)
    assert (no_injection - io["out_plain"]).abs().max() < 1e-12
    assert (io["out_pivot"] - io["out_plain"]).abs().max() > 1e-2

    original = {}
    for name, m in unet.named_modules():
        if isinstance(m, Attention) and name.endswith("attn1"):
            original[name] = m.processor
            m.set_processor(ScaledSelfAttention(attn_sf))
    io["out_attn_sf"] = unet(sample, t, ehs).sample
    for name, m in unet.named_modules():
        if name in original:
            m.set_processor(original[name])

    modules = dict(unet.named_modules())
    for name, f in DILATION.items():
        modules[name].forward = redilate(modules[name], f)
    io["out_dilated"] = unet(sample, t, ehs).sample
    for name in DILATION:
        del modules[name].forward

    assert torch.equal(unet(sample, t, ehs).sample, io["out_plain"])

    xl = UNet2DConditionModel(**CONFIG_XL)
    randomize(xl, 4444)
    xl.save_pretrained(os.path.join(OUT, "unet_xl"))
    xl = UNet2DConditionModel.from_pretrained(os.path.join(OUT, "unet_xl")).to(torch.float64).eval()
    b, c, h, w = SAMPLE_XL
    xs = torch.randn(SAMPLE_XL, generator=g, dtype=torch.float64)
    xehs = torch.randn((b, 77, CONFIG_XL["cross_attention_dim"]), generator=g, dtype=torch.float64)
    xpivot = torch.randn((b, c, h // 2, w // 2), generator=g, dtype=torch.float64)
    added = dict(
        text_embeds=torch.randn((b, 16), generator=g, dtype=torch.float64),
        time_ids=torch.tensor([[112.0, 176.0, 0.0, 8.0, 112.0, 176.0]], dtype=torch.float64),
    )
    xt = torch.tensor(500.0, dtype=torch.float64)
    io.update(xl_sample=xs, xl_timestep=xt[None], xl_encoder_hidden_states=xehs, xl_pivot=xpivot,
              xl_text_embeds=added["text_embeds"], xl_time_ids=added["time_ids"])
    io["xl_out_plain"] = xl(xs, xt, xehs, added_cond_kwargs=added).sample
    no_injection = forward_with_pivot(xl, xs, xt, xehs, xpivot, phi=lambda n, h, temb, size: 0.0, added=added)
    assert (no_injection - io["xl_out_plain"]).abs().max() < 1e-12
    io["xl_out_pivot"] = forward_with_pivot(xl, xs, xt, xehs, xpivot, added=added)
    for k in ("out_attn_sf", "out_dilated", "out_pivot"):
        print(k, "differs from plain by", float((io[k] - io["out_plain"]).abs().max()))
    print("xl_out_pivot differs from plain by", float((io["xl_out_pivot"] - io["xl_out_plain"]).abs().max()))
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"))
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(dict(generator="tools/oracle/unet_hooks.py", torch=torch.__version__, dilation=DILATION,
                       phi_constants=C, timesteps=TIMESTEPS, attn_sf="sqrt(ln N / ln(N / 4))",
                       reference_precision="float64, stored as float32"), f, indent=2)


if __name__ == "__main__":
    main()

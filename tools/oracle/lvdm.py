"""Oracle for the LVDM text-to-video UNet (the paper's video model; docs/lvdm.md).

No pip package implements LVDM, so this is a small PyTorch reference written from the model's equations
(docs/lvdm.md §3-4), with the original latent-diffusion checkpoint key names (`model.diffusion_model.*`, 5-D
convolution weights), at a tiny size. It writes crates/selfcascade-sd/tests/fixtures/lvdm/:

- tiny.ckpt: `torch.save({"state_dict": ...})` as a Lightning checkpoint (plus two DDPM buffers, which a UNet
  loader must skip), every parameter re-drawn (oracle_util.randomize; the temporal attentions' relative-position
  tables N(0, 0.5²)); it also holds, as LVDM's checkpoint does, the first-stage VAE under `first_stage_model.*`
  (latent diffusion's names) and the text encoder under `cond_stage_model.transformer.text_model.*`: the tiny
  sd15 fixture's VAE and text encoder (fixtures/models/sd15), so their committed diffusers references apply;
  the VAE's renaming is checked by converting it back with diffusers' `convert_ldm_vae_checkpoint`;
- config.json: the UNet config (LVDM's yaml field names);
- io.safetensors: `x` [2, 4, 5, 8, 8], `t`, `context` [2, 7, 32] and the output `out` (float64 run, stored as
  float32); `x1`/`out1`: one frame with every temporal attention's output projection zeroed;
  `x16`/`out16`: one video of 16 frames (LVDM's length) at t = 981 with the first context row;
  `pivot`/`out_pivot`: the tuned injection (phi_n = C[n]·nearest + 0.01·mean(temb), as unet_hooks.py) of a
  half-size pivot video after the first three encoder levels and the middle block;
  `sample_*`: direct sampling (3 DDIM steps as LVDM samples, guidance 7.5) from `sample_noise` [1, 4, 3, 32, 32];
- meta.json: versions, parameter count, and the checks below.

Checks (the script fails otherwise):
1. the reference's spatial part equals diffusers: with one frame and the temporal outputs zeroed, the UNet equals
   diffusers' `UNet2DConditionModel` (SD 1.x layout) on the same weights after the LDM -> diffusers key mapping;
2. the relative-position clipping is exercised: T = 5 frames with max distance 2 (tables of 5 rows);
3. the temporal attentions matter: zeroing their output projections moves `out` by > 1e-2.

Run: HF_HUB_OFFLINE=1 /root/oracle-venv/bin/python tools/oracle/lvdm.py
"""
import json
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_util import STREAM_SCALE, randomize, stats  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "lvdm")
SEED = 800
# lvdm_short's text2video.yaml: model_channels 320, channel_mult [1,2,4,4], num_res_blocks 2,
# attention_resolutions [4,2,1], num_heads 8, context_dim 768, temporal_length 16; shrunk.
CONFIG = dict(in_channels=4, out_channels=4, model_channels=16, channel_mult=[1, 2, 2], num_res_blocks=2,
              attention_resolutions=[2, 1], num_heads=2, context_dim=32, temporal_length=2, norm_num_groups=4)


class GN(nn.GroupNorm):
    """GroupNorm over [B, C, T, H, W]: statistics over all frames together."""


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb, groups):
        super().__init__()
        self.in_layers = nn.Sequential(GN(groups, cin, eps=1e-5), nn.SiLU(), nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1)))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(temb, cout))
        self.out_layers = nn.Sequential(GN(groups, cout, eps=1e-5), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv3d(cout, cout, (1, 3, 3), padding=(0, 1, 1)))
        self.skip_connection = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb):
        h = self.in_layers(x) + self.emb_layers(emb)[:, :, None, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class RelativePosition(nn.Module):
    def __init__(self, d, max_distance):
        super().__init__()
        self.max_distance = max_distance
        self.embeddings_table = nn.Parameter(torch.zeros(2 * max_distance + 1, d))

    def forward(self, t):
        r = torch.arange(t)
        idx = (r[None, :] - r[:, None]).clamp(-self.max_distance, self.max_distance) + self.max_distance
        return self.embeddings_table[idx]  # [T(i), T(j), d]


class Attention(nn.Module):
    """Multi-head attention; with `max_distance`, temporal attention with relative positions on keys and
    values: logits += q·RK[i, j], out += Σ_j A[i, j] RV[i, j]."""

    def __init__(self, dim, heads, context_dim=None, max_distance=None):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))
        if max_distance is not None:
            d = dim // heads
            self.relative_position_k = RelativePosition(d, max_distance)
            self.relative_position_v = RelativePosition(d, max_distance)
        self.rel = max_distance is not None

    def forward(self, x, context=None):
        n, t, c = x.shape
        h = self.heads
        ctx = x if context is None else context
        split = lambda y: y.reshape(y.shape[0], y.shape[1], h, c // h).transpose(1, 2)  # [n, h, len, d]
        q, k, v = split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx))
        s = (c // h) ** -0.5
        logits = q @ k.transpose(-1, -2) * s
        if self.rel:
            rk, rv = self.relative_position_k(t), self.relative_position_v(t)
            logits = logits + torch.einsum("nhid,ijd->nhij", q, rk) * s
        a = logits.softmax(-1)
        o = a @ v
        if self.rel:
            o = o + torch.einsum("nhij,ijd->nhid", a, rv)
        return self.to_out(o.transpose(1, 2).reshape(n, -1, c))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class Block(nn.Module):
    """BasicTransformerBlockST: spatial self-attn, temporal attn #1, cross-attn, temporal attn #2, GEGLU FF."""

    def __init__(self, dim, heads, context_dim, max_distance):
        super().__init__()
        self.attn1 = Attention(dim, heads)
        self.attn2 = Attention(dim, heads, context_dim)
        self.attn1_tmp = Attention(dim, heads, max_distance=max_distance)
        self.attn2_tmp = Attention(dim, heads, max_distance=max_distance)
        self.ff = nn.Module()
        self.ff.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))
        for i in range(1, 6):
            setattr(self, f"norm{i}", nn.LayerNorm(dim))

    def forward(self, x, context):
        b, c, t, hh, ww = x.shape
        sp = lambda y: y.permute(0, 2, 3, 4, 1).reshape(b * t, hh * ww, c)
        un_sp = lambda y: y.reshape(b, t, hh, ww, c).permute(0, 4, 1, 2, 3)
        tm = lambda y: y.permute(0, 3, 4, 2, 1).reshape(b * hh * ww, t, c)
        un_tm = lambda y: y.reshape(b, hh, ww, t, c).permute(0, 4, 3, 1, 2)
        y = sp(x)
        y = self.attn1(self.norm1(y)) + y
        y = tm(un_sp(y))
        y = self.attn1_tmp(self.norm4(y)) + y
        y = sp(un_tm(y))
        ctx = context.repeat_interleave(t, dim=0)
        y = self.attn2(self.norm2(y), ctx) + y
        y = tm(un_sp(y))
        y = self.attn2_tmp(self.norm5(y)) + y
        y = self.ff.net(self.norm3(y)) + y
        return un_tm(y)


class SpatialTemporalTransformer(nn.Module):
    def __init__(self, ch, heads, context_dim, max_distance, groups):
        super().__init__()
        self.norm = GN(groups, ch, eps=1e-6)
        self.proj_in = nn.Conv3d(ch, ch, 1)
        self.transformer_blocks = nn.ModuleList([Block(ch, heads, context_dim, max_distance)])
        self.proj_out = nn.Conv3d(ch, ch, 1)

    def forward(self, x, context):
        y = self.proj_in(self.norm(x))
        y = self.transformer_blocks[0](y, context)
        return self.proj_out(y) + x


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv3d(ch, ch, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv3d(ch, ch, (1, 3, 3), padding=(0, 1, 1))

    def forward(self, x):
        t, h, w = x.shape[2:]
        return self.conv(F.interpolate(x, size=(t, 2 * h, 2 * w), mode="nearest"))


class Seq(nn.ModuleList):
    def forward(self, x, emb, context):
        for m in self:
            if isinstance(m, ResBlock):
                x = m(x, emb)
            elif isinstance(m, SpatialTemporalTransformer):
                x = m(x, context)
            else:
                x = m(x)
        return x


class UNet(nn.Module):
    def __init__(self, c):
        super().__init__()
        mc, g, heads = c["model_channels"], c["norm_num_groups"], c["num_heads"]
        temb = 4 * mc
        self.model_channels = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, temb), nn.SiLU(), nn.Linear(temb, temb))
        st = lambda ch: SpatialTemporalTransformer(ch, heads, c["context_dim"], c["temporal_length"], g)
        self.input_blocks = nn.ModuleList([Seq([nn.Conv3d(c["in_channels"], mc, (1, 3, 3), padding=(0, 1, 1))])])
        self.level_ends = []  # index of each level's last input block
        chans, ch, ds = [mc], mc, 1
        levels = len(c["channel_mult"])
        for level, mult in enumerate(c["channel_mult"]):
            for _ in range(c["num_res_blocks"]):
                layers = [ResBlock(ch, mult * mc, temb, g)]
                ch = mult * mc
                if ds in c["attention_resolutions"]:
                    layers.append(st(ch))
                self.input_blocks.append(Seq(layers))
                chans.append(ch)
            if level != levels - 1:
                self.input_blocks.append(Seq([Downsample(ch)]))
                chans.append(ch)
                ds *= 2
            self.level_ends.append(len(self.input_blocks) - 1)
        self.middle_block = Seq([ResBlock(ch, ch, temb, g), st(ch), ResBlock(ch, ch, temb, g)])
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c["channel_mult"]))):
            for i in range(c["num_res_blocks"] + 1):
                layers = [ResBlock(ch + chans.pop(), mc * mult, temb, g)]
                ch = mc * mult
                if ds in c["attention_resolutions"]:
                    layers.append(st(ch))
                if level and i == c["num_res_blocks"]:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(GN(g, ch, eps=1e-5), nn.SiLU(), nn.Conv3d(ch, c["out_channels"], (1, 3, 3), padding=(0, 1, 1)))

    def forward(self, x, t, context, pivot=None, phi=None):
        """With `pivot` [B, C, T, h/2, w/2] and `phi(n, features [B·T, C, h, w], temb [B·T, D], size)`: the
        tuned self-cascade's injection after the first three encoder levels (their last input block) and
        after the middle block; the skips keep the un-injected features."""
        half = self.model_channels // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        emb = self.time_embed(torch.cat([torch.cos(args), torch.sin(args)], -1).to(x.dtype))
        b, _, f = x.shape[:3]
        fold = lambda y: y.permute(0, 2, 1, 3, 4).reshape(b * f, *y.shape[1:2], *y.shape[3:])
        unfold = lambda y: y.reshape(b, f, *y.shape[1:]).permute(0, 2, 1, 3, 4)
        temb = emb.repeat_interleave(f, dim=0)

        def inject(n, h, p):
            return h + unfold(phi(n, fold(p), temb, tuple(h.shape[-2:])))

        hs, h, p = [], x, pivot
        for i, blk in enumerate(self.input_blocks):
            h = blk(h, emb, context)
            hs.append(h)
            if p is not None:
                p = blk(p, emb, context)
                if i in self.level_ends[:3]:
                    h = inject(self.level_ends.index(i), h, p)
        h = self.middle_block(h, emb, context)
        if p is not None:
            h = inject(min(3, len(self.level_ends)), h, self.middle_block(p, emb, context))
        for blk in self.output_blocks:
            h = blk(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)


def scale(name, module):
    """oracle_util's stream gain: layers writing into a residual stream or a norm."""
    stream = ("in_layers.2", "out_layers.3", "emb_layers.1", "proj_in", "to_out.0", "ff.net.2", "input_blocks.0.0")
    return STREAM_SCALE if name.endswith(stream) else 1.0


@torch.no_grad()
def randomize_all(unet, seed):
    # oracle_util.randomize covers Linear/Conv/norms; the relative-position tables are drawn here.
    g = torch.Generator().manual_seed(seed + 1)
    for name, m in unet.named_modules():
        if isinstance(m, RelativePosition):
            m.embeddings_table.copy_(torch.randn(m.embeddings_table.shape, generator=g) * 0.5)
    tables = {id(m.embeddings_table) for m in unet.modules() if isinstance(m, RelativePosition)}

    # randomize() raises on modules it has no rule for; hide the tables from it.
    saved = {}
    for name, m in unet.named_modules():
        if isinstance(m, RelativePosition):
            saved[name] = m.embeddings_table
            del m._parameters["embeddings_table"]
    n = randomize(unet, seed, scale)
    for name, m in unet.named_modules():
        if name in saved:
            m._parameters["embeddings_table"] = saved[name]
    return n + sum(p.numel() for p in unet.parameters() if id(p) in tables)


def to_diffusers(sd, c):
    """LDM UNet keys -> diffusers UNet2DConditionModel keys (SD 1.x layout), 5-D convs squeezed; the temporal
    attentions and their norms are dropped."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    flat = {}
    for k, v in sd.items():
        if "_tmp." in k or ".norm4." in k or ".norm5." in k:
            continue
        if v.dim() == 5:
            v = v[:, :, 0]
        flat["model.diffusion_model." + k] = v
    cfg = diffusers_config(c)
    return convert_ldm_unet_checkpoint(flat, cfg), cfg


def diffusers_config(c):
    mc = c["model_channels"]
    n = len(c["channel_mult"])
    att = [2 ** i in c["attention_resolutions"] for i in range(n)]
    return dict(sample_size=8, in_channels=c["in_channels"], out_channels=c["out_channels"],
                down_block_types=[("CrossAttnDownBlock2D" if a else "DownBlock2D") for a in att],
                up_block_types=[("CrossAttnUpBlock2D" if a else "UpBlock2D") for a in reversed(att)],
                block_out_channels=[mc * m for m in c["channel_mult"]], layers_per_block=c["num_res_blocks"],
                cross_attention_dim=c["context_dim"], attention_head_dim=c["num_heads"],  # diffusers: the head COUNT
                norm_num_groups=c["norm_num_groups"], flip_sin_to_cos=True, freq_shift=0)


def vae_to_ldm(sd, levels):
    """diffusers AutoencoderKL names -> latent diffusion's (the inverse of diffusers' conversion)."""
    out = {}
    for k, v in sd.items():
        n = k.replace("conv_norm_out", "norm_out")
        for part in ("encoder", "decoder"):
            n = n.replace(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.")
            n = n.replace(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.")
            if f"{part}.mid_block.attentions.0." in n:
                n = n.replace(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")
                n = (n.replace("group_norm.", "norm.").replace("to_q.", "q.").replace("to_k.", "k.")
                     .replace("to_v.", "v.").replace("to_out.0.", "proj_out."))
                if v.dim() == 2:
                    v = v[:, :, None, None]
        for i in range(levels):
            n = n.replace(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.")
            n = n.replace(f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.")
            n = n.replace(f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block.")
            n = n.replace(f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample.")
        out[n.replace("conv_shortcut", "nin_shortcut")] = v
    return out


def first_and_cond_stage():
    """The sd15 fixture's VAE and text encoder in LVDM's checkpoint names."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    fam = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures", "models", "sd15")
    vae = AutoencoderKL.from_pretrained(os.path.join(fam, "vae"))
    vsd = vae.state_dict()
    ldm = {"first_stage_model." + k: v for k, v in vae_to_ldm(vsd, len(vae.config.block_out_channels)).items()}
    back = convert_ldm_vae_checkpoint(ldm, dict(vae.config))
    assert back.keys() == vsd.keys() and all(torch.equal(back[k], vsd[k]) for k in vsd), "VAE renaming"
    te = load_file(os.path.join(fam, "text_encoder", "model.safetensors"))
    ldm.update({"cond_stage_model.transformer." + k: v for k, v in te.items()})
    return ldm


# LVDM's sampler as diffusers' DDIM (selfcascade_sd::pipeline::LVDM_SCHEDULER).
LVDM_DDIM = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
                 prediction_type="epsilon")


def ddim_direct(unet, z, cond, uncond, steps, guidance):
    """Text-to-video sampling from z (classifier-free guidance, eta 0), LVDM's sampler."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(**LVDM_DDIM)
    sched.set_timesteps(steps)
    x = z.double()
    for t in sched.timesteps:
        tt = t.reshape(1).expand(2)
        e = unet(torch.cat([x, x]), tt, torch.cat([uncond, cond]).double())
        eu, ec = e.chunk(2)
        x = sched.step(eu + guidance * (ec - eu), t, x).prev_sample
    return x, [int(t) for t in sched.timesteps]


def main():
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(SEED)
    unet = UNet(CONFIG).eval()
    n = randomize_all(unet, SEED)
    ref = unet.double()
    g = torch.Generator().manual_seed(SEED + 100)
    frames = 5
    x = torch.randn(2, 4, frames, 8, 8, generator=g)
    t = torch.tensor([981, 1])
    ctx = torch.randn(2, 7, CONFIG["context_dim"], generator=g)
    out = ref(x.double(), t, ctx.double())
    # The tuned injection (trivial phi as tools/oracle/unet_hooks.py), pivot at half the size.
    pivot = torch.randn(2, 4, frames, 4, 4, generator=g)
    cs = [0.5, -0.25, 0.75, 0.3]
    phi = lambda n, h, temb, size: cs[n] * F.interpolate(h, size=size, mode="nearest") + 0.01 * temb.mean(1)[:, None, None, None]
    zero_phi = lambda n, h, temb, size: 0.0 * F.interpolate(h, size=size, mode="nearest")
    assert (ref(x.double(), t, ctx.double(), pivot.double(), zero_phi) - out).abs().max() < 1e-12
    out_pivot = ref(x.double(), t, ctx.double(), pivot.double(), phi)
    assert (out_pivot - out).abs().max() > 1e-2
    # LVDM's frame count (16), one video.
    x16 = torch.randn(1, 4, 16, 8, 8, generator=g)
    out16 = ref(x16.double(), t[:1], ctx[:1].double())

    # One frame, temporal outputs zeroed: the spatial UNet, compared with diffusers.
    zeroed = UNet(CONFIG).double().eval()
    zeroed.load_state_dict(ref.state_dict())
    for m in zeroed.modules():
        if isinstance(m, Block):
            for a in (m.attn1_tmp, m.attn2_tmp):
                a.to_out[0].weight.zero_()
                a.to_out[0].bias.zero_()
    x1 = x[:, :, :1]
    out1 = zeroed(x1.double(), t, ctx.double())
    dsd, dcfg = to_diffusers({k: v for k, v in zeroed.state_dict().items()}, CONFIG)
    d = diffusers.UNet2DConditionModel(**dcfg).double().eval()
    missing, unexpected = d.load_state_dict(dsd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    d_out = d(x1[:, :, 0].double(), t, encoder_hidden_states=ctx.double()).sample
    spatial_diff = float((d_out - out1[:, :, 0]).abs().max())
    assert spatial_diff < 1e-10, f"the reference's spatial UNet differs from diffusers by {spatial_diff}"
    temporal = float((zeroed(x.double(), t, ctx.double()) - out).abs().max())
    assert temporal > 1e-2, f"the temporal attentions barely matter: {temporal}"
    for k, v in {"out": out}.items():
        assert 0.05 < v.std() < 20, (k, float(v.std()))

    sd = {"model.diffusion_model." + k: v.float().contiguous() for k, v in ref.state_dict().items()}
    sd["betas"] = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64).float() ** 2
    sd["alphas_cumprod"] = torch.cumprod(1 - sd["betas"], 0)
    sd.update({k: v.float().contiguous() for k, v in first_and_cond_stage().items()})
    torch.save({"state_dict": sd, "global_step": 0}, os.path.join(OUT, "tiny.ckpt"))
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    # Direct text-to-video at LVDM's latent size (32², 3 frames), 3 DDIM steps, guidance 7.5.
    z = torch.randn(1, 4, 3, 32, 32, generator=g)
    uncond = torch.randn(1, 7, CONFIG["context_dim"], generator=g)
    sample, sample_t = ddim_direct(ref, z, ctx[:1], uncond, 3, 7.5)
    io = {"x": x, "t": t.float(), "context": ctx, "out": out, "x1": x1, "out1": out1, "x16": x16, "out16": out16,
          "sample_noise": z, "sample_uncond": uncond, "sample_out": sample, "pivot": pivot, "out_pivot": out_pivot}
    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"),
              metadata={"format": "pt"})
    meta = {"generator": "tools/oracle/lvdm.py", "versions": {"torch": torch.__version__,
                                                             "diffusers": diffusers.__version__},
            "config": CONFIG, "parameters": n, "frames": frames,
            "checks": {"spatial_vs_diffusers_max_abs": spatial_diff, "temporal_effect_max_abs": temporal},
            "out1": "one frame, every temporal attention's to_out zeroed (the spatial UNet)",
            "sample": {"what": "diffusers DDIM (LVDM_DDIM) loop with the reference UNet from sample_noise, CFG 7.5 "
                               "with context[0] / sample_uncond, eta 0", "timesteps": sample_t},
            "io": {k: stats(v) for k, v in io.items()}}
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(json.dumps(meta["checks"]), n)


if __name__ == "__main__":
    main()

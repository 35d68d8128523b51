"""Reference outputs for the tuned self-cascade's ResBlock feature upsamplers
(crates/selfcascade-sd/tests/upsampler.rs).

The released upsamplers (Guo et al., SDXL) are, per injection point n, `feature_upsampler{n}` =
[ResBlock(C, up=True), ResBlock(C)] in latent diffusion's style. The ResBlock is written here from its
equations (use_scale_shift_norm=False, identity skip, dropout 0 at inference):

    h = SiLU(GroupNorm(x))                         in_layers.0 (+ in_layers.1 = SiLU)
    if up: h, x = nearest(h, size), nearest(x, size)   between the activation and the conv, both branches
    h = Conv3x3(h)                                 in_layers.2
    h = h + Linear(SiLU(emb))[:, :, None, None]    emb_layers.1 (+ emb_layers.0 = SiLU)
    h = Conv3x3(Dropout(SiLU(GroupNorm(h))))       out_layers.0, out_layers.3 (zero-initialised in the release)
    return x + h

`size` is the size of the high-resolution features at that point: 2x the input where it fits exactly,
PyTorch's nearest resize to the odd size otherwise (the Rust side does the same; see ResBlockUpsampler).
`emb` is the UNet's time embedding (the output of `time_embedding`, before any activation).

Writes crates/selfcascade-sd/tests/fixtures/feature_upsampler/:
  resblock_upsampler.pth          torch.save({'state_dict': OrderedDict(unet.feature_upsampler{n}.{0,1}...),
                                  'epoch', 'global_step', 'hyper_parameters'}) like a Lightning checkpoint,
                                  float16, for the tiny UNet of tools/oracle/unet_hooks.py (fixtures/unet_hooks/unet:
                                  channels 16, 24, 32, 32, time embedding 64, GroupNorm 8 groups)
  resblock_upsampler.safetensors  the same tensors under the same names (float16)
  io.safetensors                  (a) features_{n}, temb, out_{n} = phi_n(features_{n}, temb, size_n);
                                  (b) sample, timestep, encoder_hidden_states, pivot, out_plain, and out_tuned =
                                      the UNet forward with phi_n(pivot features) added after down blocks 0..2 and
                                      the mid block (unet_hooks.forward_with_pivot); tiny_features_{n}, tiny_temb,
                                      tiny_out_{n} for tiny_ok.pth
  tiny_*.pth                      a 2-point upsampler with channels (2, 4), time embedding 6, 2 groups,
                                  float32: tiny_ok.pth, and broken copies: tiny_missing_key.pth (no
                                  unet.feature_upsampler1.0.emb_layers.1.bias), tiny_wrong_shape.pth
                                  (unet.feature_upsampler1.1.emb_layers.1.weight stored transposed, [6, 4]),
                                  tiny_unexpected_key.pth (an extra unet.feature_upsampler0.0.skip_connection.weight),
                                  tiny_no_state_dict.pth (the bare state dict, no 'state_dict' entry)
  meta.json                       sizes, seeds, versions, and how far plausible mistakes move the outputs

Every parameter is random (oracle_util.randomize, gain 1; the zero-initialised out convs are re-drawn, or the
test would prove nothing), rounded to float16 for the main checkpoint; references are computed in float64 with
exactly the stored values and saved as float32.

Usage: HF_HUB_OFFLINE=1 /root/oracle-venv/bin/python tools/oracle/feature_upsampler.py
"""
import collections
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import safetensors  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn  # noqa: E402

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_util import randomize, stats  # noqa: E402
from unet_hooks import forward_with_pivot  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures")
OUT = os.path.join(FIXTURES, "feature_upsampler")
UNET_DIR = os.path.join(FIXTURES, "unet_hooks", "unet")

SEED_WEIGHTS = 5150
SEED_TINY = 5151
SEED_IO = 5152
SAMPLE = (2, 4, 20, 28)  # latent 20x28: the injection points see 10x14, 5x7, 3x4, 3x4 (pivot 5x7, 3x4, 2x2, 2x2)
TIMESTEPS = [981.0, 261.0]
TINY = dict(channels=(2, 4), time_embed_dim=6, groups=2)
EPS = 1e-5  # the release's GroupNorm32 is nn.GroupNorm with PyTorch's default eps


class ResBlock(nn.Module):
    def __init__(self, c, d, groups, up, mistake=None):
        super().__init__()
        self.up = up
        self.mistake = mistake
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, c, eps=EPS), nn.SiLU(), nn.Conv2d(c, c, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(d, c))
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, c, eps=EPS), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(c, c, 3, padding=1))
        nn.init.zeros_(self.out_layers[3].weight)  # as released; randomize() re-draws it
        nn.init.zeros_(self.out_layers[3].bias)

    def forward(self, x, emb, size):
        h = self.in_layers[1](self.in_layers[0](x))
        if self.up:
            if self.mistake == "conv_then_upsample":
                h = F.interpolate(self.in_layers[2](h), size=size, mode="nearest")
            else:
                h = self.in_layers[2](F.interpolate(h, size=size, mode="nearest"))
            x = F.interpolate(x, size=size, mode="nearest")
        else:
            h = self.in_layers[2](h)
        if self.mistake != "no_temb":
            h = h + self.emb_layers(emb)[:, :, None, None]
        h = self.out_layers(h)
        return x + h


class FeatureUpsamplers(nn.Module):
    """Holds feature_upsampler0..N-1 (each a 2-element ModuleList), as the release's UNet attributes."""

    def __init__(self, channels, d, groups, mistake=None):
        super().__init__()
        self.n = len(channels)
        for n, c in enumerate(channels):
            setattr(self, f"feature_upsampler{n}",
                    nn.ModuleList([ResBlock(c, d, groups, True, mistake), ResBlock(c, d, groups, False, mistake)]))

    def phi(self, n, h, emb, size):
        for block in getattr(self, f"feature_upsampler{n}"):
            h = block(h, emb, tuple(size))
        return h


class Checkpoint(nn.Module):
    """Puts the upsamplers under `unet.`, so state_dict() has the released names."""

    def __init__(self, channels, d, groups, mistake=None):
        super().__init__()
        self.unet = FeatureUpsamplers(channels, d, groups, mistake)


def build(channels, d, groups, seed, half):
    ck = Checkpoint(channels, d, groups)
    randomize(ck, seed)
    if half:
        with torch.no_grad():
            for p in ck.parameters():
                p.copy_(p.half().float())
    return ck


def save_pth(path, state_dict, wrap=True):
    """torch.save in the layout of a Lightning checkpoint (the release's upsampler_only.pth)."""
    if wrap:
        obj = {"epoch": 3, "global_step": 12000, "pytorch-lightning_version": "2.1.0",
               "state_dict": state_dict, "hyper_parameters": {"lr": 5e-5, "note": "oracle fixture"}}
    else:
        obj = state_dict
    torch.save(obj, path)


def with_weights(ck, channels, d, groups, mistake=None, transpose=None):
    m = Checkpoint(channels, d, groups, mistake)
    sd = collections.OrderedDict((k, v.clone()) for k, v in ck.state_dict().items())
    if transpose:
        sd[transpose] = sd[transpose].transpose(0, 1).contiguous()
    m.load_state_dict(sd)
    return m.double().eval()


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(UNET_DIR).to(torch.float64).eval()
    channels = list(unet.config.block_out_channels[:3]) + [unet.config.block_out_channels[-1]]
    d = unet.time_embedding.linear_2.out_features
    groups = unet.config.norm_num_groups
    assert channels == [16, 24, 32, 32] and d == 64 and groups == 8, (channels, d, groups)

    # --- main checkpoint (float16 values) ---
    ck = build(channels, d, groups, SEED_WEIGHTS, half=True)
    sd16 = collections.OrderedDict((k, v.half()) for k, v in ck.state_dict().items())
    save_pth(os.path.join(OUT, "resblock_upsampler.pth"), sd16)
    save_file(dict(sd16), os.path.join(OUT, "resblock_upsampler.safetensors"), metadata={"format": "pt"})
    reloaded = torch.load(os.path.join(OUT, "resblock_upsampler.pth"))["state_dict"]
    assert list(reloaded) == list(sd16) and all(torch.equal(reloaded[k], sd16[k]) for k in sd16)
    ups = with_weights(ck, channels, d, groups)

    g = torch.Generator().manual_seed(SEED_IO)
    io = {}
    b, c, h, w = SAMPLE
    # (a) each phi_n on its own, at the sizes the UNet below uses
    pivot_sizes = [(5, 7), (3, 4), (2, 2), (2, 2)]
    sizes = [(10, 14), (5, 7), (3, 4), (3, 4)]
    temb = torch.randn((b, d), generator=g, dtype=torch.float64)
    io["temb"] = temb
    for n, (cn, (ph, pw), size) in enumerate(zip(channels, pivot_sizes, sizes)):
        feats = torch.randn((b, cn, ph, pw), generator=g, dtype=torch.float64)
        io[f"features_{n}"] = feats
        io[f"out_{n}"] = ups.unet.phi(n, feats, temb, size)
        assert io[f"out_{n}"].shape == (b, cn) + size

    # (b) the injected tiny UNet forward
    sample = torch.randn(SAMPLE, generator=g, dtype=torch.float64)
    ehs = torch.randn((b, 77, unet.config.cross_attention_dim), generator=g, dtype=torch.float64)
    pivot = torch.randn((b, c, h // 2, w // 2), generator=g, dtype=torch.float64)
    t = torch.tensor(TIMESTEPS, dtype=torch.float64)
    io.update(sample=sample, timestep=t, encoder_hidden_states=ehs, pivot=pivot)
    io["out_plain"] = unet(sample, t, ehs).sample
    seen = []

    def phi(n, feats, emb, size):
        seen.append((n, tuple(feats.shape[-2:]), tuple(size)))
        return ups.unet.phi(n, feats, emb, size)

    io["out_tuned"] = forward_with_pivot(unet, sample, t, ehs, pivot, phi=phi)
    assert [(s[1], s[2]) for s in seen] == list(zip(pivot_sizes, sizes)), seen

    # what plausible mistakes do (relative L2 of out_1 / out_tuned)
    sensitivity = {}
    for label, kw in [("no_temb", dict(mistake="no_temb")),
                      ("conv_then_upsample", dict(mistake="conv_then_upsample")),
                      ("in_layers.2.weight_transposed",
                       dict(transpose="unet.feature_upsampler1.0.in_layers.2.weight"))]:
        bad = with_weights(ck, channels, d, groups, **kw)
        out1 = bad.unet.phi(1, io["features_1"], temb, sizes[1])
        tuned = forward_with_pivot(unet, sample, t, ehs, pivot,
                                   phi=lambda n, f, e, s: bad.unet.phi(n, f, e, s))
        sensitivity[label] = dict(out_1=rel_l2(out1, io["out_1"]), out_tuned=rel_l2(tuned, io["out_tuned"]))
    sensitivity["tuned_vs_plain"] = rel_l2(io["out_tuned"], io["out_plain"])
    # float32 PyTorch against the float64 reference
    ups32 = with_weights(ck, channels, d, groups).float()
    f32 = {n: rel_l2(ups32.unet.phi(n, io[f"features_{n}"].float(), temb.float(), sizes[n]).double(),
                     io[f"out_{n}"]) for n in range(4)}

    # --- tiny float32 checkpoints for the loading tests ---
    tc, td, tg = TINY["channels"], TINY["time_embed_dim"], TINY["groups"]
    tiny = build(tc, td, tg, SEED_TINY, half=False)
    tsd = collections.OrderedDict((k, v.clone()) for k, v in tiny.state_dict().items())
    save_pth(os.path.join(OUT, "tiny_ok.pth"), tsd)
    missing = collections.OrderedDict((k, v) for k, v in tsd.items()
                                      if k != "unet.feature_upsampler1.0.emb_layers.1.bias")
    save_pth(os.path.join(OUT, "tiny_missing_key.pth"), missing)
    wrong = collections.OrderedDict(tsd)
    key = "unet.feature_upsampler1.1.emb_layers.1.weight"
    wrong[key] = wrong[key].transpose(0, 1).contiguous()
    assert tuple(wrong[key].shape) == (td, tc[1])
    save_pth(os.path.join(OUT, "tiny_wrong_shape.pth"), wrong)
    extra = collections.OrderedDict(tsd)
    extra["unet.feature_upsampler0.0.skip_connection.weight"] = torch.zeros(tc[0], tc[0], 1, 1)
    save_pth(os.path.join(OUT, "tiny_unexpected_key.pth"), extra)
    save_pth(os.path.join(OUT, "tiny_no_state_dict.pth"), tsd, wrap=False)
    tups = with_weights(tiny, tc, td, tg)
    io["tiny_temb"] = torch.randn((1, td), generator=g, dtype=torch.float64)
    for n, cn in enumerate(tc):
        feats = torch.randn((1, cn, 3, 2), generator=g, dtype=torch.float64)
        io[f"tiny_features_{n}"] = feats
        io[f"tiny_out_{n}"] = tups.unet.phi(n, feats, io["tiny_temb"], (6, 4))

    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"))
    meta = dict(
        generator="tools/oracle/feature_upsampler.py",
        versions=dict(python=sys.version.split()[0], torch=torch.__version__, diffusers=diffusers.__version__,
                      safetensors=safetensors.__version__),
        unet="fixtures/unet_hooks/unet (tools/oracle/unet_hooks.py)",
        channels=channels, time_embed_dim=d, groups=groups, eps=EPS,
        weights_dtype="float16 (values used as stored)", seeds=dict(weights=SEED_WEIGHTS, tiny=SEED_TINY, io=SEED_IO),
        params=sum(p.numel() for p in ck.parameters()),
        pivot_sizes=pivot_sizes, sizes=sizes, sample=list(SAMPLE), timesteps=TIMESTEPS,
        tiny=dict(TINY, features_hw=[3, 2], size=[6, 4], params=sum(p.numel() for p in tiny.parameters())),
        reference_precision="float64, stored as float32",
        f32_torch_rel_l2=f32,
        sensitivity_rel_l2=sensitivity,
        stats={k: stats(v) for k, v in io.items() if k.startswith("out")},
    )
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(json.dumps(dict(f32=f32, sensitivity=sensitivity), indent=2))
    for name in sorted(os.listdir(OUT)):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()

"""Reference values for Algorithm 1's training step (crates/selfcascade-sd/tests/train_oracle.rs).

The tiny UNet of tools/oracle/unet_hooks.py (fixtures/unet_hooks/unet), frozen, with the ResBlock feature
upsamplers of tools/oracle/feature_upsampler.py (fixtures/feature_upsampler/resblock_upsampler.pth) as the
only trainable parameters. For a fixed batch (clean latents z0 [2, 4, 16, 16], pivots [2, 4, 8, 8], text
[2, 5, 32], timesteps, noise) and the scheduler of fixtures/models/sd21 (scaled-linear betas, v-prediction):

    z_t  = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps
    pred = UNet(z_t, t, text) with phi_n(pivot features) added after down blocks 0..2 and the mid block
    loss = mean((pred - target)^2),   target = sqrt(abar_t) eps - sqrt(1 - abar_t) z0   (v-prediction)
                                      target = eps                                      (epsilon, loss only)

then torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01) for 3 steps on that batch.

Writes crates/selfcascade-sd/tests/fixtures/train_step/io.safetensors (float32):
  z0, pivot, noise, encoder_hidden_states, timesteps
  loss_v [3]         the loss before each of the 3 steps
  loss_eps [1]       the epsilon-prediction loss of the first batch
  grad.<name>        d loss_v / d parameter at the start, every upsampler parameter, PyTorch names and layout
  after.<name>       every upsampler parameter after the 3 AdamW steps
and meta.json. Computed in float64 from the stored (float16-rounded) weights.

Usage: HF_HUB_OFFLINE=1 /root/oracle-venv/bin/python tools/oracle/train_step.py
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

import diffusers  # noqa: E402
import torch  # noqa: E402
from diffusers import DDPMScheduler, UNet2DConditionModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from feature_upsampler import Checkpoint  # noqa: E402
from unet_hooks import forward_with_pivot  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "crates", "selfcascade-sd", "tests", "fixtures")
OUT = os.path.join(FIXTURES, "train_step")
CHANNELS, TIME_EMBED_DIM, GROUPS = (16, 24, 32, 32), 64, 8
TIMESTEPS = [737, 18]
STEPS = 3
SEED = 6161


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(FIXTURES, "unet_hooks", "unet"))
    unet = unet.to(torch.float64).eval().requires_grad_(False)
    ck = Checkpoint(CHANNELS, TIME_EMBED_DIM, GROUPS)
    sd = torch.load(os.path.join(FIXTURES, "feature_upsampler", "resblock_upsampler.pth"), weights_only=True)
    ck.load_state_dict({k: v.float() for k, v in sd["state_dict"].items()})
    ck = ck.double().train()  # dropout is 0: train() and eval() agree

    sched = DDPMScheduler.from_pretrained(os.path.join(FIXTURES, "models", "sd21", "scheduler"))
    abar = sched.alphas_cumprod.to(torch.float64)  # float32 values, as diffusers computes them

    g = torch.Generator().manual_seed(SEED)
    z0 = torch.randn((2, 4, 16, 16), generator=g, dtype=torch.float64)
    pivot = torch.randn((2, 4, 8, 8), generator=g, dtype=torch.float64)
    noise = torch.randn((2, 4, 16, 16), generator=g, dtype=torch.float64)
    ehs = torch.randn((2, 5, unet.config.cross_attention_dim), generator=g, dtype=torch.float64)
    t = torch.tensor(TIMESTEPS)
    a = abar[t].view(-1, 1, 1, 1)
    zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
    targets = {"v": a.sqrt() * noise - (1 - a).sqrt() * z0, "eps": noise}

    def loss(target):
        phi = lambda n, f, e, s: ck.unet.phi(n, f, e, s)  # noqa: E731
        pred = forward_with_pivot(unet, zt, t.to(torch.float64), ehs, pivot, phi=phi)
        return ((pred - target) ** 2).mean()

    io = dict(z0=z0, pivot=pivot, noise=noise, encoder_hidden_states=ehs, timesteps=t.to(torch.float64))
    with torch.no_grad():
        io["loss_eps"] = loss(targets["eps"]).reshape(1)
    opt = torch.optim.AdamW(ck.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    losses = []
    for step in range(STEPS):
        opt.zero_grad()
        value = loss(targets["v"])
        value.backward()
        losses.append(value.detach())
        if step == 0:
            for name, p in ck.named_parameters():
                io[f"grad.{name}"] = p.grad.detach().clone()
        opt.step()
    io["loss_v"] = torch.stack(losses)
    for name, p in ck.named_parameters():
        io[f"after.{name}"] = p.detach().clone()

    save_file({k: v.float().contiguous() for k, v in io.items()}, os.path.join(OUT, "io.safetensors"))
    meta = dict(
        generator="tools/oracle/train_step.py",
        versions=dict(python=sys.version.split()[0], torch=torch.__version__, diffusers=diffusers.__version__),
        timesteps=TIMESTEPS, steps=STEPS, lr=1e-3, weight_decay=0.01, adam_eps=1e-8,
        loss_v=[float(x) for x in losses], loss_eps=float(io["loss_eps"]),
        grad_norm=float(torch.sqrt(sum((io[k] ** 2).sum() for k in io if k.startswith("grad.")))),
    )
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()

"""Oracle for selfcascade-core: diffusers schedulers and PyTorch interpolation.

Writes crates/selfcascade-core/tests/fixtures/{schedulers,interpolate}.json. The Rust tests read
them; CI needs no Python. Run (see tools/oracle/README.md for the environment):

    python tools/oracle/schedulers.py
"""
import json
import os
import types

import diffusers
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler, StableDiffusionImg2ImgPipeline

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "crates", "selfcascade-core", "tests", "fixtures")
SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)

CASES = [
    # name, class, config, steps, eta
    ("ddim_sd_leading", DDIMScheduler, dict(SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1), 50, 0.0),
    ("ddim_trailing_v_zsnr", DDIMScheduler, dict(SD, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing",
                                                  prediction_type="v_prediction", rescale_betas_zero_snr=True), 25, 0.0),
    ("ddim_linspace_sample_clip_eta", DDIMScheduler, dict(beta_schedule="linear", clip_sample=True, clip_sample_range=1.5,
                                                          timestep_spacing="linspace", prediction_type="sample"), 30, 0.5),
    ("ddim_cosine_eta1", DDIMScheduler, dict(beta_schedule="squaredcos_cap_v2", clip_sample=False, set_alpha_to_one=True), 10, 1.0),
    ("ddpm_default", DDPMScheduler, dict(), 20, 0.0),
    ("ddpm_v_large_trailing", DDPMScheduler, dict(SD, variance_type="fixed_large", prediction_type="v_prediction",
                                                   timestep_spacing="trailing", clip_sample=False), 15, 0.0),
    ("ddpm_small_log", DDPMScheduler, dict(SD, variance_type="fixed_small_log", clip_sample=True, steps_offset=1), 12, 0.0),
    ("euler_sdxl", EulerDiscreteScheduler, dict(SD, timestep_spacing="leading", steps_offset=1, interpolation_type="linear",
                                                use_karras_sigmas=False), 30, 0.0),
    ("euler_linspace_v", EulerDiscreteScheduler, dict(SD, prediction_type="v_prediction"), 20, 0.0),
    ("euler_trailing_sigma_min", EulerDiscreteScheduler, dict(SD, timestep_spacing="trailing", final_sigmas_type="sigma_min"), 12, 0.0),
]

SHAPE = (1, 2, 3, 3)


def flat(t):
    return [float(v) for v in t.detach().to(torch.float32).reshape(-1).tolist()]


def model_fn(x, t, bias):
    """A deterministic stand-in for a UNet, mirrored in the Rust test."""
    return torch.tanh(x) * 0.5 + bias * (float(t) / 1000.0)


def run_case(name, cls, cfg, steps, eta):
    sched = cls(**cfg)
    full_cfg = dict(sched.config)
    full_cfg["_class_name"] = cls.__name__
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(1234)
    x0 = torch.randn(SHAPE, generator=g)
    bias = torch.randn(SHAPE, generator=g)
    init = torch.randn(SHAPE, generator=g)
    sample = init * sched.init_noise_sigma
    traj = []
    step_gen = torch.Generator().manual_seed(99)
    for i, t in enumerate(sched.timesteps):
        scaled = sched.scale_model_input(sample, t)
        out = model_fn(scaled, t, bias)
        state = step_gen.get_state()
        noise = torch.randn(SHAPE, generator=torch.Generator().set_state(state))
        if cls is DDIMScheduler:
            kwargs = dict(eta=eta, variance_noise=noise if eta > 0 else None)
        else:
            kwargs = dict(generator=step_gen)
        prev = sched.step(out, t, sample, **kwargs).prev_sample
        traj.append(dict(index=i, timestep=float(t), model_input=flat(scaled), model_output=flat(out),
                         noise=flat(noise), prev_sample=flat(prev)))
        sample = prev
    # add_noise at a few step indices
    adds = []
    fresh = cls(**cfg)
    fresh.set_timesteps(steps)
    for idx in [0, steps // 3, steps - 1]:
        t = fresh.timesteps[idx:idx + 1]
        if cls is EulerDiscreteScheduler:
            fresh._begin_index = idx
        adds.append(dict(index=idx, noisy=flat(fresh.add_noise(x0, init, t))))
    # img2img truncation exactly as the pipeline computes it
    starts = {}
    for strength in [0.7, 0.3, 1.0, 0.05]:
        s2 = cls(**cfg)
        s2.set_timesteps(steps)
        ns = types.SimpleNamespace(scheduler=s2)
        kept, _ = StableDiffusionImg2ImgPipeline.get_timesteps(ns, steps, strength, "cpu")
        starts[str(strength)] = dict(start=steps - len(kept), first=float(kept[0]) if len(kept) else None)
    rec = dict(
        name=name, config=json.loads(json.dumps(full_cfg, default=str)), steps=steps, eta=eta,
        alphas_cumprod=flat(sched.alphas_cumprod), timesteps=[float(t) for t in sched.timesteps],
        init_noise_sigma=float(sched.init_noise_sigma), x0=flat(x0), bias=flat(bias), init=flat(init),
        trajectory=traj, add_noise=adds, strength=starts,
    )
    if cls is EulerDiscreteScheduler:
        rec["sigmas"] = flat(sched.sigmas)
    return rec


def interpolation_cases():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 5, 7, generator=g)
    lat = torch.randn(1, 4, 8, 8, generator=g)
    out = []
    for src_name, src in [("x", x), ("latent", lat)]:
        sizes = [(10, 14), (8, 11), (16, 9)] if src_name == "x" else [(16, 16), (12, 20)]
        for mode in ["nearest", "bilinear", "bicubic"]:
            for (h, w) in sizes:
                kw = {} if mode == "nearest" else dict(align_corners=False)
                y = F.interpolate(src, size=(h, w), mode=mode, **kw)
                out.append(dict(mode=mode, input_shape=list(src.shape), input=flat(src), size=[h, w], output=flat(y)))
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    cases = [run_case(*c) for c in CASES]
    meta = dict(torch=torch.__version__, diffusers=diffusers.__version__)
    with open(os.path.join(OUT, "schedulers.json"), "w") as f:
        json.dump(dict(meta=meta, shape=list(SHAPE), cases=cases), f)
    with open(os.path.join(OUT, "interpolate.json"), "w") as f:
        json.dump(dict(meta=meta, cases=interpolation_cases()), f)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
